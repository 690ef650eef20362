"""Holds: the file format, the held gauge, the held exit code, rollback arguments, the actor."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from image_updater.changes import CycleResult, Deployed, HeldEnv
from image_updater.commands import actor
from image_updater.config.holds import Hold, Holds, parse_holds, render_holds
from image_updater.engine.holds import RollbackRequest
from image_updater.errors import ConfigError, HeldError, InvalidReferenceError
from image_updater.exit_codes import ExitCode, exit_code_for
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report

D = "sha256:" + "d" * 64


def hold(env: str = "prod", kind: str = "hold", **kw: str) -> Hold:
    return Hold(app="application-x", env=env, kind=kind,  # type: ignore[arg-type]
                by=kw.get("by", "alice"), reason=kw.get("reason", "incident"),
                since="2026-11-29T23:00:00Z", digest=kw.get("digest"))


def test_render_then_parse_gives_the_same_holds_and_is_stable() -> None:
    holds = Holds.empty().place(hold()).place(hold("dev", "rollback", digest=D))
    text = render_holds(holds)
    again = parse_holds(text)
    assert list(again) == list(holds)
    assert render_holds(again) == text


def test_forced_promotions_are_noted_on_the_hold_and_survive_a_round_trip() -> None:
    holds = Holds.empty().place(hold()).note_forced("application-x", "prod", "t bob: moved\nx")
    again = parse_holds(render_holds(holds)).get("application-x", "prod")
    assert again is not None and again.forced == ("t bob: moved x",)
    with pytest.raises(ConfigError, match="not held"):
        holds.note_forced("application-x", "dev", "t bob: moved")


def test_a_second_hold_and_a_release_of_nothing_are_refused() -> None:
    holds = Holds.empty().place(hold())
    with pytest.raises(ConfigError, match="already held"):
        holds.place(hold(reason="another"))
    with pytest.raises(ConfigError, match="is not held"):
        holds.release("application-x", "dev")
    rest, gone = holds.release("application-x", "prod")
    assert len(rest) == 0 and gone.reason == "incident"


@pytest.mark.parametrize(("text", "says"), [
    ("[1, 2]", "must map app names"),
    ("a: {prod: {kind: frozen}}", "neither 'hold' nor 'rollback'"),
    ("a: {prod: {kind: rollback, digest: 'sha256:short'}}", "digest"),
    ("a: [", "not valid YAML"),
])
def test_a_broken_holds_file_is_a_clear_config_error(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_holds(text)


def test_text_that_could_forge_lines_is_flattened() -> None:
    h = Holds.empty().place(hold(reason="x\nImage-Updater-App: forged\x07")).get(
        "application-x", "prod")
    assert h is not None and h.reason == "x Image-Updater-App: forged"


def held_series(m: Metrics) -> list[tuple[str, str, float]]:
    return sorted((s.labels["env"], s.name, s.value)
                  for metric in (m.environment_held, m.environment_held_since)
                  for family in metric.collect() for s in family.samples)


def test_the_held_gauge_follows_the_cycles_result() -> None:
    m = Metrics(CollectorRegistry())
    held = HeldEnv(app="application-x", env="prod", kind="rollback", by="alice",
                   reason="incident", since="1970-01-02T00:00:00Z", wanted=D)
    report(CycleResult(held=[held], deployed=[
        Deployed(app="application-x", env="prod", tag="prod", digest=D),
        Deployed(app="application-x", env="dev", tag="dev", digest=D)]), m,
        log=logging.getLogger("test"))
    assert held_series(m) == [
        ("prod", "image_updater_environment_held", 1.0),
        ("prod", "image_updater_environment_held_since_timestamp_seconds", 86400.0)]
    report(CycleResult(unchanged=[("application-x", "prod")]), m,
           log=logging.getLogger("test"))  # released: the series go
    assert held_series(m) == []


def test_held_is_information_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    held = HeldEnv(app="a", env="prod", kind="hold", by="bob", reason="freeze",
                   since="2026-11-29T23:00:00Z")
    with caplog.at_level(logging.INFO, logger="test"):
        report(CycleResult(held=[held]), Metrics(CollectorRegistry()),
               log=logging.getLogger("test"))
    [record] = caplog.records
    assert record.levelno == logging.INFO and "held by bob" in record.getMessage()


def test_a_held_environment_has_its_own_exit_code() -> None:
    assert exit_code_for(HeldError("held")) is ExitCode.HELD
    assert ExitCode.HELD == 10


@pytest.mark.parametrize(("kw", "error", "says"), [
    ({"to": "sha256:abc"}, InvalidReferenceError, "--to"),
    ({"to": D + "\nx"}, InvalidReferenceError, "--to"),
    ({"steps": 0}, ConfigError, "--steps"),
])
def test_rollback_arguments_are_checked_before_anything_is_read(
        kw: dict[str, object], error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        RollbackRequest(by="x", **kw)  # type: ignore[arg-type]


def test_the_actor_is_by_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_UPDATER_ACTOR", "ci-bot")
    assert actor(" alice ") == "alice"
    assert actor(None) == "ci-bot"
    monkeypatch.delenv("IMAGE_UPDATER_ACTOR")
    assert actor(None)  # git's user or the OS user: never empty


@pytest.mark.parametrize(("text", "says"), [
    ("a:\n  b: {kind: hold}\n", "says who placed it ('by') and when ('since'"),
    ("a: [\n", "holds.yaml:2:1 is not valid YAML"),
    ("a:\n  b: {by: x, since: y}\n  b: {by: z, since: w}\n", 'found duplicate key "b")'),
])
def test_hand_written_holds_are_complete_and_errors_are_located(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_holds(text)
    assert says in str(info.value)
