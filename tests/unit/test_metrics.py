"""The deployed-image info metric: exactly one series per app and environment."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from image_updater.observability.metrics import Metrics


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

