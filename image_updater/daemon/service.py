"""The long-running daemon: a few named tasks under one orchestrator.

- ``scheduler``: APScheduler fires a full cycle every ``interval`` (+ jitter), a heartbeat
  for liveness, and a policy reload check (ConfigMap updates, no restart needed);
- ``worker``: runs cycles one at a time; requests that arrive while a cycle runs are
  coalesced into the next one (a webhook for app A during a full cycle costs one more
  cycle for A only);

A webhook's cycle starts ``settle`` seconds after it arrives, and when that cycle changes
nothing for an app, the app is checked once more ``recheck_after`` seconds later: registries
notify before a push is fully visible (distribution sends the manifest event before it moves
the tag), so the first look can still see the old digest or no tag at all.
- ``server``: the HTTP endpoints (metrics, health, webhooks) in a thread.

SIGTERM/SIGINT stop the scheduler, let a running cycle finish for up to ``grace`` seconds
(a push is atomic: it either lands or not), then cancel it, and exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from image_updater.changes import CycleResult
from image_updater.config.policies import load_policies
from image_updater.config.settings import Settings
from image_updater.engine.reconcile import Deps, reconcile
from image_updater.errors import ConfigError
from image_updater.gitops.repo import DeployRepo
from image_updater.model import App, GitTarget
from image_updater.registry.reference import normalize_host, parse_reference
from image_updater.wiring.runtime import Runtime

if TYPE_CHECKING:
    from image_updater.daemon.server import HttpServer

log = logging.getLogger("image_updater.daemon")

GIT_REASONS = frozenset({"git", "git_auth", "push_rejected", "git_unavailable"})
#: a stalled scheduler is reported by /healthz after this many missed heartbeats
MISSED_HEARTBEATS = 3


class Daemon:
    """The orchestrator. ``clock`` is Unix time (health, last-success metric).

    ``grace`` (s): how long SIGTERM waits for a running cycle. ``heartbeat_every`` (s): the
    liveness tick; /healthz fails after ``MISSED_HEARTBEATS`` missed ticks (at least 60 s).
    ``reload_every`` (s): how often policy files are checked for changes.
    ``settle`` (s): delay between a webhook and its cycle, so a burst of events is one cycle.
    ``recheck_after`` (s): when a webhook's cycle changed nothing for an app, look once more.
    """

    def __init__(self, *, settings: Settings, policy_paths: Sequence[str], runtime: Runtime,
                 apps: Sequence[App], clock: Callable[[], float] = time.time,
                 grace: float = 30.0, heartbeat_every: float = 5.0,
                 reload_every: float = 10.0, settle: float = 0.2,
                 recheck_after: float = 1.0) -> None:
        self.settings = settings
        self.policy_paths = list(policy_paths)
        self.runtime = runtime
        self.apps = list(apps)
        self.clock = clock
        self.grace = grace
        self.heartbeat_every = heartbeat_every
        self.reload_every = reload_every
        self.settle = settle
        self.recheck_after = recheck_after
        self.last_tick = clock()
        self.repo_reached = False
        self.in_cycle = False
        self.cycles = 0
        self._pending: set[str] | None = None     # None: nothing; empty set never stored
        self._full = False
        self._recheck: set[str] = set()  # webhook apps to look at again if nothing changed
        self._wake = asyncio.Event()
        self._policy_hash = _hash_policies(self.policy_paths)
        self.last_result: CycleResult | None = None
        self._open_prs: dict[tuple[str, str], str] = {}

    # -- requests -------------------------------------------------------------------------
    def request_full(self) -> None:
        self._full = True
        self._wake.set()

    def request_apps(self, names: set[str]) -> None:
        """Reconcile only these apps soon (webhooks); coalesced with pending requests.

        Call on the daemon's loop. The cycle starts after ``settle`` seconds.
        """
        names = names & {a.name for a in self.apps}
        if names:
            asyncio.get_running_loop().call_later(self.settle, self._enqueue, names, True)

    def queued(self) -> tuple[bool, frozenset[str]]:
        """What the next cycle covers: (a full cycle was requested, apps requested alone)."""
        return self._full, frozenset(self._pending or ())

    def _enqueue(self, names: set[str], recheck: bool) -> None:
        self._pending = (self._pending or set()) | names
        if recheck:
            self._recheck |= names
        self._wake.set()

    def apps_for_image(self, registry: str, repository: str) -> set[str]:
        """Apps watching ``repository`` on ``registry`` ("" when the payload names no host)."""
        host = normalize_host(registry.lower()) if registry else ""
        out = set()
        for app in self.apps:
            ref = parse_reference(app.image)
            if ref.repository == repository and (not host or ref.registry.lower() == host):
                out.add(app.name)
        return out

    # -- health ---------------------------------------------------------------------------
    def healthy(self) -> bool:
        allowed = max(60.0, MISSED_HEARTBEATS * self.heartbeat_every)
        return self.clock() - self.last_tick < allowed

    def ready(self) -> bool:
        return bool(self.apps) and self.repo_reached

    # -- tasks ----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        self.last_tick = self.clock()

    def reload_policies(self) -> None:
        """Pick up edited policy files (a ConfigMap update) without a restart.

        A broken change is logged and skipped; the apps loaded before keep being served, and
        the same broken content is not reported again until the files change once more.
        """
        try:
            digest = _hash_policies(self.policy_paths)
        except OSError as exc:  # a ConfigMap swap can remove a file between listing and reading
            log.warning("cannot read the policy files (%s); will check again in %.0f s",
                        exc, self.reload_every)
            return
        if digest == self._policy_hash:
            return
        self._policy_hash = digest
        try:
            apps = load_policies(self.policy_paths,
                                 max_file_bytes=self.settings.limits.policy_file_bytes)
        except (ConfigError, OSError) as exc:
            log.error("policy change rejected, keeping the previous %d app(s) (%s); fix the "
                      "files and the change is picked up within %.0f s:\n%s", len(self.apps),
                      ", ".join(sorted(a.name for a in self.apps)), self.reload_every, exc)
            return
        before, after = {a.name for a in self.apps}, {a.name for a in apps}
        log.info("policies reloaded: %d app(s); added: %s; removed: %s; reconciling all now",
                 len(apps), ", ".join(sorted(after - before)) or "none",
                 ", ".join(sorted(before - after)) or "none")
        self.apps = apps
        self.runtime.metrics.images_watched.set(sum(len(a.environments) for a in apps))
        self.request_full()

    def _next_batch(self) -> list[App] | None:
        """The apps the next cycle covers; everything requested so far is merged into it."""
        if self._full:
            self._full, self._pending = False, None
            return list(self.apps)
        if self._pending:
            names, self._pending = self._pending, None
            return [a for a in self.apps if a.name in names]
        return None

    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            if stop.is_set():
                return  # a shutdown wakes us too; never start a cycle after it
            recheck, self._recheck = self._recheck, set()
            apps = self._next_batch()
            if apps:
                result = await self._guarded_cycle(apps)
                self._schedule_recheck(recheck, result)

    async def _guarded_cycle(self, apps: Sequence[App]) -> CycleResult | None:
        # reconcile records expected failures per app; anything escaping it is a bug, which
        # must not end the daemon: the next cycle (or webhook) tries again.
        try:
            return await self.cycle(apps)
        except Exception:
            log.exception("the reconcile cycle failed unexpectedly (a bug; please report it); "
                          "the next cycle runs within %d s",
                          int(self.settings.interval + self.settings.jitter))
            return None

    def _schedule_recheck(self, names: set[str], result: CycleResult | None) -> None:
        """One more look at webhook apps whose cycle changed nothing (see the module doc)."""
        changed = {c.app for c in result.changes} if result is not None else set()
        again = names - changed
        if again:
            log.debug("no change yet for app(s) %s after their webhook; checking again in "
                      "%.1f s", ", ".join(sorted(again)), self.recheck_after)
            asyncio.get_running_loop().call_later(self.recheck_after, self._enqueue, again,
                                                  False)

    async def cycle(self, apps: Sequence[App]) -> CycleResult:
        metrics = self.runtime.metrics
        started = time.monotonic()
        handed_out: set[GitTarget] = set()
        self.in_cycle = True
        try:
            result = await reconcile(apps, self._deps(handed_out))
        finally:
            self.in_cycle = False
        metrics.cycle_duration.observe(time.monotonic() - started)
        self.cycles += 1
        self.last_result = result
        git_failed = {(f.app, f.env) for f in result.failures if f.reason in GIT_REASONS}
        if _reached(apps, handed_out, git_failed):
            self.repo_reached = True
        if _succeeded(apps, result, git_failed):
            metrics.last_success.set(self.clock())
        self._track_pull_requests(apps, result)
        scope = "all apps" if len(apps) == len(self.apps) else \
            "app(s) " + ", ".join(sorted(a.name for a in apps))
        log.info("cycle for %s done in %.2f s: %d update(s), %d failure(s), %d up to date; "
                 "next full cycle within %d s", scope, time.monotonic() - started,
                 len(result.changes), len(result.failures), len(result.unchanged),
                 int(self.settings.interval + self.settings.jitter))
        return result

    def _track_pull_requests(self, apps: Sequence[App], result: CycleResult) -> None:
        """Open pull requests across cycles: a webhook cycle covers a few apps only, and an
        environment that failed this cycle keeps what the last look at it found."""
        failed = {(f.app, f.env) for f in result.failures}
        for app in apps:
            for env in app.environments:
                if (app.name, env.name) not in failed:
                    self._open_prs.pop((app.name, env.name), None)
        self._open_prs.update(result.pull_requests)
        known = {(a.name, e.name) for a in self.apps for e in a.environments}
        self._open_prs = {k: v for k, v in self._open_prs.items() if k in known}
        self.runtime.metrics.pull_requests_open.set(len(self._open_prs))

    def _deps(self, handed_out: set[GitTarget]) -> Deps:
        """The runtime's deps, noting which deploy repositories the cycle opened."""
        deps = self.runtime.deps()
        open_repo = deps.repo_for

        def repo_for(target: GitTarget) -> DeployRepo:
            repo = open_repo(target)
            handed_out.add(target)
            return repo

        return dataclasses.replace(deps, repo_for=repo_for)

    async def run(self, stop: asyncio.Event) -> bool:
        """Serve until ``stop`` is set; False when the worker died (the process exits 1)."""
        self.runtime.metrics.images_watched.set(sum(len(a.environments) for a in self.apps))
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        # Coroutine jobs run on this loop. Plain functions would run in the loop's default
        # thread pool, which git and boto3 calls keep busy during a cycle: the heartbeat
        # would stall behind them (failing /healthz), and asyncio.Event is not thread-safe.
        scheduler.add_job(_on_loop(self.request_full), IntervalTrigger(
            seconds=self.settings.interval, jitter=self.settings.jitter), id="cycle",
            max_instances=1, coalesce=True)
        scheduler.add_job(_on_loop(self.heartbeat), IntervalTrigger(
            seconds=self.heartbeat_every), id="heartbeat")
        scheduler.add_job(_on_loop(self.reload_policies), IntervalTrigger(
            seconds=self.reload_every), id="reload")
        scheduler.start()
        self.request_full()  # first cycle now, not after one interval
        worker = asyncio.create_task(self.worker(stop), name="worker")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        scheduler.shutdown(wait=False)
        crashed = worker in done and not worker.cancelled() and worker.exception() is not None
        if crashed:
            log.error("the worker task exited unexpectedly: %r; stopping so that the process "
                      "is restarted", worker.exception())
        await self._stop_worker(worker)
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)
        return not crashed

    async def _stop_worker(self, worker: asyncio.Task[None]) -> None:
        if worker.done():
            return
        if self.in_cycle:
            log.info("stopping: letting the running cycle finish (up to %.0f s)", self.grace)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(worker), timeout=self.grace)
        except TimeoutError:
            # A git push already under way still completes in its thread (it is atomic:
            # the branch holds the old or the new commit); only the rest of the cycle is lost.
            log.warning("the running cycle did not finish within %.0f s; abandoning it; the "
                        "next start reconciles from git again", self.grace)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


