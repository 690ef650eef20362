"""Promotion API benchmark (not a test): ``POST /api/v1/promotions`` → done, on loopback.

A real distribution registry, a bare deploy repository and the daemon in this process (the
same ``serve()`` the CLI runs, poll interval one hour). For each of N rounds a new image is
pushed to ``:staging`` and git is told staging runs it (a commit, as the daemon's own cycle
would make); then a client promotes it to prod with a static API token and it measures:

- ``api``: request sent → 200 (git fetched and read, digest verified, prod tag moved by
  compare-and-swap, including its 0.3 s read-back);
- ``landed``: request sent → prod's values file in git holds the digest (the cycle the
  promotion requested, with the evidence trailers).

Prints p50/p95/max and PASS/FAIL against the target (``api`` p95 ≤ 1 s). Run from the repo
root::

    python -m bench.promotion_api --requests 20
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench import _common as common
from bench.webhook_latency import percentile
from image_updater.config.api import load_api
from tests.fixtures.daemon import InProcessDaemon, daemon_settings
from tests.fixtures.gitrepo import make_bare_repo, push_other_commit
from tests.fixtures.registry import RegistryServer, push_image

TARGET_P95 = 1.0  # seconds, request → 200
TOKEN = "bench-promotion-token-0123456789"
REPOSITORY = "bench/promotions"
STAGING, PROD = "app/values-staging.yaml", "app/values-prod.yaml"


def _values(env: str, digest: str) -> str:
    return f'image:\n  tag: "{env}"\n  digest: "{digest}"\n'


def _setup(reg: RegistryServer, workdir: Path) -> tuple[Path, Path, str]:
    first = push_image(reg.url, REPOSITORY, "staging", seed="bench-0")
    prod = push_image(reg.url, REPOSITORY, "prod", seed="bench-prod")
    deploy = make_bare_repo(workdir / "remotes", files={
        STAGING: _values("staging", first), PROD: _values("prod", prod)}).path
    policies = workdir / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(
        f"app: app\nimage: {reg.host}/{REPOSITORY}\ngit: {{url: {deploy}, branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\nenvironments:\n"
        f"  staging: {{file: {STAGING}, tag: staging}}\n  prod: {{file: {PROD}, tag: prod}}\n")
    (workdir / "token").write_text(TOKEN, encoding="utf-8")
    return deploy, policies, first


def _landed(deploy: Path, digest: str, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if digest in common.head_file(deploy, PROD):
            return time.monotonic()
        time.sleep(0.005)
    raise SystemExit(f"{digest} did not reach {PROD} within {timeout:.0f} s; the promotion "
                     "path is broken (run tests/integration/test_promotion_api.py)")


def measure(requests: int, workdir: Path) -> tuple[list[float], list[float]]:
    api: list[float] = []
    landed: list[float] = []
    with RegistryServer() as reg:
        deploy, policies, digest = _setup(reg, workdir)
        settings = dataclasses.replace(
            daemon_settings(workdir, reg.host),
            api=load_api({"tokens": [{"name": "bench", "file": str(workdir / "token"),
                                      "apps": ["*"], "envs": ["prod"]}]}, "bench"))
        with InProcessDaemon(settings, [policies]) as running, httpx.Client(timeout=30) as http:
            running.wait_cycles(1)
            for i in range(requests):
                if i:  # a new image runs in staging now
                    digest = push_image(reg.url, REPOSITORY, "staging", seed=f"bench-{i}")
                    push_other_commit(str(deploy), workdir, {STAGING: _values("staging", digest)})
                sent = time.monotonic()
                r = http.post(f"{running.url}/api/v1/promotions",
                              json={"app": "app", "from": "staging", "to": "prod",
                                    "digest": digest, "evidence": {"round": str(i)}},
                              headers={"Authorization": f"Bearer {TOKEN}"})
                answered = time.monotonic()
                if r.status_code != 200:
                    raise SystemExit(f"round {i}: {r.status_code} {r.text}")
                api.append(answered - sent)
                landed.append(_landed(deploy, digest) - sent)
                running.wait_cycles(running.daemon.cycles)  # idle before the next round
    return api, landed


def report(api: Sequence[float], landed: Sequence[float]) -> bool:
    def row(name: str, values: Sequence[float]) -> list[str]:
        return [name, str(len(values)), f"{percentile(values, 0.5) * 1000:.0f}",
                f"{percentile(values, 0.95) * 1000:.0f}", f"{max(values) * 1000:.0f}"]

    print("promotion API, times from the request (ms):")
    print(common.table([["stage", "n", "p50", "p95", "max"], row("api", api),
                        row("landed", landed)]))
    p95 = percentile(api, 0.95)
    ok = p95 <= TARGET_P95
    print(f"{'PASS' if ok else 'FAIL'}: p95 request → 200 {p95 * 1000:.0f} ms "
          f"(target ≤ {TARGET_P95 * 1000:.0f} ms)")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20, help="promotions (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = common.workdir(args.keep)
    try:
        api, landed = measure(args.requests, workdir)
    finally:
        common.remove(workdir, args.keep)
    return 0 if report(api, landed) else 1


if __name__ == "__main__":
    sys.exit(main())
