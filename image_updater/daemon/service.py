"""The daemon's orchestrated work: cycles, health, and live policy reloads.

- the schedule (:mod:`~image_updater.daemon.schedule`) fires a full cycle every
  ``interval`` (+ jitter), a heartbeat for liveness, and a policy reload check (ConfigMap
  updates, no restart needed);
- the ``worker`` task runs cycles one at a time, as the request queue
  (:mod:`~image_updater.daemon.requests`) asks for them;
- each cycle's result is reported by :func:`~image_updater.observability.report.report`
  and, as events, handed to the notification dispatcher (:mod:`image_updater.notify`),
  whose tasks (``notify:<sink>``) deliver in the background: a cycle never waits for them.

SIGTERM/SIGINT stop the schedule, let a running cycle finish for up to ``grace`` seconds
(a push is atomic: it either lands or not), then cancel it. The entry point, the signals
and the HTTP server are in :mod:`image_updater.daemon.main`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from image_updater.changes import Change, CycleResult
from image_updater.config.policies import load_policies
from image_updater.config.settings import Settings
from image_updater.daemon.requests import RequestQueue
from image_updater.daemon.schedule import IntervalSchedule, Job, Schedule
from image_updater.engine.reconcile import Deps, Source, reconcile
from image_updater.errors import ConfigError
from image_updater.gitops.repo import DeployRepo
from image_updater.model import App, GitTarget, known_envs
from image_updater.notify.dispatcher import Dispatcher
from image_updater.notify.events import CycleWatch
from image_updater.notify.factory import build_dispatcher
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report
from image_updater.registry.reference import normalize_host, parse_reference
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime

log = logging.getLogger("image_updater.daemon")

GIT_REASONS = frozenset({"git", "git_auth", "push_rejected", "git_unavailable"})
#: a stalled scheduler is reported by /healthz after this many missed heartbeats
MISSED_HEARTBEATS = 3


class Daemon:
    """The orchestrator. ``clock`` is Unix time (health, last-success metric).

    ``grace`` (s): how long SIGTERM waits for a running cycle. ``heartbeat_every`` (s): the
    liveness tick; /healthz fails after ``MISSED_HEARTBEATS`` missed ticks (at least 60 s).
    ``reload_every`` (s): how often policy files are checked for changes.
    ``settle`` and ``recheck_after`` (s): see :class:`~image_updater.daemon.requests.RequestQueue`.
    ``schedule`` fires the periodic jobs (APScheduler by default; tests pass their own).
    """

    def __init__(self, *, settings: Settings, policy_paths: Sequence[str], runtime: Runtime,
                 apps: Sequence[App], clock: Callable[[], float] = time.time,
                 grace: float = 30.0, heartbeat_every: float = 5.0,
                 reload_every: float = 10.0, settle: float = 0.2,
                 recheck_after: float = 1.0, schedule: Schedule | None = None) -> None:
        self.settings = settings
        self.policy_paths = list(policy_paths)
        self.runtime = runtime
        self.apps = list(apps)
        self.clock = clock
        self.grace = grace
        self.heartbeat_every = heartbeat_every
        self.reload_every = reload_every
        self.schedule = schedule if schedule is not None else IntervalSchedule()
        self.requests = RequestQueue(settle=settle, recheck_after=recheck_after)
        #: what started the cycle the worker runs next (its commits' Image-Updater-Source)
        self.cycle_source: Source = "poll"
        self.last_tick = clock()
        self.repo_reached = False
        self.in_cycle = False
        self.cycles = 0
        # stat before reading: a write in between is then seen as a change next time
        self._policy_stamp = _stat_policies(self.policy_paths)
        self._policy_hash = _hash_policies(self.policy_paths)
        self.last_result: CycleResult | None = None
        self._open_prs: dict[tuple[str, str], str] = {}
        #: built from the settings when the daemon starts (None: no sink configured)
        self.notifier: Dispatcher | None = None
        #: called on the loop after every cycle (the status page recomputes its snapshot)
        self.after_cycle: list[Callable[[], None]] = []
        #: awaited when the daemon stops (the status page ends a refresh under way)
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        #: awaited in order once the worker has stopped, before the notifier and on_stop:
        #: the HTTP port drains its requests, then the promotion API lands what it moved
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        self._watch = CycleWatch(failing_after=timedelta(
            seconds=settings.notifications.failing_after))
        #: what promotion API callers vouched for each change (daemon/promotions.py)
        self.evidence_for: Callable[[Change], Mapping[str, str]] | None = None

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def secrets(self) -> SecretRegistry:
        return self.runtime.secrets

    # -- requests -------------------------------------------------------------------------
    def request_full(self) -> None:
        self.requests.request_full()

    def request_apps(self, names: set[str]) -> None:
        """Reconcile only these apps soon (webhooks); call on the daemon's loop."""
        self.requests.request_apps(names & {a.name for a in self.apps})

    def queued(self) -> tuple[bool, frozenset[str]]:
        return self.requests.queued()

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

    # -- scheduled jobs (coroutines: APScheduler runs them on the loop itself) -------------
    async def tick(self) -> None:
        """The liveness heartbeat."""
        self.last_tick = self.clock()

    async def interval_elapsed(self) -> None:
        self.request_full()

    async def reload_policies(self) -> None:
        """Pick up edited policy files (a ConfigMap update) without a restart.

        A broken change is logged and skipped; the apps loaded before keep being served, and
        the same broken content is not reported again until the files change once more.
        """
        try:
            stamp = _stat_policies(self.policy_paths)
            if stamp == self._policy_stamp:
                return  # nothing touched the files: nothing to read
            digest = _hash_policies(self.policy_paths)
        except OSError as exc:  # a ConfigMap swap can remove a file between listing and reading
            log.warning("cannot read the policy files (%s); will check again in %.0f s",
                        exc, self.reload_every)
            return
        self._policy_stamp = stamp
        if digest == self._policy_hash:
            return  # touched, same content
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
        self.metrics.images_watched.set(sum(len(a.environments) for a in apps))
        self.request_full()

    def jobs(self) -> list[Job]:
        return [Job("cycle", self.settings.interval, self.interval_elapsed,
                    jitter=self.settings.jitter),
                Job("heartbeat", self.heartbeat_every, self.tick),
                Job("reload", self.reload_every, self.reload_policies)]

    # -- the worker -----------------------------------------------------------------------
    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            recheck = await self.requests.wait()
            if stop.is_set():
                return  # a shutdown wakes us too; never start a cycle after it
            full, _ = self.requests.queued()  # only webhooks ask for some apps alone
            apps = self.requests.next_batch(self.apps)
            if apps:
                self.cycle_source = "poll" if full else "webhook"
                result = await self._guarded_cycle(apps)
                changed = {c.app for c in result.changes} if result is not None else set()
                self.requests.recheck(recheck, changed)

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

    async def cycle(self, apps: Sequence[App]) -> CycleResult:
        metrics = self.metrics
        started = time.monotonic()
        handed_out: set[GitTarget] = set()
        self.in_cycle = True
        try:
            result = await reconcile(apps, self._deps(handed_out, self.cycle_source),
                                     dry_run=self.settings.dry_run)
        finally:
            self.in_cycle = False
        report(result, metrics, retry_hint=self.runtime.retry_hint)
        metrics.cycle_duration.observe(time.monotonic() - started)
        self.cycles += 1
        self.last_result = result
        git_failed = {(f.app, f.env) for f in result.failures if f.reason in GIT_REASONS}
        if _reached(apps, handed_out, git_failed):
            self.repo_reached = True
        if _succeeded(apps, result, git_failed):
            metrics.last_success.set(self.clock())
        self._track_pull_requests(apps, result)
        self._notify(apps, result)
        for listener in self.after_cycle:
            listener()
        for preview in result.previews:  # dry_run: what would have been written
            log.info("dry run, not written:\n%s", preview)
        scope = "all apps" if len(apps) == len(self.apps) else \
            "app(s) " + ", ".join(sorted(a.name for a in apps))
        log.info("cycle for %s done in %.2f s: %d update(s), %d failure(s), %d up to date; "
                 "next full cycle within %d s", scope, time.monotonic() - started,
                 len(result.changes), len(result.failures), len(result.unchanged),
                 int(self.settings.interval + self.settings.jitter))
        return result

    def _notify(self, apps: Sequence[App], result: CycleResult) -> None:
        """Queue the cycle's events for the sinks; never waits, never fails the cycle."""
        if self.notifier is None:
            return
        try:
            covered = [(a.name, e.name) for a in apps for e in a.environments]
            now = datetime.fromtimestamp(self.clock(), UTC)
            self.notifier.publish(self._watch.events(result, now=now, covered=covered))
        except Exception:
            log.exception("the cycle's notifications could not be queued (a bug; please "
                          "report it); the cycle itself is unaffected")

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
        self.metrics.pull_requests_open.set(len(self._open_prs))

    def _deps(self, handed_out: set[GitTarget], source: Source = "poll") -> Deps:
        """The runtime's deps, noting which deploy repositories the cycle opened."""
        deps = self.runtime.deps()
        open_repo = deps.repo_for

        def repo_for(target: GitTarget) -> DeployRepo:
            repo = open_repo(target)
            handed_out.add(target)
            return repo

        return dataclasses.replace(deps, repo_for=repo_for, source=source,
                                   known_envs=known_envs(self.apps),
                                   evidence_for=self.evidence_for or deps.evidence_for)

    # -- the orchestrator -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> bool:
        """Serve until ``stop`` is set; False when the worker died (the process exits 1)."""
        self.metrics.images_watched.set(sum(len(a.environments) for a in self.apps))
        self.notifier = build_dispatcher(self.settings.notifications, secrets=self.secrets,
                                         metrics=self.metrics)
        if self.notifier is not None:
            self.notifier.start()
        self.schedule.start(self.jobs())
        self.request_full()  # first cycle now, not after one interval
        worker = asyncio.create_task(self.worker(stop), name="worker")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self.schedule.stop()
        crashed = worker in done and not worker.cancelled() and worker.exception() is not None
        if crashed:
            log.error("the worker task exited unexpectedly: %r; stopping so that the process "
                      "is restarted", worker.exception())
        await self._stop_worker(worker)
        for step in self.before_close:
            await step()
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)  # only waits for the cancel
        if self.notifier is not None:  # the last cycle's events get a short while to go out
            await self.notifier.aclose(grace=min(self.grace,
                                                 self.settings.notifications.flush_timeout))
        for hook in self.on_stop:
            await hook()
        return not crashed

    async def _stop_worker(self, worker: asyncio.Task[None]) -> None:
        if worker.done():
            return
        if self.in_cycle:
            log.info("stopping: letting the running cycle finish (up to %.0f s)", self.grace)
        self.requests.wake()
        try:
            await asyncio.wait_for(asyncio.shield(worker), timeout=self.grace)
        except TimeoutError:
            # A git push already under way still completes in its thread (it is atomic:
            # the branch holds the old or the new commit); only the rest of the cycle is lost.
            log.warning("the running cycle did not finish within %.0f s; abandoning it; the "
                        "next start reconciles from git again", self.grace)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


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


def _policy_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        found = sorted(p.rglob("*")) if p.is_dir() else [p]
        files += [f for f in found if f.suffix in (".yaml", ".yml") and f.is_file()]
    return files


def _stat_policies(paths: Sequence[str]) -> tuple[tuple[str, int, int, int, int], ...]:
    """What the policy files look like from outside (name, inode, size, mtime, ctime): the
    reload job reads and hashes them only when this changed, so an idle daemon with 10,000
    policy files does not read them all every few seconds. A ConfigMap update swaps a
    symlink, which changes the inode (stat follows the link)."""
    stamp = []
    for f in _policy_files(paths):
        st = f.stat()
        stamp.append((str(f), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(stamp)


def _hash_policies(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for f in _policy_files(paths):
        h.update(str(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
