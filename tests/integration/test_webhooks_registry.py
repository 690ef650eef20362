"""Webhooks end to end: the real registry notifies the daemon, which commits at once.

The poll interval is an hour, so after the start-up cycle only a webhook can cause a
commit. The daemon never trusts a payload's digest: it re-reads the registry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import (
    DEV,
    InProcessDaemon,
    daemon_settings,
    metric_value,
    wait_until,
    write_policy,
)
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, free_port, push_image

pytestmark = pytest.mark.integration

SECRET = "hook-secret-5f2c9e"  # a test value, planted through the environment
SECRET_ENV = "TEST_IU_WEBHOOK_SECRET"
APP = "application-x"
WEBHOOKS = "image_updater_webhook_requests_total"


def notifications(port: int, secret: str) -> dict[str, Any]:
    """distribution's config for one endpoint (docs: 'Work with notifications')."""
    return {"notifications": {"endpoints": [{
        "name": "image-updater", "url": f"http://127.0.0.1:{port}/webhooks/registry",
        "headers": {"Authorization": [f"Bearer {secret}"]},
        "timeout": "1s", "threshold": 5, "backoff": "1s"}]}}


def push_event(host: str, repository: str, digest: str, tag: str = "dev") -> bytes:
    return json.dumps({"events": [{
        "id": "forged-1", "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": digest, "repository": repository, "tag": tag},
        "request": {"host": host}}]}).encode()


def dev_values(deploy: BareRepo) -> str:
    return deploy.show("master", DEV).decode()


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def deploy(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path)


def test_a_push_to_the_registry_is_committed_without_waiting_for_the_poll(
        tmp_path: Path, deploy: BareRepo) -> None:
    port = free_port()
    with RegistryServer(extra_config=notifications(port, SECRET)) as reg:
        policies = tmp_path / "policies"
        write_policy(policies, APP, f"{reg.host}/hook/application-x", f"file://{deploy.path}")
        settings = dataclasses.replace(daemon_settings(tmp_path, reg.host, secret_env=SECRET_ENV),
                                       listen=f"127.0.0.1:{port}")
        with InProcessDaemon(settings, [policies]) as running:
            running.wait_cycles(1)  # the start-up cycle: the tag does not exist yet
            head = deploy.head()
            for seed in ("first", "second"):
                digest = push_image(reg.url, "hook/application-x", "dev", seed=seed)
                wait_until(lambda d=digest: f"digest: {d}" in dev_values(deploy), timeout=10,
                           what=f"the webhook-triggered commit of {digest}")
            metrics = running.get("/metrics").text
            cycles = running.daemon.cycles
    assert deploy.head() != head
    assert int(git("rev-list", "--count", f"{head}..master", cwd=deploy.path)) == 2
    assert (metric_value(metrics, WEBHOOKS, source="registry", result="accepted") or 0) >= 2
    assert metric_value(metrics, WEBHOOKS, result="401") is None  # the registry authenticated
    assert cycles >= 3  # start-up + one per push; the hourly poll never fired


@pytest.fixture
def quiet_daemon(registry: RegistryServer, deploy: BareRepo, tmp_path: Path
                 ) -> Iterator[InProcessDaemon]:
    """A daemon watching the session registry, which sends no notifications itself."""
    policies = tmp_path / "policies"
    write_policy(policies, APP, f"{registry.host}/forge/application-x", f"file://{deploy.path}")
    settings = daemon_settings(tmp_path, registry.host, secret_env=SECRET_ENV,
                               max_body_bytes=4096)
    push_image(registry.url, "forge/application-x", "dev", seed="start")
    with InProcessDaemon(settings, [policies]) as running:
        running.wait_cycles(1)
        yield running


