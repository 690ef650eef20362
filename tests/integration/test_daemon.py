"""The daemon in operation: health, readiness, shutdown, live policy reload, coalescing.

Everything is real except, where a test waits for the scheduler, the clock and the schedule
(:class:`~tests.fixtures.daemon.ManualTime`, parameters of the daemon): the registry, bare
deploy repositories, the HTTP server and, for shutdown, the CLI process. One test runs the
real APScheduler in real time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from image_updater.changes import CycleResult
from image_updater.daemon.service import Daemon
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from tests.fixtures.daemon import (
    DEV,
    DaemonProcess,
    InProcessDaemon,
    ManualTime,
    daemon_settings,
    metric_value,
    wait_until,
    write_policy,
)
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

STAGING = "application-x/values-staging.yaml"


class ManualClock:
    """Unix time that only moves when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def values(deploy: BareRepo, path: str = DEV) -> str:
    return deploy.show("master", path).decode()


@pytest.fixture
def deploy(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path)


def one_app(registry: RegistryServer, deploy: BareRepo, tmp_path: Path, repository: str
            ) -> Path:
    policies = tmp_path / "policies"
    write_policy(policies, "application-x", f"{registry.host}/{repository}",
                 f"file://{deploy.path}")
    return policies


# -- health and readiness ------------------------------------------------------------------

@pytest.mark.parametrize(("ticking", "expected"), [(True, 200), (False, 503)])
def test_healthz_follows_the_scheduler_heartbeat(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path,
        ticking: bool, expected: int) -> None:
    push_image(registry.url, "health/application-x", "dev", seed="h")
    time = ManualTime()
    policies = one_app(registry, deploy, tmp_path, "health/application-x")
    with InProcessDaemon(daemon_settings(tmp_path, registry.host), [policies], clock=time,
                         schedule=time) as running:
        assert running.get("/healthz").status_code == 200
        if ticking:  # a day passes and the schedule fires: the heartbeat notices the new time
            assert "heartbeat" in time.advance(86_400)
            assert running.daemon.last_tick == time.now
        else:  # a day passes on the daemon's clock while the schedule is stalled
            time.now += 86_400
        response = running.get("/healthz")
    assert response.status_code == expected
    assert response.text == ("ok\n" if expected == 200 else "scheduler stalled\n")


