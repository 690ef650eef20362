"""Prometheus metrics. Every metric takes its ``registry`` so tests build a fresh one.

Labels are bounded: app and env come from policy files (operator-controlled), registry is
a configured host, status is an HTTP status class or code, reason is an error's ``reason``.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "image_updater"


class Metrics:
    def exposition(self) -> tuple[bytes, str]:
        """The text served at ``/metrics``, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.registry_requests = Counter(
            f"{PREFIX}_registry_requests", "Registry API requests by registry, method and status.",
            ["registry", "method", "status"], registry=r)
        self.registry_latency = Histogram(
            f"{PREFIX}_registry_request_duration_seconds", "Registry API request latency.",
            ["registry", "method"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.cycle_duration = Histogram(
            f"{PREFIX}_cycle_duration_seconds", "Wall time of one reconcile cycle.", registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.last_success = Gauge(
            f"{PREFIX}_last_successful_cycle_timestamp_seconds",
            "Unix time at which the last cycle finished without a cycle-wide error.", registry=r)
        self.images_watched = Gauge(
            f"{PREFIX}_images_watched", "App environments watched (tracked tags).", registry=r)
        self.updates = Counter(
            f"{PREFIX}_updates", "Values-file updates by app, env and mode (commit or pr).",
            ["app", "env", "mode"], registry=r)
        self.errors = Counter(
            f"{PREFIX}_errors", "Errors by app, env and reason.", ["app", "env", "reason"],
            registry=r)
        self.git_pushes = Counter(
            f"{PREFIX}_git_pushes", "Git pushes by result (ok, rejected_retried, failed).",
            ["result"], registry=r)
        self.pull_requests_open = Gauge(
            f"{PREFIX}_pull_requests_open", "Open pull requests managed by image-updater.",
            registry=r)
        self.deployed = Gauge(
            f"{PREFIX}_deployed_image_info",
            "1 for the tag and digest each app's environment is set to in git.",
            ["app", "env", "tag", "digest"], registry=r)
        self.verifications = Counter(
            f"{PREFIX}_verifications", "Digests fetched and hashed again before they are "
            "written or proposed, by result (ok, mismatch, failed).", ["result"], registry=r)
        self.webhooks = Counter(
            f"{PREFIX}_webhook_requests", "Webhook requests by source and result.",
            ["source", "result"], registry=r)
        self._deployed_now: dict[tuple[str, str], tuple[str, str]] = {}
        self._deployed_lock = threading.Lock()  # cycles publish from worker threads

    def set_deployed(self, app: str, env: str, tag: str, digest: str) -> None:
        """Keep exactly one info series per app/env (the old one is removed). O(1): the
        series exported for each app/env are indexed here, not found by collecting."""
        with self._deployed_lock:
            old = self._deployed_now.get((app, env))
            if old == (tag, digest):
                return
            if old is not None:
                self.deployed.remove(app, env, *old)
            self.deployed.labels(app=app, env=env, tag=tag, digest=digest).set(1)
            self._deployed_now[(app, env)] = (tag, digest)
