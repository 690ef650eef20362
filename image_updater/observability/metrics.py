"""Prometheus metrics. Every metric takes its ``registry`` so tests build a fresh one.

Labels are bounded: app and env come from policy files (operator-controlled), registry is
a configured host, status is an HTTP status class or code, reason is an error's ``reason``.
"""

from __future__ import annotations

import contextlib
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
        self.verification_failures = Counter(
            f"{PREFIX}_verification_failures", "Digests refused by an environment's signature "
            "gate (policy verify), by app, env and reason (unsigned, wrong-key, wrong-digest, "
            "wrong-identity, tampered, malformed).", ["app", "env", "reason"], registry=r)
        self.webhooks = Counter(
            f"{PREFIX}_webhook_requests", "Webhook requests by source and result.",
            ["source", "result"], registry=r)
        self.api_requests = Counter(
            f"{PREFIX}_api_requests", "Requests to the daemon's API and status page "
            "(/api/v1/..., /) by route and HTTP status code.", ["route", "code"], registry=r)
        self.api_promotions = Counter(
            f"{PREFIX}_api_promotions", "Promotions asked of the API by outcome: promoted, "
            "already, or the refusal's reason (conflict, held, unverified, unauthenticated, "
            "permission_denied, usage, ...).", ["outcome"], registry=r)
        self.environment_held = Gauge(
            f"{PREFIX}_environment_held", "1 while an app's environment is held (image-updater "
            "hold or rollback): the daemon writes and proposes nothing for it.",
            ["app", "env", "kind"], registry=r)
        self.environment_held_since = Gauge(
            f"{PREFIX}_environment_held_since_timestamp_seconds",
            "Unix time at which the hold on an app's environment was placed.",
            ["app", "env"], registry=r)
        self.notification_deliveries = Counter(
            f"{PREFIX}_notification_deliveries", "Notifications handled by sink and result "
            "(ok, failed: given up after retries or refused).", ["sink", "result"], registry=r)
        self.notifications_dropped = Counter(
            f"{PREFIX}_notifications_dropped", "Notifications dropped because the sink's queue "
            "was full (its receiver is down or slow).", ["sink"], registry=r)
        self._held_now: dict[tuple[str, str], str] = {}  # (app, env) -> kind exported
        self._deployed_now: dict[tuple[str, str], tuple[str, str]] = {}
        self._deployed_lock = threading.Lock()  # cycles publish from worker threads

    def set_held(self, app: str, env: str, kind: str, since: float | None) -> None:
        """One held series per app/env while it is held; ``since`` None: not known."""
        with self._deployed_lock:
            old = self._held_now.get((app, env))
            if old is not None and old != kind:
                self.environment_held.remove(app, env, old)
            self._held_now[(app, env)] = kind
            self.environment_held.labels(app=app, env=env, kind=kind).set(1)
            if since is not None:
                self.environment_held_since.labels(app=app, env=env).set(since)

    def clear_held(self, app: str, env: str) -> None:
        """The environment is not held (any more): its series go away."""
        with self._deployed_lock:
            kind = self._held_now.pop((app, env), None)
            if kind is None:
                return
            self.environment_held.remove(app, env, kind)
            with contextlib.suppress(KeyError):  # its since was not a readable time
                self.environment_held_since.remove(app, env)

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
