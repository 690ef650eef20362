"""Events from cycle results and the memory across cycles; routing; the payload shapes. Pure."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from image_updater.changes import (
    Change,
    CycleResult,
    Failure,
    HeldEnv,
    KeyChange,
    PullRequestAction,
)
from image_updater.config.settings import load_settings
from image_updater.errors import ConfigError
from image_updater.notify import payloads
from image_updater.notify.events import (
    EVENT_KINDS,
    CycleWatch,
    Event,
    Route,
    cycle_events,
    sinks_for,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCOPE = [("web", "dev"), ("web", "prod")]


def change(env: str = "dev", via: Literal["commit", "pull-request"] = "commit") -> Change:
    return Change(app="web", env=env, file=f"web/values-{env}.yaml", image="ghcr.io/o/web",
                  tag="1.2.3", digest="sha256:" + "a" * 64,
                  keys=(KeyChange("image.tag", "1.2.2", "1.2.3"),), why="newest semver",
                  via=via)


def failure(env: str = "prod") -> Failure:
    return Failure(app="web", env=env, reason="registry_unavailable",
                   message="the registry answered 503.", temporary=True, image="ghcr.io/o/web")


def test_a_commit_is_an_update_and_pull_request_actions_are_their_own_events() -> None:
    result = CycleResult(changes=[change("dev"), change("prod", via="pull-request")],
                         pull_request_actions=[
                             PullRequestAction("web", "prod", "ghcr.io/o/web", "opened",
                                               "https://forge/pr/1", "newest semver"),
                             PullRequestAction("web", "qa", "ghcr.io/o/web", "declined",
                                               "https://forge/pr/0", "closed by a person")])
    events = cycle_events(result, now=T0)
    assert [(e.kind, e.env, e.link) for e in events] == [
        ("environment.updated", "dev", ""),
        ("pull_request.opened", "prod", "https://forge/pr/1"),
        ("pull_request.closed", "qa", "https://forge/pr/0"),
    ]
    assert dict(events[0].details)["digest"] == "sha256:" + "a" * 64


def test_a_dry_run_tells_nobody() -> None:
    assert cycle_events(CycleResult(changes=[change()], dry_run=True), now=T0) == []


def test_failing_is_told_once_after_the_threshold_and_recovery_once() -> None:
    watch = CycleWatch(failing_after=timedelta(hours=1))
    failing = CycleResult(failures=[failure()])
    seen = []
    for minutes in (0, 30, 60, 90):
        seen.append([e.kind for e in watch.events(failing, now=T0 + timedelta(minutes=minutes),
                                                  covered=SCOPE)])
    recovered = watch.events(CycleResult(unchanged=[("web", "prod")]),
                             now=T0 + timedelta(minutes=95), covered=SCOPE)
    assert seen == [[], [], ["environment.failing"], []]
    assert [(e.kind, e.env) for e in recovered] == [("environment.recovered", "prod")]


def test_a_short_failure_recovers_silently_and_other_apps_keep_their_clock() -> None:
    watch = CycleWatch(failing_after=timedelta(minutes=10))
    watch.events(CycleResult(failures=[failure()]), now=T0, covered=SCOPE)
    # a webhook cycle of another app does not end web/prod's failure
    assert watch.events(CycleResult(), now=T0 + timedelta(minutes=5), covered=[("api", "dev")]
                        ) == []
    later = watch.events(CycleResult(failures=[failure()]), now=T0 + timedelta(minutes=11),
                         covered=SCOPE)
    assert [e.kind for e in later] == ["environment.failing"]
    assert "failing for 11 min" in later[0].summary


def test_a_hold_is_told_when_first_seen_only() -> None:
    watch = CycleWatch(failing_after=timedelta(hours=1))
    held = CycleResult(held=[HeldEnv("web", "prod", "hold", "ana", "incident 42",
                                     "2026-11-30T11:00:00Z")])
    first = watch.events(held, now=T0, covered=SCOPE)
    again = watch.events(held, now=T0, covered=SCOPE)
    watch.events(CycleResult(), now=T0, covered=SCOPE)  # released
    held_anew = watch.events(held, now=T0, covered=SCOPE)
    assert [e.kind for e in first] == ["environment.held"] and again == []
    assert [e.kind for e in held_anew] == ["environment.held"]


def test_a_pull_request_that_disappears_with_the_env_current_was_merged() -> None:
    watch = CycleWatch(failing_after=timedelta(hours=1))
    watch.events(CycleResult(pull_requests={("web", "prod"): "https://forge/pr/7"}), now=T0,
                 covered=SCOPE)
    merged = watch.events(CycleResult(unchanged=[("web", "prod")]), now=T0, covered=SCOPE)
    assert [(e.kind, e.link) for e in merged] == [("pull_request.merged", "https://forge/pr/7")]
    assert watch.events(CycleResult(unchanged=[("web", "prod")]), now=T0, covered=SCOPE) == []


def test_a_pull_request_we_closed_is_not_called_merged() -> None:
    watch = CycleWatch(failing_after=timedelta(hours=1))
    watch.events(CycleResult(pull_requests={("web", "prod"): "https://forge/pr/7"}), now=T0,
                 covered=SCOPE)
    closed = CycleResult(unchanged=[("web", "prod")], pull_request_actions=[
        PullRequestAction("web", "prod", "img", "closed", "https://forge/pr/7", "obsolete")])
    assert [e.kind for e in watch.events(closed, now=T0, covered=SCOPE)] == [
        "pull_request.closed"]


EVENT = Event("environment.updated", "web", "dev", "web/dev updated to 1.2.3 <!channel>.", T0,
              (("tag", "1.2.3"), ("digest", "sha256:abc"), ("empty", "")),
              link="https://forge/c/1")


@pytest.mark.parametrize(("route", "wanted"), [
    (Route(sink="all"), True),
    (Route(sink="x", apps=frozenset({"web"}), envs=frozenset({"dev"})), True),
    (Route(sink="x", envs=frozenset({"prod"})), False),
    (Route(sink="x", events=frozenset({"environment.failing"})), False),
    (Route(sink="x", apps=frozenset({"api"})), False),
])
def test_routes_filter_by_app_env_and_event(route: Route, wanted: bool) -> None:
    assert route.accepts(EVENT) is wanted


def test_an_event_goes_to_each_sink_once() -> None:
    routes = [Route(sink="slack"), Route(sink="teams", envs=frozenset({"prod"})),
              Route(sink="slack", events=frozenset({"environment.updated"}))]
    assert sinks_for(EVENT, routes) == ["slack"]


def test_slack_has_blocks_and_a_plain_fallback_with_markup_escaped() -> None:
    body = payloads.slack(EVENT)
    assert body["text"] == EVENT.summary
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "context"]
    summary = body["blocks"][1]["text"]
    assert summary["type"] == "mrkdwn" and "&lt;!channel&gt;" in summary["text"]
    assert "<https://forge/c/1|Open>" in summary["text"]
    assert [f["text"] for f in body["blocks"][2]["fields"]] == [
        "*tag*\n1.2.3", "*digest*\nsha256:abc"]


def test_teams_wraps_one_adaptive_card_1_4_in_a_message() -> None:
    body = payloads.teams(EVENT)
    (attachment,) = body["attachments"]
    card = attachment["content"]
    assert (body["type"], attachment["contentType"]) == (
        "message", "application/vnd.microsoft.card.adaptive")
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert {"title": "tag", "value": "1.2.3"} in card["body"][2]["facts"]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open",
                                "url": "https://forge/c/1"}]


def test_a_cloudevent_has_the_required_attributes_and_a_verifiable_signature() -> None:
    event = payloads.cloudevent(EVENT, source="/image-updater/prod", event_id="id-1")
    assert event == {
        "specversion": "1.0", "id": "id-1", "source": "/image-updater/prod",
        "type": "io.image-updater.environment.updated", "subject": "web/dev",
        "time": "2026-11-30T12:00:00Z", "datacontenttype": "application/json",
        "data": {"app": "web", "env": "dev", "summary": EVENT.summary, "severity": "info",
                 "link": "https://forge/c/1", "tag": "1.2.3", "digest": "sha256:abc",
                 "empty": ""},
    }
    body = payloads.encode(event)
    expected = hmac.new(b"k3y-k3y", body, hashlib.sha256).hexdigest()
    assert payloads.signature(body, "k3y-k3y") == f"sha256={expected}"
    assert json.loads(body) == event


SINKS = """\
notifications:
  failing_after: 600
  sinks:
    - {name: team, kind: slack, url_file: /run/secrets/slack}
    - {name: audit, kind: cloudevents, url_env: AUDIT_URL, secret_env: AUDIT_KEY}
  routes:
    - {sink: team, envs: [prod], events: [environment.updated, environment.failing]}
    - {sink: audit}