def test_heartbeat_ticks_while_worker_threads_are_all_busy(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    """Git and boto3 calls run in the loop's thread pool; a long push or a slow listing that
    occupies every worker must not stall the liveness heartbeat (and get the pod killed).

    End to end with the real APScheduler, in real time: its jobs must run on the loop."""
    push_image(registry.url, "busy/application-x", "dev", seed="b")
    clock = ManualClock()
    policies = one_app(registry, deploy, tmp_path, "busy/application-x")
    release = threading.Event()
    with InProcessDaemon(daemon_settings(tmp_path, registry.host), [policies], clock=clock,
                         heartbeat_every=0.05) as running:
        running.wait_cycles(1)
        loop = running.loop

        def occupy_every_worker() -> None:
            for _ in range(64):  # more than any default pool size (min(32, cpus + 4))
                loop.run_in_executor(None, release.wait, 30)

        try:
            running.call(occupy_every_worker)
            clock.now += 3600
            wait_until(lambda: running.daemon.last_tick == clock.now, timeout=10,
                       what="a heartbeat while the thread pool is busy")
            status = running.get("/healthz").status_code
        finally:
            release.set()
    assert status == 200


def test_readyz_waits_until_the_deploy_repo_was_reached(
        registry: RegistryServer, tmp_path: Path) -> None:
    later = tmp_path / "later"
    later.mkdir()
    digest = push_image(registry.url, "ready/application-x", "dev", seed="r")
    policies = tmp_path / "policies"
    write_policy(policies, "application-x", f"{registry.host}/ready/application-x",
                 f"file://{later / 'deploy.git'}")
    with InProcessDaemon(daemon_settings(tmp_path, registry.host), [policies]) as running:
        running.wait_cycles(1)
        result = running.daemon.last_result
        assert result is not None and [f.reason for f in result.failures] == ["git"]
        not_ready = running.get("/readyz")
        assert running.get("/healthz").status_code == 200  # alive, just not ready

        deploy = make_bare_repo(later)  # the repository appears
        running.call(running.daemon.request_full)
        running.wait_cycles(2)
        ready = running.get("/readyz")
    assert (not_ready.status_code, ready.status_code) == (503, 200)
    assert f"digest: {digest}" in values(deploy)


def test_a_registry_outage_alone_does_not_make_the_daemon_ready(
        deploy: BareRepo, tmp_path: Path) -> None:
    from tests.fixtures.registry import free_port

    closed = f"127.0.0.1:{free_port()}"
    policies = tmp_path / "policies"
    write_policy(policies, "application-x", f"{closed}/down/application-x",
                 f"file://{deploy.path}")
    with InProcessDaemon(daemon_settings(tmp_path, closed), [policies]) as running:
        running.wait_cycles(1)
        assert running.get("/readyz").status_code == 503  # git was never reached
        metrics = running.get("/metrics").text
    # every environment failed: the "no successful cycle" alert must be able to fire
    assert metric_value(metrics, "image_updater_last_successful_cycle_timestamp_seconds") == 0


# -- shutdown ------------------------------------------------------------------------------

def slow_push_hook(deploy: BareRepo, marker: Path, seconds: float) -> None:
    """A server-side hook that marks the push as started, then holds it for ``seconds``."""
    hook = deploy.path / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\nsleep {seconds}\nexit 0\n")
    hook.chmod(0o755)


def settings_file(tmp_path: Path, registry: RegistryServer, extra: str = "") -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(
        f"listen: '127.0.0.1:0'\ninterval: 3600\njitter: 0\ncache_dir: '{tmp_path / 'cache'}'\n"
        f"registries: [{{host: '{registry.host}', insecure: true}}]\n" + extra)
    return path


def test_sigterm_during_a_push_finishes_it_and_exits_zero(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    digest = push_image(registry.url, "term/application-x", "dev", seed="t")
    marker = tmp_path / "push-started"
    slow_push_hook(deploy, marker, seconds=1.5)
    old_head = deploy.head()
    policies = one_app(registry, deploy, tmp_path, "term/application-x")
    with DaemonProcess(tmp_path, settings_file(tmp_path, registry), [policies], env={}) as proc:
        wait_until(marker.exists, timeout=20, what="the start-up cycle's push")
        code = proc.terminate(timeout=40)  # well within the 30 s grace plus start-up
        messages = [r["msg"] for r in proc.records()]
    assert code == 0
    head = deploy.head()
    assert head != old_head  # the push in flight completed: the new commit, whole
    assert f"digest: {digest}" in values(deploy)
    assert git("fsck", "--strict", cwd=deploy.path, check=True) == ""
    assert "received SIGTERM; shutting down" in messages
    assert any(m.startswith("stopping: letting the running cycle finish") for m in messages)
    assert messages[-1] == "stopped"


# -- policies ------------------------------------------------------------------------------

def test_policy_changes_apply_live_and_broken_ones_are_rejected(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="image_updater.daemon")
    a1 = push_image(registry.url, "live/a", "dev", seed="a1")
    b1 = push_image(registry.url, "live/b", "dev", seed="b1")
    policies = tmp_path / "policies"
    url = f"file://{deploy.path}"
    write_policy(policies, "app-a", f"{registry.host}/live/a", url)
    write_policy(policies, "ghost", f"{registry.host}/live/does-not-exist", url,
                 "dev: {file: application-x/values-prod.yaml}")
    time = ManualTime()
    with InProcessDaemon(daemon_settings(tmp_path, registry.host), [policies], clock=time,
                         schedule=time, reload_every=10.0) as running:
        running.wait_cycles(1)
        assert f"digest: {a1}" in values(deploy)  # the ghost's failure did not stop app-a

        write_policy(policies, "app-b", f"{registry.host}/live/b", url,
                     f"dev: {{file: {STAGING}}}")
        assert time.advance(10.0) == ["heartbeat", "reload"]
        running.wait_cycles(2)  # the reload asked for a full cycle: no restart
        assert f"digest: {b1}" in values(deploy, STAGING)

        (policies / "app-b.yaml").write_text("app: app-b\nimage: [unclosed\n")
        time.advance(10.0)
        assert any("policy change rejected" in r.getMessage() for r in caplog.records)
        a2 = push_image(registry.url, "live/a", "dev", seed="a2")
        b2 = push_image(registry.url, "live/b", "dev", seed="b2")
        cycles = running.daemon.cycles
        running.call(running.daemon.request_full)
        running.wait_cycles(cycles + 1)
        names = sorted(a.name for a in running.daemon.apps)
        metrics = running.get("/metrics").text
    assert names == ["app-a", "app-b", "ghost"]  # the previous apps kept being served
    assert f"digest: {a2}" in values(deploy) and f"digest: {b2}" in values(deploy, STAGING)
    rejection = next(r for r in caplog.records if "policy change rejected" in r.getMessage())
    assert rejection.levelno == logging.ERROR
    assert "app-b.yaml" in rejection.getMessage()  # names the broken file
    assert (metric_value(metrics, "image_updater_errors_total", app="ghost") or 0) >= 2


# -- coalescing ----------------------------------------------------------------------------

class GatedDaemon(Daemon):
    """Holds every cycle at a gate the test opens, and records which apps each one covered."""

    def __init__(self, *, gate: threading.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.batches: list[list[str]] = []
        self.sources: list[str] = []

    async def cycle(self, apps: Sequence[App]) -> CycleResult:
        self.batches.append(sorted(a.name for a in apps))
        self.sources.append(self.cycle_source)
        await asyncio.to_thread(self.gate.wait)
        return await super().cycle(apps)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a cycle (and its thread) waiting


def test_requests_during_a_cycle_are_coalesced_into_one_more(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path, gate: threading.Event,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_IU_SECRET", "coalesce-secret")
    policies = tmp_path / "policies"
    url = f"file://{deploy.path}"
    write_policy(policies, "app-a", f"{registry.host}/co/a", url)
    write_policy(policies, "app-b", f"{registry.host}/co/b", url, f"dev: {{file: {STAGING}}}")
    settings = daemon_settings(tmp_path, registry.host, secret_env="TEST_IU_SECRET")
    event = (b'{"events": [{"action": "push", "target": {"repository": "co/a", "tag": "dev"},'
             b' "request": {"host": "' + registry.host.encode() + b'"}}]}')
    with InProcessDaemon(settings, [policies], daemon_cls=GatedDaemon, gate=gate, settle=0.0,
                         recheck_after=3600.0) as running:
        daemon = running.daemon
        assert isinstance(daemon, GatedDaemon)
        wait_until(lambda: daemon.batches, timeout=10, what="the start-up cycle")
        for _ in range(5):  # five webhooks for app-a while the full cycle is held
            response = running.post("/webhooks/registry", event,
                                    {"Authorization": "Bearer coalesce-secret"})
            assert response.status_code == 202
        wait_until(lambda: daemon.queued() == (False, frozenset({"app-a"})), timeout=10,
                   what="the webhooks to be queued")
        gate.set()
        running.wait_cycles(2)
        queued_after = daemon.queued()
    assert daemon.batches == [["app-a", "app-b"], ["app-a"]]
    assert daemon.sources == ["poll", "webhook"]  # what the commits' Source trailer says
    assert queued_after == (False, frozenset())


# -- open pull requests gauge --------------------------------------------------------------

def test_open_pull_requests_gauge_survives_partial_and_failed_cycles(tmp_path: Path) -> None:
    """A webhook cycle covers a few apps and an environment can fail its forge call: neither
    may make the gauge forget the pull requests other environments still have open."""
    from image_updater.changes import Failure
    from image_updater.config.policies import load_text
    from image_updater.wiring.runtime import Runtime

    text = "---\n".join(
        f"app: {name}\nimage: r.example.com/{name}\ngit: {{url: 'file:///x'}}\n"
        "environments:\n  prod: {file: v.yaml, approval: pull-request}\n"
        for name in ("a", "b"))
    apps, problems = load_text(text, "prs.yaml")
    assert problems == []
    daemon = Daemon(settings=daemon_settings(tmp_path), policy_paths=[], apps=apps,
                    runtime=Runtime(daemon_settings(tmp_path),
                                    secrets=SecretRegistry()))
    registry = daemon.runtime.metrics.registry

    def gauge() -> float | None:
        return registry.get_sample_value("image_updater_pull_requests_open")

    daemon._track_pull_requests(apps, CycleResult(pull_requests={("a", "prod"): "pr/1",
                                                                  ("b", "prod"): "pr/2"}))
    assert gauge() == 2
    daemon._track_pull_requests(apps[:1], CycleResult())  # webhook cycle for a: a merged
    assert gauge() == 1
    forge_down = Failure(app="b", env="prod", reason="forge", message="503", temporary=True)
    daemon._track_pull_requests(apps, CycleResult(failures=[forge_down]))
    assert gauge() == 1  # b's pull request was not seen closed: still counted
    daemon._track_pull_requests(apps, CycleResult())
    assert gauge() == 0
