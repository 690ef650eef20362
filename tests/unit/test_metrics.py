"""Metrics, and :func:`report`, the one function that turns a cycle's result into them.

The deployed-image info metric keeps exactly one series per app and environment.
"""

from __future__ import annotations

import logging
from typing import Literal

import pytest
from prometheus_client import CollectorRegistry

from image_updater.changes import (
    Change,
    CycleResult,
    Deployed,
    Failure,
    KeyChange,
    PullRequestAction,
    PushAttempt,
    Verification,
)
from image_updater.observability.metrics import Metrics
from image_updater.observability.report import report

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def series(m: Metrics) -> list[dict[str, str]]:
    return [s.labels for metric in m.deployed.collect() for s in metric.samples]


def test_set_deployed_replaces_the_previous_series_of_that_env_only() -> None:
    m = Metrics(CollectorRegistry())
    m.set_deployed("app", "dev", "dev", "sha256:" + "a" * 64)
    m.set_deployed("app", "prod", "prod", "sha256:" + "b" * 64)
    m.set_deployed("app", "dev", "dev", "sha256:" + "c" * 64)
    m.set_deployed("app", "dev", "dev", "sha256:" + "c" * 64)  # unchanged: no churn
    got = sorted((s["env"], s["digest"][-1]) for s in series(m))
    assert got == [("dev", "c"), ("prod", "b")]


def _change(env: str, via: Literal["commit", "pull-request"] = "commit") -> Change:
    return Change(app="app", env=env, file=f"values-{env}.yaml", image="r.example/app",
                  tag=env, digest=A, keys=(KeyChange("image.digest", B, A),),
                  why=f"tag {env} points at {A[:19]}…", via=via)


def a_result(*, dry_run: bool = False) -> CycleResult:
    return CycleResult(
        changes=[_change("dev"), _change("prod", via="pull-request")],
        failures=[Failure(app="app", env="qa", reason="not_found", message="tag qa not found.",
                          temporary=False, image="r.example/app")],
        pushes=[PushAttempt(repository="file:///deploy.git", branch="master", result="ok",
                            sha="1" * 40)],
        pull_request_actions=[PullRequestAction(
            app="app", env="prod", image="r.example/app", action="opened",
            url="https://forge/pr/1", why="tag prod points at …", digest=A)],
        verifications=[Verification(registry="r.example", repository="app", digest=A,
                                    result="ok")],
        deployed=[Deployed(app="app", env="dev", tag="dev", digest=A)],
        dry_run=dry_run)


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_report_counts_and_logs_everything_the_result_holds(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    m = Metrics(CollectorRegistry())
    report(a_result(), m, retry_hint="in 120 s (next cycle)")
    assert sample(m, "image_updater_updates_total", app="app", env="dev", mode="commit") == 1
    assert sample(m, "image_updater_updates_total", app="app", env="prod", mode="pr") == 1
    assert sample(m, "image_updater_updates_total", app="app", env="prod", mode="commit") is None
    assert sample(m, "image_updater_errors_total", app="app", env="qa",
                  reason="not_found") == 1
    assert sample(m, "image_updater_git_pushes_total", result="ok") == 1
    assert sample(m, "image_updater_verifications_total", result="ok") == 1
    assert series(m) == [{"app": "app", "env": "dev", "tag": "dev", "digest": A}]
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("image_updater.reconcile", "ERROR", "tag qa not found; will retry in 120 s (next cycle)"),
        ("image_updater.reconcile", "INFO", f"committed values-dev.yaml: tag dev points at "
                                            f"{A[:19]}…"),
        ("image_updater.approval", "INFO", "opened pull request https://forge/pr/1: tag prod "
                                           "points at …"),
    ]


def test_report_of_a_dry_run_counts_no_update_and_can_leave_failures_to_the_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    m = Metrics(CollectorRegistry())
    report(a_result(dry_run=True), m, log_outcomes=False)
    assert sample(m, "image_updater_updates_total", app="app", env="dev", mode="commit") is None
    assert sample(m, "image_updater_errors_total", app="app", env="qa",
                  reason="not_found") == 1  # counted, but printed by the caller only
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.getMessage().startswith("committed")]
