"""History over a deploy repository with many image-updater commits.

``python -m bench.history [--commits 10000] [--runs 3]``: generates the repository with
``git fast-import`` (see tests/fixtures/history_repo.py), then reads the whole history of
the app with :func:`image_updater.gitops.history.read_history` (one streamed ``git log``)
and checks it is complete and ordered. Target: ≤ 2 s for 10,000 commits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from image_updater.config.policies import load_text  # noqa: E402
from image_updater.gitops.history import read_history  # noqa: E402
from tests.fixtures import history_repo  # noqa: E402

TARGET_SECONDS = 2.0
POLICY = """\
app: application-x
image: registry.example.com/team/application-x
git: {url: "file:///unused", branch: master}
defaults: {write: {digest: image.digest}}
environments:
  dev: {file: application-x/values-dev.yaml}
  staging: {file: application-x/values-staging.yaml}
  prod: {file: application-x/values-prod.yaml, approval: pull-request}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    (app,), problems = load_text(POLICY, "bench.yaml")
    assert not problems, problems
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        started = time.perf_counter()
        repo = history_repo.make_history_repo(Path(tmp) / "deploy.git", args.commits)
        print(f"generated {args.commits} commits with git fast-import in "
              f"{time.perf_counter() - started:.2f} s")
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            entries = read_history(repo, "master", app)
            times.append(time.perf_counter() - started)
        complete = len(entries) == args.commits + 3 and all(
            e.new_digest == history_repo.digest_of(args.commits - k)
            for k, e in enumerate(entries[:args.commits]))
    best, worst = min(times), max(times)
    ok = complete and worst <= TARGET_SECONDS
    print(f"read {len(entries)} entries ({args.commits} updates + 3 initial): "
          f"best {best:.2f} s, worst {worst:.2f} s over {args.runs} runs; complete: {complete}; "
          f"target ≤ {TARGET_SECONDS:.0f} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
