"""A followed tag that does not exist yet is reported once, at info, and counted nowhere."""

from __future__ import annotations

import io
import logging

import pytest
from prometheus_client import CollectorRegistry

from image_updater.changes import CycleResult, Waiting
from image_updater.commands import print_result
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report
from image_updater.secrets import SecretRegistry


def test_waiting_is_logged_at_info_and_not_counted_as_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    result = CycleResult(waiting=[Waiting(app="x", env="prod", tag="prod", image="r/x")])
    with caplog.at_level(logging.DEBUG):
        report(result, Metrics(registry))
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("x/prod waits for tag prod: it does not exist yet")
    errors = [s for m in registry.collect() if m.name == "image_updater_errors"
              for s in m.samples if s.name.endswith("_total")]
    assert errors == []


def test_once_prints_waiting_once_and_no_failure() -> None:
    out = io.StringIO()
    result = CycleResult(waiting=[Waiting(app="x", env="prod", tag="prod")])
    print_result(result, dry_run=False, secrets=SecretRegistry(), out=out)
    assert out.getvalue().splitlines() == [
        "waiting x/prod: tag prod does not exist yet (nothing promoted there so far)",
        "no changes (0 environments up to date)"]
