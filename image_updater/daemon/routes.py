"""The daemon's own routes: ``/metrics``, ``/healthz``, ``/readyz`` and ``/webhooks/<source>``.

They run on the daemon's event loop (the server is :mod:`~image_updater.daemon.server`), so a
webhook hands its apps to the daemon directly; the reconcile itself runs in the worker task,
never in the request.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from image_updater.config.settings import Settings
from image_updater.daemon.webhooks import SOURCES, WebhookError, parse_webhook, split_source, verify
from image_updater.observability.metrics import Metrics
from image_updater.secrets import SecretRegistry

log = logging.getLogger("image_updater.server")

WEBHOOKS = "/webhooks/"


class DaemonPort(Protocol):
    """What the HTTP port needs of the daemon (:class:`~image_updater.daemon.service.Daemon`);
    the server does not import it, so the daemon never depends on its own server."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def secrets(self) -> SecretRegistry:
        """Where secrets read for webhooks are registered, so no log line shows them."""
        ...

    def healthy(self) -> bool: ...

    def ready(self) -> bool: ...

    def apps_for_image(self, registry: str, repository: str) -> set[str]: ...

    def request_apps(self, names: set[str]) -> None:
        """Called on the daemon's loop."""
        ...


def text(status: int, message: str, *, close: bool = False) -> Response:
    """A plain-text answer (one line); ``close`` ends the connection after it."""
    headers = {"connection": "close"} if close else None
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


class CoreRoutes:
    """The endpoints of the daemon's port that every deployment has."""

    def __init__(self, daemon: DaemonPort, settings: Settings) -> None:
        self.daemon = daemon
        self.settings = settings

    def routes(self) -> list[BaseRoute]:
        return [Route("/metrics", self.metrics, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route(WEBHOOKS + "{source:path}", self.webhook, methods=["POST"])]

    async def metrics(self, _request: Request) -> Response:
        body, content_type = self.daemon.metrics.exposition()
        return Response(body, media_type=content_type)

    async def healthz(self, _request: Request) -> Response:
        ok = self.daemon.healthy()
        return text(200, "ok") if ok else text(503, "scheduler stalled")

    async def readyz(self, _request: Request) -> Response:
        ok = self.daemon.ready()
        return text(200, "ready") if ok else text(503, "not ready: policies or deploy repo")

    async def webhook(self, request: Request) -> Response:
        """Authenticate, parse, and hand the matching apps to the daemon. The body's size was
        checked before this runs (:class:`~image_updater.daemon.http_limits.BodyLimit`)."""
        source = request.path_params["source"]
        if "content-length" not in request.headers:
            return self.refuse(source, 411, "a Content-Length header is required")
        try:
            body = await request.body()
        except ClientDisconnect:  # gone, or cut off at the request deadline (which answered)
            return self.refuse(source, 408, f"the body was not received within "
                                            f"{self.settings.server.request_timeout:g} s "
                                            "(server.request_timeout), or the sender left")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify(source, headers, body, self.settings.webhooks, secrets=self.daemon.secrets)
            images = parse_webhook(source, headers, body)
        except WebhookError as exc:
            return self.refuse(source, exc.status, str(exc))
        return self.accept(source, images)

    def accept(self, source: str, images: list[tuple[str, str]]) -> Response:
        apps: set[str] = set()
        for registry, repository in images:
            apps |= self.daemon.apps_for_image(registry, repository)
        label = source_label(source)
        self.daemon.metrics.webhooks.labels(source=label, result="accepted").inc()
        if apps:
            self.daemon.request_apps(apps)
            log.info("webhook %s: reconciling app(s) %s now", label, ", ".join(sorted(apps)),
                     extra={"source": label})
        elif images:
            shown = ", ".join(sorted({f"{h or '?'}/{r}" for h, r in images}))[:200]
            log.debug("webhook %s: no app watches %s; nothing to do", label, shown,
                      extra={"source": label})
        return text(202, f"accepted: {len(apps)} app(s) will be reconciled now")

    def refuse(self, source: str, status: int, message: str) -> Response:
        """Count and log a refused webhook; the metric's result label is the status code."""
        self.count_refusal(source, status, message)
        return text(status, message, close=status in (411, 413))

    def count_refusal(self, source: str, status: int, message: str) -> None:
        label = source_label(source)
        self.daemon.metrics.webhooks.labels(source=label, result=str(status)).inc()
        log.warning("webhook %s refused (%d): %s", label, status, message,
                    extra={"source": label})

    def body_refused(self, path: str, message: str) -> None:
        """Told of a 413 sent before a route ran: webhooks count it like their own."""
        if path.startswith(WEBHOOKS):
            self.count_refusal(path[len(WEBHOOKS):], 413, message)


def source_label(source_path: str) -> str:
    """The metric/log label of ``/webhooks/<source>[/<token>]``: bounded, never the token."""
    name = split_source(source_path)[0]
    return name if name in SOURCES else "unknown"
