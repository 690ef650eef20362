"""Poll-cycle benchmark (not a test): N apps x 3 environment tags against a local registry.

(Over 450 lines: one run's stages, their yardsticks and the table of targets they feed
read best in one place; the yardsticks themselves live in ``baselines.py``.)

Measures, in one run and one event loop:

- the engine: ``reconcile(apps, runtime.deps())`` cycles in steady state (every values file
  already holds the right digest), then one cycle in which 1% of the tags moved;
- the registry's ceiling: ``ab -k -i`` sending as many HEADs at the same concurrency,
  run after each engine cycle; with ``--bare``, bare httpx HEAD loops too;
- with ``--git-stage K``: a cycle in which K values files change, against plain git doing
  the same edits, commit and push (``bench/baselines.py``);
- with ``--idle S``: the daemon (``serve()``, interval 120 s) over the same apps, its
  process CPU during S seconds between cycles.

Prints requests per tracked tag (from the client's ``on_request`` hook and from the
registry's access log), cycle wall and CPU time, peak RSS, and the targets of issue 16
with PASS/FAIL. Run from the repository root::

    python -m bench.poll_cycle --apps 1000 --concurrency 16 --cycles 3 --git-stage 1000 --idle 60
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from bench import _common as common
from bench import baselines
from image_updater.changes import CycleResult
from image_updater.config.policies import load_policies
from image_updater.config.settings import GitSettings, RegistrySettings, Settings
from image_updater.engine.reconcile import Deps, reconcile
from image_updater.gitops.repo import DeployRepo
from image_updater.model import App, GitTarget
from image_updater.observability.logs import configure_logging
from image_updater.registry.oci import ACCEPT_MANIFESTS, OciRegistry
from image_updater.registry.options import RegistryOptions
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.registry import RegistryServer

TARGET_REQUESTS_PER_TAG = 1.0
TARGET_CPU_PER_TAG_MS = 1.0
TARGET_RATIO_TO_AB = 2.5
TARGET_PEAK_RSS_MB = 300.0
TARGET_POLICY_LOAD_S = 5.0
#: the steady-cycle wall target holds for the issue's scale: 10,000 apps x 3 tags
TARGET_STEADY_WALL_S = 60.0
TARGET_STEADY_WALL_APPS = 10_000
TARGET_GIT_RATIO = 2.0
#: "about zero": below half a percent of one core, averaged between cycles
TARGET_IDLE_CPU_PERCENT = 0.5
IDLE_INTERVAL_S = 120.0
MOVED_SHARE = 0.01
LOOP_KEEP_ALIVE = "asyncio keep-alive"
LOOP_NEW_CONNECTIONS = "asyncio new connection per HEAD"
LOOP_THREADS = "thread pool keep-alive"


@dataclass
class RequestCounter:
    """The ``on_request`` hook: every HTTP request the OCI client sends, token fetches too."""

    count: int = 0
    #: manifest GETs: a steady cycle sends none; a moved one, one per new digest (the
    #: verification that derives the digest from the tag's bytes before it is written)
    manifest_gets: int = 0

    def __call__(self, method: str, url: str) -> None:
        self.count += 1
        if method == "GET" and "/manifests/" in url:
            self.manifest_gets += 1


@dataclass
class StageClock:
    """Marks when a cycle leaves the registry stage: the first ``repo_for`` call."""

    git_started: float | None = None

    def wrap(self, repo_for: Callable[[GitTarget], DeployRepo]
             ) -> Callable[[GitTarget], DeployRepo]:
        def timed(target: GitTarget) -> DeployRepo:
            if self.git_started is None:
                self.git_started = time.perf_counter()
            return repo_for(target)
        return timed


@dataclass(frozen=True)
class CycleStats:
    wall: float
    resolve: float
    git: float
    cpu: float
    hook_requests: int
    log_requests: int
    manifest_gets: int
    result: CycleResult


@dataclass
class LoopStats:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)


@dataclass
class Engine:
    """The daemon's wiring, with our own OciRegistry so its requests can be counted."""

    runtime: Runtime
    registry: OciRegistry
    counter: RequestCounter
    server: RegistryServer
    access_log: common.AccessLog

    def deps(self, stage: StageClock) -> Deps:
        base = self.runtime.deps()  # per cycle, as the daemon does
        return replace(base, registry_for=lambda _host: self.registry,
                       repo_for=stage.wrap(base.repo_for))

    async def cycle(self, apps: Sequence[App]) -> CycleStats:
        stage = StageClock()
        before_hook, before_log = self.counter.count, self.access_log.update()
        before_gets = self.counter.manifest_gets
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = await reconcile(apps, self.deps(stage))
        t1, cpu1 = time.perf_counter(), time.process_time()
        split = stage.git_started or t1
        return CycleStats(wall=t1 - t0, resolve=split - t0, git=t1 - split, cpu=cpu1 - cpu0,
                          hook_requests=self.counter.count - before_hook,
                          log_requests=_settled(self.access_log) - before_log,
                          manifest_gets=self.counter.manifest_gets - before_gets,
                          result=result)


