"""Notifications against real HTTP receivers on 127.0.0.1.

Each receiver is an :class:`~tests.fixtures.http_stub.HttpStub`: it records what the sinks
really posted, so the tests check the documented shapes (Slack Block Kit, a Teams workflow
message with an Adaptive Card, CloudEvents 1.0 structured JSON) and verify the HMAC
signature as a receiver would. Receivers that are down, answer 500 or hang show that
delivery is retried in the background and never delays a cycle; the webhook URLs carry
planted secrets that must never reach a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_updater.config.settings import (
    NotificationRouteSettings,
    NotificationSettings,
    NotificationSinkSettings,
)
from image_updater.errors import ConfigError
from image_updater.notify.dispatcher import Dispatcher
from image_updater.notify.events import Event
from image_updater.notify.factory import build_dispatcher
from image_updater.observability.metrics import Metrics
from image_updater.secrets import SecretRegistry
from tests.fixtures.daemon import (
    InProcessDaemon,
    ManualTime,
    daemon_settings,
    wait_until,
    write_policy,
)
from tests.fixtures.gitrepo import VALUES_FILES, make_bare_repo, push_other_commit
from tests.fixtures.http_stub import HttpStub, Recorded, Reply
from tests.fixtures.registry import RegistryServer, free_port, push_image

pytestmark = pytest.mark.integration

KEY = "hmac-key-planted-7f3e"
#: the secret part of each webhook URL (Slack's look like /services/T…/B…/<token>)
TOKENS = {"slack": "/services/T01/B02/slack-token-planted-91ab",
          "teams": "/workflows/teams-token-planted-55cd/triggers/manual/run",
          "cloudevents": "/hooks/ce-token-planted-03ef"}
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
EVENT = Event("environment.updated", "web", "prod", "web/prod updated to 1.2.3.", T0,
              (("tag", "1.2.3"), ("digest", "sha256:" + "b" * 64)), link="https://forge/c/1")


def sink(tmp: Path, name: str, kind: str, url: str, **extra: object) -> NotificationSinkSettings:
    """A sink whose URL (and key) come from files, as a mounted Kubernetes secret gives them."""
    url_file = tmp / f"{name}.url"
    url_file.write_text(url + "\n")
    key_file = tmp / f"{name}.key"
    key_file.write_text(KEY + "\n")
    options: dict[str, object] = {"backoff": 0.01, "max_attempts": 3, "timeout": 5.0, **extra}
    if kind == "cloudevents":
        options.update(secret_file=str(key_file), source="/image-updater/test")
    return NotificationSinkSettings(name=name, kind=kind, url_file=str(url_file),
                                    **options)  # type: ignore[arg-type]


def deliver(settings: NotificationSettings, events: Sequence[Event], *, metrics: Metrics,
            secrets: SecretRegistry | None = None, wait: float = 20.0) -> float:
    """Publish ``events`` through a dispatcher built from ``settings`` and let it deliver;
    returns how long ``publish`` itself took (seconds)."""

    async def run() -> float:
        registry = secrets if secrets is not None else SecretRegistry()
        dispatcher = build_dispatcher(settings, secrets=registry, metrics=metrics)
        assert isinstance(dispatcher, Dispatcher)
        dispatcher.start()
        started = time.perf_counter()
        dispatcher.publish(events)
        took = time.perf_counter() - started
        await dispatcher.flush(wait)
        await dispatcher.aclose()
        return took

    return asyncio.run(run())


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"image_updater_{name}_total", labels) or 0.0


@pytest.fixture
def receiver() -> HttpStub:
    with HttpStub() as stub:
        yield stub


def test_each_sink_posts_its_documented_shape_and_cloudevents_are_signed(
        receiver: HttpStub, tmp_path: Path) -> None:
    for kind, path in TOKENS.items():
        receiver.add("POST", path, Reply(202 if kind == "teams" else 200))
    settings = NotificationSettings(sinks=tuple(
        sink(tmp_path, kind, kind, receiver.url + path) for kind, path in TOKENS.items()))
    metrics = Metrics()
    deliver(settings, [EVENT], metrics=metrics)

    slack = one(receiver, TOKENS["slack"])
    body = json.loads(slack.body)
    assert slack.headers["content-type"] == "application/json"
    assert body["text"] == EVENT.summary
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]

    teams = json.loads(one(receiver, TOKENS["teams"]).body)
    (attachment,) = teams["attachments"]
    assert (teams["type"], attachment["contentType"]) == (
        "message", "application/vnd.microsoft.card.adaptive")
    assert (attachment["content"]["type"], attachment["content"]["version"]) == (
        "AdaptiveCard", "1.4")

    ce = one(receiver, TOKENS["cloudevents"])
    assert ce.headers["content-type"] == "application/cloudevents+json"
    signed = ce.headers["x-image-updater-signature-256"]
    expected = "sha256=" + hmac.new(KEY.encode(), ce.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signed, expected)  # the receiver's check, over the raw body
    event = json.loads(ce.body)
    assert {k: event[k] for k in ("specversion", "source", "type", "time",
                                  "datacontenttype")} == {
        "specversion": "1.0", "source": "/image-updater/test",
        "type": "io.image-updater.environment.updated", "time": "2026-11-30T12:00:00Z",
        "datacontenttype": "application/json"}
    assert event["id"] and event["data"]["app"] == "web" and event["data"]["tag"] == "1.2.3"
    assert count(metrics, "notification_deliveries", sink="cloudevents", result="ok") == 1


def one(stub: HttpStub, path: str) -> Recorded:
    (request,) = stub.requests_to("POST", path)
    return request


def test_a_500_is_retried_with_the_same_event_and_a_dead_receiver_is_given_up(
        receiver: HttpStub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="image_updater")
    path = TOKENS["cloudevents"]
    receiver.add("POST", path, Reply(500), Reply(503, {"Retry-After": "0"}), Reply(200))
    down = f"http://127.0.0.1:{free_port()}{TOKENS['slack']}"  # nobody listens there
    settings = NotificationSettings(sinks=(
        sink(tmp_path, "flaky", "cloudevents", receiver.url + path),
        sink(tmp_path, "down", "slack", down)))
    metrics = Metrics()
    deliver(settings, [EVENT], metrics=metrics)

    bodies = [r.body for r in receiver.requests_to("POST", path)]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # same bytes, same CloudEvents id
    assert count(metrics, "notification_deliveries", sink="flaky", result="ok") == 1
    assert count(metrics, "notification_deliveries", sink="down", result="failed") == 1
    assert "sink 'down' failed (ConnectError), attempt 2/3; will retry" in caplog.text
    assert "sink 'down' could not be reached (ConnectError)" in caplog.text


def test_a_full_queue_drops_and_counts_without_waiting(
        receiver: HttpStub, tmp_path: Path) -> None:
    release = threading.Event()

    def hang(_: Recorded) -> Reply:
        release.wait(timeout=10)
        return Reply(200)

    receiver.handle("POST", TOKENS["slack"], hang)
    settings = NotificationSettings(
        queue_size=2, sinks=(sink(tmp_path, "team", "slack", receiver.url + TOKENS["slack"]),))
    metrics = Metrics()
    events = [replace(EVENT, env=f"env{i}") for i in range(5)]
    threading.Timer(0.5, release.set).start()
    took = deliver(settings, events, metrics=metrics)

    assert took < 0.1  # publish never waits for a receiver
    assert count(metrics, "notifications_dropped", sink="team") == 3
    assert [json.loads(r.body)["text"] for r in receiver.requests] == [
        "web/prod updated to 1.2.3.", "web/prod updated to 1.2.3."]
    assert count(metrics, "notification_deliveries", sink="team", result="ok") == 2


def test_routes_send_each_event_only_where_it_is_wanted(
        receiver: HttpStub, tmp_path: Path) -> None:
    receiver.add("POST", TOKENS["slack"], Reply(200))
    receiver.add("POST", TOKENS["teams"], Reply(202))
    settings = NotificationSettings(
        sinks=(sink(tmp_path, "team", "slack", receiver.url + TOKENS["slack"]),
               sink(tmp_path, "ops", "teams", receiver.url + TOKENS["teams"])),
        routes=(NotificationRouteSettings(sink="team", envs=("dev",)),
                NotificationRouteSettings(sink="ops", events=("environment.updated",))))
    deliver(settings, [EVENT, replace(EVENT, env="dev", kind="environment.held")],
            metrics=Metrics())
    assert [json.loads(r.body)["text"] for r in receiver.requests_to("POST", TOKENS["slack"])
            ] == [EVENT.summary]
    assert len(receiver.requests_to("POST", TOKENS["teams"])) == 1


def test_planted_webhook_urls_and_keys_never_reach_the_logs(
        receiver: HttpStub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="image_updater")
    receiver.add("POST", TOKENS["slack"], Reply(404, body=b"no_service"))
    receiver.add("POST", TOKENS["cloudevents"], Reply(500, body=b"oops"))
    down = f"http://127.0.0.1:{free_port()}{TOKENS['teams']}"
    settings = NotificationSettings(
        queue_size=1,
        sinks=(sink(tmp_path, "team", "slack", receiver.url + TOKENS["slack"]),
               sink(tmp_path, "ops", "teams", down),
               sink(tmp_path, "audit", "cloudevents", receiver.url + TOKENS["cloudevents"])))
    secrets = SecretRegistry()
    deliver(settings, [EVENT, EVENT], metrics=Metrics(), secrets=secrets)

    assert "refused the event with HTTP 404 (no_service)" in caplog.text
    assert "answered HTTP 500 (oops)" in caplog.text
    assert "dropped: the queue of sink 'ops' is full" in caplog.text
    for token in (*TOKENS.values(), KEY):
        assert token not in caplog.text
    assert secrets.mask(down) == "***"  # registered: the log handler masks it too


def test_an_unreadable_url_file_is_a_settings_error_at_start(tmp_path: Path) -> None:
    broken = NotificationSettings(sinks=(NotificationSinkSettings(
        name="team", kind="slack", url_file=str(tmp_path / "missing")),))
    with pytest.raises(ConfigError, match=r"notifications.sinks\[team\].url_file"):
        build_dispatcher(broken, secrets=SecretRegistry(), metrics=Metrics())


def test_a_hanging_receiver_delays_no_cycle_and_is_retried(
        registry: RegistryServer, receiver: HttpStub, tmp_path: Path) -> None:
    release = threading.Event()
    replies = iter([Reply(500), Reply(200)])

    def hang_then_answer(_: Recorded) -> Reply:
        release.wait(timeout=20)
        return next(replies)

    receiver.handle("POST", TOKENS["slack"], hang_then_answer)
    deploy = make_bare_repo(tmp_path)
    push_image(registry.url, "notify/web", "dev", seed="n")
    policies = tmp_path / "policies"
    write_policy(policies, "application-x", f"{registry.host}/notify/web",
                 f"file://{deploy.path}")
    settings = replace(daemon_settings(tmp_path, registry.host), notifications=(
        NotificationSettings(flush_timeout=5.0, sinks=(
            sink(tmp_path, "team", "slack", receiver.url + TOKENS["slack"], timeout=30.0),))))
    with InProcessDaemon(settings, [policies]) as running:
        running.wait_cycles(1)
        # the cycle is over while the receiver still holds the first delivery
        assert len(receiver.requests) <= 1 and not release.is_set()
        assert running.daemon.last_result is not None
        assert len(running.daemon.last_result.changes) == 1
        release.set()
        wait_until(lambda: len(receiver.requests) == 2, timeout=20, what="the retry")
        wait_until(lambda: count(running.metrics, "notification_deliveries", sink="team",
                                 result="ok") == 1, timeout=20, what="the delivery")
    texts = [json.loads(r.body)["text"] for r in receiver.requests]
    assert texts[0] == texts[1] and texts[0].startswith("application-x/dev updated to dev")


def test_commands_tell_what_a_person_did(
        registry: RegistryServer, receiver: HttpStub, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """hold, a promotion refused by it, release and the promotion: each told once, before
    the command exits."""
    from image_updater.cli import main

    receiver.add("POST", TOKENS["slack"], Reply(200))
    repo = "notify/commands"
    deploy = make_bare_repo(tmp_path / "remotes")
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        f"app: shop\nimage: {registry.host}/{repo}\n"
        f"git: {{url: \"file://{deploy.path}\", branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n  dev: {file: application-x/values-dev.yaml, tag: dev}\n"
        "  prod: {file: application-x/values-staging.yaml, tag: prod}\n")
    url_file = tmp_path / "slack.url"
    url_file.write_text(receiver.url + TOKENS["slack"])
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "registries": [{"host": registry.host, "insecure": True}],
        "cache_dir": str(tmp_path / "cache"),
        "notifications": {"sinks": [{"name": "team", "kind": "slack",
                                     "url_file": str(url_file)}]}}))
    digest = push_image(registry.url, repo, "dev", seed="c1")
    push_image(registry.url, repo, "prod", seed="c0")
    assert main(["once", "--config", str(config), "--policies", str(policies)]) == 0

    def cli(*args: str) -> int:
        return main([*args, "--by", "ana", "--config", str(config), "--policies",
                     str(policies)])

    promote = ["promote", "shop", "--from", "dev", "--to", "prod", "--digest", digest,
               "--config", str(config), "--policies", str(policies)]
    assert cli("hold", "shop", "prod", "--reason", "freeze") == 0
    assert main(promote) != 0
    assert cli("release", "shop", "prod") == 0
    assert main(promote) == 0
    capsys.readouterr()

    sent = [json.loads(r.body) for r in receiver.requests_to("POST", TOKENS["slack"])]
    headers = [b["blocks"][0]["text"]["text"] for b in sent]
    assert headers == ["shop/prod: hold.placed", "shop/prod: promotion.refused",
                       "shop/prod: hold.released", "shop/prod: promotion.done"]
    assert "held by ana" in sent[1]["text"] and digest in sent[3]["text"]


def test_an_environment_failing_past_the_threshold_is_told_once_and_so_is_its_recovery(
        registry: RegistryServer, receiver: HttpStub, tmp_path: Path) -> None:
    """The daemon keeps the first failure's time in memory and reads its own clock."""
    receiver.add("POST", TOKENS["slack"], Reply(200))
    deploy = make_bare_repo(tmp_path, files={"README.md": "no values yet\n"})
    push_image(registry.url, "notify/failing", "dev", seed="f")
    policies = tmp_path / "policies"
    write_policy(policies, "application-x", f"{registry.host}/notify/failing",
                 f"file://{deploy.path}")
    settings = replace(daemon_settings(tmp_path, registry.host), notifications=(
        NotificationSettings(failing_after=5400, sinks=(
            sink(tmp_path, "team", "slack", receiver.url + TOKENS["slack"]),))))
    time_ = ManualTime()
    with InProcessDaemon(settings, [policies], clock=time_, schedule=time_) as running:
        running.wait_cycles(1)
        time_.advance(3600)
        running.wait_cycles(2)
        quiet = sent_texts(receiver)  # failing for 3600 s: under the threshold
        time_.advance(3600)
        running.wait_cycles(3)
        wait_until(lambda: sent_texts(receiver), timeout=20, what="the failing event")
        push_other_commit(f"file://{deploy.path}", tmp_path, VALUES_FILES, "the values file")
        time_.advance(3600)
        running.wait_cycles(4)
        wait_until(lambda: len(sent_texts(receiver)) == 3, timeout=20, what="two more events")
        texts = sent_texts(receiver)
    assert quiet == []
    assert texts[0] == "application-x/dev has been failing for 120 min (values)."
    assert texts[1].startswith("application-x/dev updated to dev")
    assert texts[2] == ("application-x/dev works again (it failed since "
                        f"{datetime.fromtimestamp(1_000_000.0, UTC).isoformat()}).")


def sent_texts(stub: HttpStub) -> list[str]:
    return [json.loads(r.body)["text"] for r in stub.requests_to("POST", TOKENS["slack"])]