"""


def test_notification_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(SINKS)
    notifications = load_settings(path, environ={}).notifications
    assert notifications.failing_after == 600
    assert [(s.name, s.kind) for s in notifications.sinks] == [
        ("team", "slack"), ("audit", "cloudevents")]
    assert notifications.routes[0].events == ("environment.updated", "environment.failing")


BAD_SINKS = """\
notifications:
  sinks:
    - {name: team, kind: discord, url_file: a, url_env: B}
    - {name: audit, kind: cloudevents, url_env: AUDIT_URL}
  routes:
    - {sink: nobody, events: [environment.exploded]}
"""


def test_notification_mistakes_are_settings_errors(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(BAD_SINKS)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    assert text.startswith("5 problem(s)")
    for part in ("'discord' is not known", "exactly one of url_file and url_env",
                 "signs its events", "no sink is named 'nobody'",
                 "environment.exploded not known"):
        assert part in text
    assert len(EVENT_KINDS) == 13


def test_webhook_urls_and_keys_are_secrets_masked_from_the_first_log_line(
        tmp_path: Path) -> None:
    from image_updater.config.settings import secret_sources

    path = tmp_path / "settings.yaml"
    path.write_text(SINKS)
    envs, files = secret_sources(load_settings(path, environ={}))
    assert ("notifications.sinks[audit].url_env", "AUDIT_URL") in envs
    assert ("notifications.sinks[audit].secret_env", "AUDIT_KEY") in envs
    assert ("notifications.sinks[team].url_file", "/run/secrets/slack") in files