def _on_loop(job: Callable[[], None]) -> Callable[[], Coroutine[None, None, None]]:
    """``job`` as a coroutine function, so that APScheduler calls it on the event loop."""

    async def run() -> None:
        job()

    run.__name__ = getattr(job, "__name__", "job")
    return run


def _succeeded(apps: Sequence[App], result: CycleResult,
               git_failed: set[tuple[str, str]]) -> bool:
    """A cycle succeeded when git was reached and not every environment failed: one broken
    policy has its own error metric, while a registry or git outage must stop the
    last-success clock so that the "no successful cycle" alert fires."""
    if git_failed:
        return False
    total = sum(len(a.environments) for a in apps)
    return total == 0 or len({(f.app, f.env) for f in result.failures}) < total


def _reached(apps: Sequence[App], handed_out: set[GitTarget],
             git_failed: set[tuple[str, str]]) -> bool:
    """True when some deploy repository was opened and none of its environments hit git errors.

    Registry failures leave a repository unopened, so they never count as reaching git.
    """
    for target in handed_out:
        envs = [(a.name, e.name) for a in apps if a.git == target for e in a.environments]
        if envs and not any(env in git_failed for env in envs):
            return True
    return False


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
    """``image-updater run``: serve until SIGTERM/SIGINT; 0 on a clean stop."""
    apps = load_policies(policy_paths, max_file_bytes=settings.limits.policy_file_bytes)
    return asyncio.run(_main(settings, policy_paths, apps))


async def _main(settings: Settings, policy_paths: Sequence[str], apps: Sequence[App]) -> int:
    from image_updater.daemon.server import HttpServer

    daemon = Daemon(settings=settings, policy_paths=policy_paths, runtime=Runtime(settings),
                    apps=apps)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)
    server = HttpServer(settings=settings, daemon=daemon, loop=loop)
    return await serve(daemon, server, stop)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("received %s; shutting down", sig.name)
    stop.set()


async def serve(daemon: Daemon, server: HttpServer, stop: asyncio.Event) -> int:
    """Run the HTTP server and the daemon until ``stop``; then close everything. Exit code."""
    server.start()
    log.info("serving on %s; %d app(s), interval %d s", server.address, len(daemon.apps),
             int(daemon.settings.interval), extra={"listen": server.address})
    try:
        ok = await daemon.run(stop)
    finally:
        server.stop()
        await daemon.runtime.aclose()
    log.info("stopped")
    return 0 if ok else 1
