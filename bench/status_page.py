"""Status page benchmark (not a test): ``GET /`` and ``GET /api/v1/status`` at 1,000 apps.

A snapshot of 1,000 apps by 3 environments (every state, pull requests, holds, errors) and
5 recent changes per app is served by the daemon's own HTTP server (:class:`HttpServer`,
uvicorn with its limits) on loopback. The daemon renders from the snapshot and never asks
git or the registry per request, so this measures exactly what a request costs: rendering
(the page) or sending the encoded document (the API), over HTTP. It also times building the
snapshot from the rows (masking and JSON encoding), which happens once per cycle.

Prints p50/p95/max per route and PASS/FAIL against the target (p95 < 300 ms). Run from the
repo root::

    python -m bench.status_page --apps 1000 --requests 50
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import httpx

from image_updater.config.holds import Hold
from image_updater.config.settings import Settings
from image_updater.config.status_page import StatusPageSettings
from image_updater.daemon.server import HttpServer
from image_updater.daemon.status_page import Computed, StatusBoard, status_routes
from image_updater.engine.status import EnvStatus
from image_updater.gitops.history import HistoryEntry
from image_updater.secrets import SecretRegistry

TARGET_P95 = 0.300  # seconds per request, at 1,000 apps
ENVS = ("dev", "staging", "prod")
STATES = ("in-sync", "pending", "awaiting-approval", "held", "rolled-back", "drifted",
          "waiting", "failing")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``share`` of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def digest(i: int) -> str:
    return f"sha256:{i:064x}"


def rows_and_history(apps: int, changes: int) -> Computed:
    """Synthetic status rows in every state, and ``changes`` history entries per app."""
    rows: list[EnvStatus] = []
    history: dict[str, list[HistoryEntry]] = {}
    for a in range(apps):
        app = f"app-{a:05d}"
        for e, env in enumerate(ENVS):
            state = STATES[(a + e) % len(STATES)]
            rows.append(EnvStatus(
                app=app, env=env, state=state,  # type: ignore[arg-type]
                git_digest=digest(a * 10 + e), git_tag=f"1.{a}.{e}", commit=f"{a:040x}",
                since="2026-11-29T12:00:00+00:00", by="image-updater <bot@example.com>",
                how="update (poll)", wanted_digest=digest(a * 10 + e + 1),
                wanted_tag=f"1.{a}.{e + 1}",
                pull_request=(f"https://github.example/org/deploys/pull/{a}"
                              if state == "awaiting-approval" else None),
                hold=(Hold(app=app, env=env, kind="hold", by="alice@example.com",
                           reason="incident review", since="2026-11-29T13:00:00Z")
                      if state in ("held", "rolled-back") else None),
                error=("the registry answered 503 for " + app) if state == "failing" else None))
        history[app] = [HistoryEntry(
            commit=f"{a * 100 + c:040x}", when="2026-11-29T12:00:00+00:00", app=app,
            env=ENVS[c % 3], action="update", by="image-updater <bot@example.com>",
            source="poll", old_digest=digest(c), new_digest=digest(c + 1),
            new_tag=f"1.{a}.{c}", subject=f"image-updater: {app} {ENVS[c % 3]} to 1.{a}.{c}")
            for c in range(changes)]
    return rows, history


class Served:
    """The board's routes on the daemon's HTTP server, on a loop in a thread."""

    def __init__(self, board: StatusBoard) -> None:
        from starlette.applications import Starlette

        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(Starlette(routes=status_routes(board)),
                                 Settings(listen="127.0.0.1:0"))
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-http",
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        self._run(self.server.start())
        return f"http://{self.server.address}"

    def __exit__(self, *exc: object) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _run(self, coro: object) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        future.result(30)


def measure(client: httpx.Client, url: str, count: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        answer = client.get(url)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
        size = len(answer.content)
    return times, size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=5, help="history entries per app")
    parser.add_argument("--requests", type=int, default=50, help="per route")
    args = parser.parse_args(argv)

    computed = rows_and_history(args.apps, args.changes)

    async def compute() -> Computed:
        return computed

    board = StatusBoard(compute=compute, settings=StatusPageSettings(history=args.changes),
                        secrets=SecretRegistry())
    started = time.perf_counter()
    asyncio.run(board.refresh())
    build = time.perf_counter() - started
    print(f"{args.apps} apps by {len(ENVS)} environments, {args.changes} changes per app; "
          f"snapshot built (once per cycle) in {build * 1000:.0f} ms")

    ok = True
    with Served(board) as base, httpx.Client(timeout=30) as client:
        measure(client, base + "/", 2)  # warm-up
        print(f"{'route':<16} {'bytes':>9} {'p50':>8} {'p95':>8} {'max':>8}  result")
        for route in ("/", "/api/v1/status"):
            times, size = measure(client, base + route, args.requests)
            p95 = percentile(times, 0.95)
            passed = p95 < TARGET_P95
            ok = ok and passed
            print(f"{route:<16} {size:>9} {percentile(times, 0.5) * 1000:>6.0f}ms "
                  f"{p95 * 1000:>6.0f}ms {max(times) * 1000:>6.0f}ms  "
                  f"{'PASS' if passed else 'FAIL'} (target p95 < {TARGET_P95 * 1000:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