def _settled(access_log: common.AccessLog) -> int:
    """The registry writes its access log asynchronously: wait until the count stops moving."""
    count = access_log.update()
    for _ in range(50):
        time.sleep(0.02)
        again = access_log.update()
        if again == count:
            return count
        count = again
    return count


# -- the floor: bare HEAD loops --------------------------------------------------------------

def tag_urls(base: str, apps: int) -> list[str]:
    return [f"{base}/v2/{common.repository(i)}/manifests/{env}"
            for i in range(apps) for env in common.ENVS]


def _limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


async def bare_async(client: httpx.AsyncClient, urls: Sequence[str], concurrency: int, *,
                     reuse: bool = True) -> tuple[float, float]:
    """One HEAD per URL, ``concurrency`` in flight; returns (wall, cpu) seconds.

    ``reuse=False`` closes each streamed response unread, as OciRegistry does today: httpcore
    then drops the connection instead of keeping it alive, so every HEAD opens a new one.
    """
    gate = asyncio.Semaphore(concurrency)  # as the client's RateLimiter does

    async def head(url: str) -> None:
        async with gate:
            if reuse:
                response = await client.head(url, headers={"Accept": ACCEPT_MANIFESTS})
            else:
                request = client.build_request("HEAD", url, headers={"Accept": ACCEPT_MANIFESTS})
                response = await client.send(request, stream=True)
                await response.aclose()
        _check_head(response)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(head(u) for u in urls))
    return time.perf_counter() - t0, time.process_time() - cpu0


def bare_threads(client: httpx.Client, pool: ThreadPoolExecutor, urls: Sequence[str]
                 ) -> tuple[float, float]:
    def head(url: str) -> None:
        _check_head(client.head(url, headers={"Accept": ACCEPT_MANIFESTS}))

    cpu0, t0 = time.process_time(), time.perf_counter()
    list(pool.map(head, urls))
    return time.perf_counter() - t0, time.process_time() - cpu0


def _check_head(response: httpx.Response) -> None:
    if response.status_code != 200 or "Docker-Content-Digest" not in response.headers:
        raise RuntimeError(f"HEAD {response.request.url} answered {response.status_code} "
                           "without a digest; the benchmark registry is not seeded right.")


# -- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Options:
    apps: int
    concurrency: int
    cycles: int
    keep: bool
    log_level: str
    bare: bool = False
    git_stage: int = 0
    idle: float = 0.0


@dataclass
class GitStage:
    """The cycle in which ``files`` values files changed, and plain git doing the same."""

    files: int
    stats: CycleStats
    plain_git: float
    one_commit: bool


@dataclass
class Report:
    options: Options
    setup_seconds: float = 0.0
    steady: list[CycleStats] = field(default_factory=list)
    policies_seconds: float = 0.0
    ab_walls: list[float] = field(default_factory=list)
    moved: CycleStats | None = None
    moved_expected: int = 0
    moved_verified: bool = False
    #: the digest each (app index, env) tag points at now
    current: dict[tuple[int, str], str] = field(default_factory=dict)
    git_stage: GitStage | None = None
    idle_cpu: float | None = None
    loops: dict[str, LoopStats] = field(default_factory=lambda: {
        name: LoopStats() for name in (LOOP_KEEP_ALIVE, LOOP_NEW_CONNECTIONS, LOOP_THREADS)})
    rss_before_cycles: float = 0.0
    rss_peak: float = 0.0
    rss_bare_loops: float = 0.0


def run(options: Options) -> Report:
    work = common.workdir(options.keep)
    report = Report(options)
    try:
        with RegistryServer() as server:
            try:
                asyncio.run(_run(options, server, work, report))
            finally:
                if options.keep:
                    shutil.copy(server.log_path, work / "registry.log")
    finally:
        common.remove(work, options.keep)
    report.rss_peak = common.peak_rss_mb()
    return report