def test_bad_webhooks_are_refused_and_counted_by_result(
        quiet_daemon: InProcessDaemon, registry: RegistryServer, deploy: BareRepo) -> None:
    body = push_event(registry.host, "forge/application-x", "sha256:" + "a" * 64)
    head, cycles = deploy.head(), quiet_daemon.daemon.cycles
    cases = [
        ({}, body, 401),                                              # unauthenticated
        ({"Authorization": "Bearer wrong-secret"}, body, 401),        # wrong secret
        ({"Authorization": f"Bearer {SECRET}"}, b"x" * (1 << 20), 413),  # oversized
        ({"Authorization": f"Bearer {SECRET}"}, b"{not json", 400),   # malformed
        ({"Authorization": f"Bearer {SECRET}"},
         push_event(registry.host, "../../etc/passwd", "sha256:" + "a" * 64), 400),
    ]
    for headers, payload, status in cases:
        response = quiet_daemon.post("/webhooks/registry", payload, headers)
        assert response.status_code == status, (status, response.text)
    assert "webhook authentication failed" in quiet_daemon.post("/webhooks/registry", body).text
    assert quiet_daemon.post("/webhooks/nosuch", body).status_code == 404

    metrics = quiet_daemon.get("/metrics").text
    assert metric_value(metrics, WEBHOOKS, source="registry", result="401") == 3
    assert metric_value(metrics, WEBHOOKS, source="registry", result="413") == 1
    assert metric_value(metrics, WEBHOOKS, source="registry", result="400") == 2
    assert metric_value(metrics, WEBHOOKS, source="unknown", result="404") == 1
    assert metric_value(metrics, WEBHOOKS, result="accepted") is None
    assert quiet_daemon.daemon.cycles == cycles and deploy.head() == head  # nothing ran


def test_a_forged_digest_is_never_written(
        quiet_daemon: InProcessDaemon, registry: RegistryServer, deploy: BareRepo) -> None:
    real = push_image(registry.url, "forge/application-x", "dev", seed="real")
    forged = "sha256:" + "f" * 64  # in no registry
    response = quiet_daemon.post(
        "/webhooks/registry", push_event(registry.host, "forge/application-x", forged),
        {"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 202 and "1 app(s)" in response.text
    wait_until(lambda: f"digest: {real}" in dev_values(deploy), timeout=10,
               what="the commit of the registry's real digest")
    history = git("log", "-p", "--all", cwd=deploy.path)
    assert forged.removeprefix("sha256:") not in history
    quiet_daemon.wait_cycles(2)
    result = quiet_daemon.daemon.last_result
    assert result is not None and [c.digest for c in result.changes] == [real]
    # a payload about an unwatched repository (or another host) is accepted, matches nothing
    for host, repository in ((registry.host, "someone/else"),
                             ("elsewhere.example:5000", "forge/application-x")):
        response = quiet_daemon.post(
            "/webhooks/registry", push_event(host, repository, forged),
            {"Authorization": f"Bearer {SECRET}"})
        assert response.status_code == 202 and "0 app(s)" in response.text


def test_a_webhook_that_arrives_before_the_tag_moved_is_checked_again(
        registry: RegistryServer, deploy: BareRepo, tmp_path: Path) -> None:
    """distribution notifies before it links the tag; one re-check picks the push up."""
    policies = tmp_path / "policies"
    write_policy(policies, APP, f"{registry.host}/early/application-x", f"file://{deploy.path}")
    settings = daemon_settings(tmp_path, registry.host, secret_env=SECRET_ENV)
    with InProcessDaemon(settings, [policies], settle=0.0, recheck_after=2.0) as running:
        running.wait_cycles(1)
        early = push_event(registry.host, "early/application-x", "sha256:" + "e" * 64)
        assert running.post("/webhooks/registry", early,
                            {"Authorization": f"Bearer {SECRET}"}).status_code == 202
        running.wait_cycles(2)  # the webhook's cycle: the tag is not there yet
        result = running.daemon.last_result
        assert result is not None and [f.reason for f in result.failures] == ["not_found"]
        digest = push_image(registry.url, "early/application-x", "dev", seed="late")
        wait_until(lambda: f"digest: {digest}" in dev_values(deploy), timeout=10,
                   what="the re-check's commit")
        running.wait_cycles(3)
    assert running.daemon.cycles == 3  # one re-check only: it found the change
