"""Webhook latency benchmark (not a test): registry push → commit pushed to the deploy repo.

A real distribution registry on loopback notifies the daemon (``/webhooks/registry``); the
daemon (in this process, the same ``serve()`` the CLI runs, poll interval one hour) reconciles
the app and pushes to a bare deploy repository. For each of N pushes it measures, from the
moment the image push returned:

- ``notify``: until the webhook reached the daemon (negative: the registry notified before
  its PUT response reached the pusher);
- ``commit``: until the deploy branch moved to a commit holding the new digest.

Prints p50/p95/max and PASS/FAIL against the target (p95 ≤ 1 s). Run from the repo root::

    python -m bench.webhook_latency --pushes 20
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import _common as common
from image_updater.daemon.service import Daemon
from tests.fixtures.daemon import DEV, InProcessDaemon, daemon_settings, write_policy
from tests.fixtures.gitrepo import BRANCH, make_bare_repo
from tests.fixtures.registry import RegistryServer, free_port, push_image

TARGET_P95 = 1.0  # seconds, push returned → commit on the deploy branch
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
SECRET = "bench-webhook-secret"
REPOSITORY = "bench/latency"


class TimedDaemon(Daemon):
    """Notes when each webhook reached the daemon's loop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []

    def request_apps(self, names: set[str]) -> None:
        self.arrivals.append(time.monotonic())
        super().request_apps(names)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``share`` of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def branch_head(deploy: Path) -> str:
    # the loose ref file: cheap to poll, replaced atomically by receive-pack
    ref = deploy / "refs" / "heads" / BRANCH
    return ref.read_text().strip() if ref.exists() else ""


def wait_for_new_head(deploy: Path, old: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if branch_head(deploy) != old:
            return time.monotonic()
        time.sleep(0.002)
    raise SystemExit(f"no commit reached {deploy} within {timeout:.0f} s; the webhook path is "
                     "broken (run the tests in tests/integration/test_webhooks_registry.py)")


def measure(pushes: int, settle: float, workdir: Path) -> tuple[list[float], list[float]]:
    port = free_port()
    endpoint = {"name": "image-updater", "url": f"http://127.0.0.1:{port}/webhooks/registry",
                "headers": {"Authorization": [f"Bearer {SECRET}"]},
                "timeout": "1s", "threshold": 5, "backoff": "1s"}
    deploy = make_bare_repo(workdir).path
    notify: list[float] = []
    commit: list[float] = []
    with RegistryServer(extra_config={"notifications": {"endpoints": [endpoint]}}) as reg:
        policies = workdir / "policies"
        write_policy(policies, "latency", f"{reg.host}/{REPOSITORY}", f"file://{deploy}")
        settings = dataclasses.replace(
            daemon_settings(workdir, reg.host, secret_env=SECRET_ENV), listen=f"127.0.0.1:{port}")
        with InProcessDaemon(settings, [policies], daemon_cls=TimedDaemon,
                             settle=settle) as running:
            daemon = running.daemon
            assert isinstance(daemon, TimedDaemon)
            running.wait_cycles(1)  # start-up cycle (the tag does not exist yet)
            for i in range(pushes):
                old, seen = branch_head(deploy), len(daemon.arrivals)
                digest = push_image(reg.url, REPOSITORY, "dev", seed=f"bench-{i}")
                pushed = time.monotonic()
                committed = wait_for_new_head(deploy, old, timeout=30)
                if f"digest: {digest}" not in common.head_file(deploy, DEV):
                    raise SystemExit(f"push {i}: the new commit does not hold {digest}")
                commit.append(committed - pushed)
                if len(daemon.arrivals) > seen:
                    notify.append(daemon.arrivals[seen] - pushed)
                running.wait_cycles(daemon.cycles)  # idle before the next push
    return notify, commit


def report(notify: Sequence[float], commit: Sequence[float], settle: float) -> bool:
    def row(name: str, values: Sequence[float]) -> list[str]:
        return [name, str(len(values)), f"{percentile(values, 0.5) * 1000:.0f}",
                f"{percentile(values, 0.95) * 1000:.0f}", f"{max(values) * 1000:.0f}"]

    print(f"webhook latency, settle {settle * 1000:.0f} ms, times from the push's return (ms):")
    print(common.table([["stage", "n", "p50", "p95", "max"],
                        row("notify", notify), row("commit", commit)]))
    p95 = percentile(commit, 0.95)
    ok = p95 <= TARGET_P95
    print(f"{'PASS' if ok else 'FAIL'}: p95 push → commit {p95 * 1000:.0f} ms "
          f"(target ≤ {TARGET_P95 * 1000:.0f} ms)")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=20, help="pushes to time (default 20)")
    parser.add_argument("--settle", type=float, default=0.2,
                        help="the daemon's webhook settle delay in seconds (default 0.2)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    import os

    os.environ[SECRET_ENV] = SECRET  # the daemon reads the webhook secret from its environment
    workdir = common.workdir(args.keep)
    try:
        notify, commit = measure(args.pushes, args.settle, workdir)
    finally:
        common.remove(workdir, args.keep)
    return 0 if report(notify, commit, args.settle) else 1


if __name__ == "__main__":
    sys.exit(main())