async def _run(options: Options, server: RegistryServer, work: Path, report: Report) -> None:
    started = time.perf_counter()
    image = common.small_image()
    digests = common.seed_registry(server, image, options.apps)
    deploy = common.make_deploy_repo(work, options.apps, digests)
    report.current = {(i, env): digests[env] for i in range(options.apps)
                      for env in common.ENVS}
    policies = common.write_policies(work / "policies", server.host, deploy, options.apps)
    loading = time.perf_counter()
    apps = load_policies([policies])
    report.policies_seconds = time.perf_counter() - loading
    report.setup_seconds = time.perf_counter() - started
    _progress(f"setup: {options.apps} apps x {len(common.ENVS)} tags in "
              f"{report.setup_seconds:.1f} s")
    log_file = (work / "image-updater.log").open("w", encoding="utf-8")
    secrets = SecretRegistry()
    handler = configure_logging(fmt="text", level=options.log_level, stream=log_file,
                                secrets=secrets)
    engine = _engine(options, server, work, secrets)
    urls = tag_urls(server.url, options.apps)
    report.rss_before_cycles = common.peak_rss_mb()
    try:
        await _rounds(options, engine, apps, urls, report)
        await _moved_cycle(options, engine, image, apps, deploy, report)
        if options.git_stage:
            await _git_stage_cycle(options, engine, image, apps, deploy, work, report)
    finally:
        await engine.registry.aclose()
        await engine.runtime.aclose()
        logging.getLogger().removeHandler(handler)
        log_file.close()
    if options.idle:
        report.idle_cpu = await asyncio.to_thread(_idle_cpu, options, server, work, policies)


def _engine(options: Options, server: RegistryServer, work: Path,
            secrets: SecretRegistry) -> Engine:
    settings = Settings(
        cache_dir=str(work / "cache"),
        registries=(RegistrySettings(host=server.host, insecure=True,
                                     max_concurrency=options.concurrency),),
        git=GitSettings(author_name="image-updater", author_email="bench@example.com"))
    runtime = Runtime(settings, secrets=secrets)
    counter = RequestCounter()
    registry = OciRegistry(
        RegistryOptions(host=server.host, insecure=True, max_concurrency=options.concurrency),
        metrics=runtime.metrics, on_request=counter)
    return Engine(runtime=runtime, registry=registry, counter=counter, server=server,
                  access_log=common.AccessLog(server))


async def _rounds(options: Options, engine: Engine, apps: Sequence[App], urls: Sequence[str],
                  report: Report) -> None:
    """Interleave engine cycles with ``ab`` (and the bare loops) so drift hits all alike."""
    with BareLoops(urls if options.bare else [], options.concurrency) as bare:
        for n in range(options.cycles):
            stats = await engine.cycle(apps)
            _check_steady(stats, n)
            report.steady.append(stats)
            report.ab_walls.append(await asyncio.to_thread(
                baselines.ab_heads, urls[0], len(urls), options.concurrency, ACCEPT_MANIFESTS))
            line = (f"round {n + 1}/{options.cycles}: engine {stats.wall:.2f} s, "
                    f"CPU {stats.cpu:.2f} s ({stats.hook_requests} requests); "
                    f"ab {report.ab_walls[-1]:.2f} s")
            if options.bare:
                for name, (wall, cpu) in (await bare.run()).items():
                    report.loops[name].walls.append(wall)
                    report.loops[name].cpus.append(cpu)
                line += "; bare loops " + ", ".join(f"{k} {v.walls[-1]:.2f} s"
                                                    for k, v in report.loops.items())
            _progress(line)
    report.rss_bare_loops = bare.peak_rss_mb  # the child reports it as it stops


class BareLoops:
    """The bare loops, in a process of their own so their memory is not counted as ours.

    A spawned child (no inherited heap) waits for "run" and answers with each loop's
    (wall, cpu) seconds; its clients stay open across rounds, as the engine's do.
    """

    def __init__(self, urls: Sequence[str], concurrency: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_bare_worker, args=(child, list(urls),
                                                                   concurrency), daemon=True)
        self.peak_rss_mb = 0.0
        self._enabled = bool(urls)  # without URLs (no --bare) no child is started

    def __enter__(self) -> BareLoops:
        if self._enabled:
            self._process.start()
        return self

    async def run(self) -> dict[str, tuple[float, float]]:
        self._conn.send("run")
        answer: dict[str, tuple[float, float]] = await asyncio.to_thread(self._conn.recv)
        return answer

    def __exit__(self, *exc: object) -> None:
        if not self._enabled:
            self._conn.close()
            return
        try:
            self._conn.send("stop")
            self.peak_rss_mb = float(self._conn.recv())
        except (OSError, EOFError):
            pass  # the child died; its error is on stderr
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()


