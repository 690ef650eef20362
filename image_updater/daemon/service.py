"""The long-running daemon: a few named tasks under one orchestrator.

- ``scheduler``: APScheduler fires a full cycle every ``interval`` (+ jitter), a heartbeat
  for liveness, and a policy reload check (ConfigMap updates, no restart needed);
- ``worker``: runs cycles one at a time; requests that arrive while a cycle runs are
  coalesced into the next one (a webhook for app A during a full cycle costs one more
  cycle for A only);
- ``server``: the HTTP endpoints (metrics, health, webhooks) in a thread.

SIGTERM/SIGINT stop the scheduler, let a running cycle finish for up to ``grace`` seconds
(a push is atomic: it either lands or not), then cancel it, and exit 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from image_updater.config.model import App
from image_updater.config.policies import load_policies
from image_updater.config.settings import Settings
from image_updater.daemon.runtime import Runtime
from image_updater.engine.reconcile import reconcile
from image_updater.engine.result import CycleResult
from image_updater.errors import PolicyError

log = logging.getLogger("image_updater.daemon")

GIT_REASONS = frozenset({"git", "git_auth", "push_rejected", "git_unavailable"})


class Daemon:
    def __init__(self, *, settings: Settings, policy_paths: Sequence[str], runtime: Runtime,
                 apps: Sequence[App], clock: Callable[[], float] = time.time,
                 grace: float = 30.0) -> None:
        self.settings = settings
        self.policy_paths = list(policy_paths)
        self.runtime = runtime
        self.apps = list(apps)
        self.clock = clock
        self.grace = grace
        self.last_tick = clock()
        self.repo_reached = False
        self.cycles = 0
        self._pending: set[str] | None = None     # None: nothing; empty set never stored
        self._full = False
        self._wake = asyncio.Event()
        self._policy_hash = _hash_policies(self.policy_paths)
        self.last_result: CycleResult | None = None

    # -- requests -------------------------------------------------------------------------
    def request_full(self) -> None:
        self._full = True
        self._wake.set()

    def request_apps(self, names: set[str]) -> None:
        """Reconcile only these apps soon (webhooks); coalesced with pending requests."""
        known = {a.name for a in self.apps}
        names = names & known
        if not names:
            return
        self._pending = (self._pending or set()) | names
        self._wake.set()

    def apps_for_image(self, registry: str, repository: str) -> set[str]:
        from image_updater.registry.reference import parse_reference

        out = set()
        for app in self.apps:
            ref = parse_reference(app.image)
            if ref.repository == repository and (not registry or ref.registry == registry):
                out.add(app.name)
        return out

    # -- health ---------------------------------------------------------------------------
    def healthy(self) -> bool:
        return self.clock() - self.last_tick < max(60.0, 3 * 5.0)

    def ready(self) -> bool:
        return bool(self.apps) and self.repo_reached

    # -- tasks ----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        self.last_tick = self.clock()

    def reload_policies(self) -> None:
        digest = _hash_policies(self.policy_paths)
        if digest == self._policy_hash:
            return
        self._policy_hash = digest
        try:
            apps = load_policies(self.policy_paths)
        except PolicyError as exc:
            log.error("policy change rejected, keeping the previous %d app(s):\n%s",
                      len(self.apps), exc)
            return
        log.info("policies reloaded: %d app(s)", len(apps))
        self.apps = apps
        self.runtime.metrics.images_watched.set(sum(len(a.environments) for a in apps))
        self.request_full()

    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if self._full:
                apps, self._full, self._pending = self.apps, False, None
            elif self._pending:
                names, self._pending = self._pending, None
                apps = [a for a in self.apps if a.name in names]
            else:
                continue
            await self.cycle(apps)

    async def cycle(self, apps: Sequence[App]) -> CycleResult:
        metrics = self.runtime.metrics
        started = time.monotonic()
        result = await reconcile(apps, self.runtime.deps())
        metrics.cycle_duration.observe(time.monotonic() - started)
        self.cycles += 1
        self.last_result = result
        git_failed = {(f.app, f.env) for f in result.failures if f.reason in GIT_REASONS}
        if any((a.name, e.name) not in git_failed for a in apps for e in a.environments):
            self.repo_reached = True
        if not git_failed:
            metrics.last_success.set(self.clock())
        metrics.pull_requests_open.set(len(result.pull_requests))
        log.info("cycle done in %.2f s: %d update(s), %d failure(s), %d up to date; next full "
                 "cycle within %d s", time.monotonic() - started, len(result.changes),
                 len(result.failures), len(result.unchanged),
                 int(self.settings.interval + self.settings.jitter))
        return result

    async def run(self, stop: asyncio.Event) -> None:
        self.runtime.metrics.images_watched.set(sum(len(a.environments) for a in self.apps))
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        scheduler.add_job(self.request_full, IntervalTrigger(
            seconds=self.settings.interval, jitter=self.settings.jitter), id="cycle",
            max_instances=1, coalesce=True)
        scheduler.add_job(self.heartbeat, IntervalTrigger(seconds=5), id="heartbeat")
        scheduler.add_job(self.reload_policies, IntervalTrigger(seconds=10), id="reload")
        scheduler.start()
        self.request_full()  # first cycle now, not after one interval
        worker = asyncio.create_task(self.worker(stop), name="worker")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        scheduler.shutdown(wait=False)
        if worker in done and worker.exception() is not None:
            log.error("the worker task exited unexpectedly: %r; stopping", worker.exception())
        await self._stop_worker(worker)
        stopper.cancel()

    async def _stop_worker(self, worker: asyncio.Task[None]) -> None:
        if worker.done():
            return
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(worker), timeout=self.grace)
        except TimeoutError:
            log.warning("the running cycle did not finish within %.0f s; abandoning it", self.grace)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


def _hash_policies(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for raw in paths:
        p = Path(raw)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.suffix in (".yaml", ".yml") and f.is_file():
                h.update(str(f).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def run_daemon(settings: Settings, policy_paths: Sequence[str]) -> int:
    """``image-updater run``: serve until SIGTERM/SIGINT."""
    apps = load_policies(policy_paths)
    return asyncio.run(_main(settings, policy_paths, apps))


async def _main(settings: Settings, policy_paths: Sequence[str], apps: Sequence[App]) -> int:
    from image_updater.daemon.server import HttpServer

    runtime = Runtime(settings)
    daemon = Daemon(settings=settings, policy_paths=policy_paths, runtime=runtime, apps=apps)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = HttpServer(settings=settings, daemon=daemon, loop=loop)
    server.start()
    log.info("serving on %s; %d app(s), interval %d s", server.address, len(apps),
             int(settings.interval))
    try:
        await daemon.run(stop)
    finally:
        server.stop()
        await runtime.aclose()
    log.info("stopped")
    return 0