def _bare_worker(conn: Connection, urls: list[str], concurrency: int) -> None:
    asyncio.run(_bare_serve(conn, urls, concurrency))


async def _bare_serve(conn: Connection, urls: list[str], concurrency: int) -> None:
    limits = _limits(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as aclient:
        with httpx.Client(limits=limits, timeout=30) as client, \
                ThreadPoolExecutor(max_workers=concurrency) as pool:
            while conn.recv() == "run":
                conn.send({
                    LOOP_KEEP_ALIVE: await bare_async(aclient, urls, concurrency),
                    LOOP_NEW_CONNECTIONS: await bare_async(aclient, urls, concurrency,
                                                           reuse=False),
                    LOOP_THREADS: bare_threads(client, pool, urls)})
    conn.send(common.peak_rss_mb())


def _check_steady(stats: CycleStats, n: int) -> None:
    r = stats.result
    if r.changes or r.failures or r.commits or stats.manifest_gets:
        first = r.failures[0].message if r.failures else ""
        raise RuntimeError(f"steady-state cycle {n + 1} was not a no-op: {len(r.changes)} "
                           f"change(s), {len(r.failures)} failure(s) {first}")


async def _moved_cycle(options: Options, engine: Engine, image: common.Image,
                       apps: Sequence[App], deploy: Path, report: Report) -> None:
    tags = options.apps * len(common.ENVS)
    count = max(1, round(tags * MOVED_SHARE))
    step = tags // count
    targets = [(k // len(common.ENVS), common.ENVS[k % len(common.ENVS)])
               for k in range(0, step * count, step)]
    moved = common.move_tags(engine.server, image, targets)
    report.current.update(moved)
    commits = common.commit_count(deploy)
    stats = await engine.cycle(apps)
    report.moved, report.moved_expected = stats, len(moved)
    got = {(c.app, c.env): c.digest for c in stats.result.changes}
    want = {(common.app_name(i), env): d for (i, env), d in moved.items()}
    sample_app, sample_env = next(iter(want))
    written = common.head_file(deploy, f"{sample_app}/values-{sample_env}.yaml")
    report.moved_verified = (got == want and not stats.result.failures
                             and common.commit_count(deploy) == commits + 1
                             and want[(sample_app, sample_env)] in written)


async def _git_stage_cycle(options: Options, engine: Engine, image: common.Image,
                           apps: Sequence[App], deploy: Path, work: Path, report: Report
                           ) -> None:
    """K tags move; the cycle must land all K files in one commit. Plain git then does the
    same edits on a copy of the deploy repository as it was before the cycle."""
    tags = options.apps * len(common.ENVS)
    count = min(options.git_stage, tags)
    targets = [(k // len(common.ENVS), common.ENVS[k % len(common.ENVS)])
               for k in range(0, tags, max(1, tags // count))][:count]
    moved = common.move_tags(engine.server, image, targets, suffix="stage")
    origin = work / "plain-git-origin.git"
    shutil.copytree(deploy, origin)
    edits = {f"{common.app_name(i)}/values-{env}.yaml": (report.current[(i, env)], digest)
             for (i, env), digest in moved.items()}
    report.current.update(moved)
    commits = common.commit_count(deploy)
    stats = await engine.cycle(apps)
    got = {(c.app, c.env): c.digest for c in stats.result.changes}
    want = {(common.app_name(i), env): d for (i, env), d in moved.items()}
    one_commit = (got == want and not stats.result.failures
                  and common.commit_count(deploy) == commits + 1)
    plain = await asyncio.to_thread(baselines.plain_git_stage, origin, work / "plain-git",
                                    edits, f"bench: {count} digests")
    report.git_stage = GitStage(files=count, stats=stats, plain_git=plain,
                                one_commit=one_commit)
    _progress(f"git stage: {count} files, engine git stage {stats.git:.2f} s (cycle "
              f"{stats.wall:.2f} s), plain git {plain:.2f} s")


def _idle_cpu(options: Options, server: RegistryServer, work: Path, policies: Path) -> float:
    """Average CPU (percent of one core) of the daemon between two cycles: ``serve()`` in
    this process, interval 120 s, over the same apps; measured after its first cycle."""
    from tests.fixtures.daemon import InProcessDaemon, daemon_settings

    idle = work / "idle"
    idle.mkdir()
    settings = replace(daemon_settings(idle, server.host, interval=IDLE_INTERVAL_S),
                       registries=(RegistrySettings(host=server.host, insecure=True,
                                                    max_concurrency=options.concurrency),))
    started = time.monotonic()
    with InProcessDaemon(settings, [policies]) as running:
        running.wait_cycles(1, timeout=600)
        # The next cycle is due IDLE_INTERVAL_S after the start: stay clear of it.
        window = min(options.idle, IDLE_INTERVAL_S - (time.monotonic() - started) - 10)
        if window < 10:
            raise RuntimeError(f"the daemon's first cycle took {time.monotonic() - started:.0f}"
                               f" s, too long to measure {IDLE_INTERVAL_S:.0f} s cycles idling"
                               "; measure --idle with fewer --apps (the issue asks 1,000)")
        cpu = baselines.cpu_over(window)
        if running.daemon.cycles != 1:
            raise RuntimeError("the daemon ran another cycle in the idle window")
    _progress(f"idle: {cpu:.3f} s CPU in {window:.0f} s between cycles")
    return 100.0 * cpu / window


# -- printing --------------------------------------------------------------------------------

def render(report: Report) -> str:
    o = report.options
    tags = o.apps * len(common.ENVS)
    warm = report.steady[1:] or report.steady
    rows = [["measure", "value", "target", "verdict"],
            *_request_rows(warm, tags), *_time_rows(report, warm, tags),
            *_memory_rows(report)]
    if report.moved is not None:
        rows += _moved_rows(report, report.moved, tags)
    if report.git_stage is not None:
        rows += _git_rows(report.git_stage)
    if report.idle_cpu is not None:
        rows.append([f"idle daemon ({o.apps} apps, interval {IDLE_INTERVAL_S:.0f} s): CPU "
                     "between cycles (% of a core)", f"{report.idle_cpu:.3f}",
                     f"<= {TARGET_IDLE_CPU_PERCENT}",
                     _verdict(report.idle_cpu <= TARGET_IDLE_CPU_PERCENT)])
    head = (f"poll cycle: {o.apps} apps x {len(common.ENVS)} tags = {tags} tracked tags, "
            f"concurrency {o.concurrency}, {o.cycles} steady cycles (medians of the "
            f"{len(warm)} after the first), log level {o.log_level}, setup "
            f"{report.setup_seconds:.1f} s")
    return head + "\n\n" + common.table(rows)


def _request_rows(warm: Sequence[CycleStats], tags: int) -> list[list[str]]:
    target = TARGET_REQUESTS_PER_TAG
    hook = max(s.hook_requests for s in warm) / tags
    logged = max(s.log_requests for s in warm) / tags
    return [["registry requests per tracked tag (client hook)", f"{hook:.3f}",
             f"<= {target}", _verdict(hook <= target)],
            ["registry requests per tracked tag (access log)", f"{logged:.3f}",
             f"<= {target}", _verdict(logged <= target)]]


def _time_rows(report: Report, warm: Sequence[CycleStats], tags: int) -> list[list[str]]:
    o = report.options
    wall = common.median([s.wall for s in warm])
    cpu = common.median([s.cpu for s in warm])
    ab = common.median(report.ab_walls[1:] or report.ab_walls)
    per_tag = cpu / tags * 1000
    big = o.apps >= TARGET_STEADY_WALL_APPS
    rows = [
        ["steady cycle wall time (s)", f"{wall:.3f}",
         f"<= {TARGET_STEADY_WALL_S:.0f}" if big else "",
         _verdict(wall <= TARGET_STEADY_WALL_S) if big else ""],
        ["  resolve stage (s)", f"{common.median([s.resolve for s in warm]):.3f}", "", ""],
        ["  git stage (s)", f"{common.median([s.git for s in warm]):.3f}", "", ""],
        ["  CPU time of this process (s)", f"{cpu:.3f}", "", ""],
        ["CPU per tracked tag (ms)", f"{per_tag:.3f}", f"<= {TARGET_CPU_PER_TAG_MS}",
         _verdict(per_tag <= TARGET_CPU_PER_TAG_MS)],
        [f"ab -k -i -c {o.concurrency}, {tags} HEADs: wall (s)", f"{ab:.3f}", "", ""],
        ["steady cycle / ab", f"{wall / ab:.2f}x", f"<= {TARGET_RATIO_TO_AB}x",
         _verdict(wall <= TARGET_RATIO_TO_AB * ab)]]
    if o.bare:
        rows += [[f"bare {name}: wall / CPU (s)", _wall_cpu(report.loops[name]), "", ""]
                 for name in (LOOP_KEEP_ALIVE, LOOP_NEW_CONNECTIONS, LOOP_THREADS)]
    rows += [["first (cold) cycle: wall / CPU (s)",
              f"{report.steady[0].wall:.3f} / {report.steady[0].cpu:.3f}", "", ""],
             ["policies loaded and validated (s)", f"{report.policies_seconds:.3f}",
              f"<= {TARGET_POLICY_LOAD_S:.0f}",
              _verdict(report.policies_seconds <= TARGET_POLICY_LOAD_S)]]
    return rows


def _memory_rows(report: Report) -> list[list[str]]:
    rows = [["peak RSS of this process (MB)", f"{report.rss_peak:.1f}",
             f"<= {TARGET_PEAK_RSS_MB:.0f}", _verdict(report.rss_peak <= TARGET_PEAK_RSS_MB)],
            ["  peak before the first cycle (MB)", f"{report.rss_before_cycles:.1f}", "", ""]]
    if report.options.bare:
        rows.append(["peak RSS of the bare loops' process (MB)", f"{report.rss_bare_loops:.1f}",
                     "", ""])
    return rows


def _moved_rows(report: Report, m: CycleStats, tags: int) -> list[list[str]]:
    return [[f"1% moved ({report.moved_expected} tags): cycle wall time (s)", f"{m.wall:.3f}",
             "", ""],
            ["  resolve / git stage (s)", f"{m.resolve:.3f} / {m.git:.3f}", "", ""],
            ["  requests per tracked tag (hook / log)",
             f"{m.hook_requests / tags:.3f} / {m.log_requests / tags:.3f}", "", ""],
            ["  verification GETs (manifest by tag) / moved tags",
             f"{m.manifest_gets} / {report.moved_expected}", "= 1 each",
             _verdict(m.manifest_gets == report.moved_expected
                      and len(m.result.verifications) == report.moved_expected)],
            ["  every moved tag committed, in one commit", str(report.moved_verified), "",
             _verdict(report.moved_verified)]]


def _git_rows(g: GitStage) -> list[list[str]]:
    ratio = g.stats.git / g.plain_git
    return [[f"{g.files} values files changed: cycle wall / git stage (s)",
             f"{g.stats.wall:.3f} / {g.stats.git:.3f}", "", ""],
            ["  plain git: fetch, same edits, commit, push (s)", f"{g.plain_git:.3f}", "", ""],
            ["  git stage / plain git", f"{ratio:.2f}x", f"<= {TARGET_GIT_RATIO}x",
             _verdict(ratio <= TARGET_GIT_RATIO)],
            ["  every file committed, in one commit", str(g.one_commit), "",
             _verdict(g.one_commit)]]


def _loop_median(stats: LoopStats) -> float:
    return common.median(stats.walls[1:] or stats.walls)  # the first run opens connections


def _wall_cpu(stats: LoopStats) -> str:
    return f"{_loop_median(stats):.3f} / {common.median(stats.cpus[1:] or stats.cpus):.3f}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=1000, help="apps, 3 env tags each")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in flight (registry max_concurrency and bare loops)")
    parser.add_argument("--cycles", type=int, default=3,
                        help="steady-state cycles; the first is the warm-up")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (deploy repo, policies, logs)")
    parser.add_argument("--log-level", default="info",
                        help="image-updater log level, written to a file (default: info, "
                             "as the daemon runs)")
    parser.add_argument("--bare", action="store_true",
                        help="also run bare httpx HEAD loops (asyncio, threads) each round")
    parser.add_argument("--git-stage", type=int, default=0, metavar="K",
                        help="a cycle in which K values files change, against plain git")
    parser.add_argument("--idle", type=float, default=0.0, metavar="S",
                        help="measure the idle daemon's CPU over S seconds between cycles")
    args = parser.parse_args(argv)
    if args.apps < 1 or args.concurrency < 1 or args.cycles < 1:
        parser.error("--apps, --concurrency and --cycles must be at least 1")
    if args.git_stage < 0 or args.idle < 0:
        parser.error("--git-stage and --idle must not be negative")
    return Options(apps=args.apps, concurrency=args.concurrency, cycles=args.cycles,
                   keep=args.keep, log_level=args.log_level, bare=args.bare,
                   git_stage=args.git_stage, idle=args.idle)


def main(argv: Sequence[str] | None = None) -> int:
    report = run(parse_args(argv))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
