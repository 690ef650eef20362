"""The daemon's one HTTP port: a Starlette application served by uvicorn on the daemon's loop.

:func:`build_app` puts the routes together: the daemon's own (:mod:`~image_updater.daemon.routes`:
/metrics, /healthz, /readyz, /webhooks/<source>) and any ``extra_routes`` a feature adds
(see :func:`image_updater.daemon.main.http_routes`). :class:`HttpServer` serves it with the
limits of :mod:`~image_updater.daemon.http_limits` (request deadline, connection cap, body
cap) and a bounded graceful stop. No thread: every request is a task on the daemon's loop,
so a route may read the daemon's state directly, and must not block (use
``asyncio.to_thread`` for git or other blocking work).

uvicorn logs through the ``uvicorn.error`` logger into our handler (JSON or text, masked);
its access log is off, because a request line may carry a webhook's path token.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from image_updater.config.settings import Settings
from image_updater.daemon.http_limits import (
    BodyLimit,
    BodyTooLarge,
    ConnectionCap,
    DeadlineProtocol,
    ServerConfig,
)
from image_updater.daemon.routes import WEBHOOKS, CoreRoutes, DaemonPort, text
from image_updater.errors import ConfigError

__all__ = ["DaemonPort", "HttpServer", "build_app", "parse_listen"]

log = logging.getLogger("image_updater.server")


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"listen address {listen!r} has no valid port; write host:port, "
                          "e.g. 0.0.0.0:8080 or 127.0.0.1:9090.") from None
    return (host.strip("[]") or "0.0.0.0", number)


def build_app(daemon: DaemonPort, settings: Settings, *,
              extra_routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    """The daemon's ASGI application: its own routes, then ``extra_routes``.

    A feature's route reads its body with ``await request.body()`` (capped at
    ``server.max_body_bytes`` by the application: a larger one is answered 413) and should
    catch ``starlette.requests.ClientDisconnect`` (the client left, or the request deadline
    cut it off).
    """
    core = CoreRoutes(daemon, settings)
    app = Starlette(routes=[*core.routes(), *extra_routes],
                    exception_handlers={404: _not_found, BodyTooLarge: _too_large})
    # No 307 from "/healthz/" to "/healthz": Starlette builds that Location from the
    # request's own Host header, and an API client answered without JSON is lost. 404.
    app.router.redirect_slashes = False

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith(WEBHOOKS):
            return settings.webhooks.max_body_bytes, "webhooks.max_body_bytes"
        return settings.server.max_body_bytes, "server.max_body_bytes"

    return BodyLimit(app, limit_for=limit_for, on_refused=core.body_refused)


async def _not_found(_request: Request, exc: Exception) -> Response:
    """No route: our one-line answer. A route's own 404 keeps its message."""
    detail = exc.detail if isinstance(exc, HTTPException) else ""
    return text(404, detail if detail and detail != "Not Found" else "not found")


async def _too_large(_request: Request, exc: Exception) -> Response:
    return text(413, str(exc), close=True)


class HttpServer:
    """uvicorn serving ``app`` on the daemon's loop; the port is bound at construction, so a
    taken port stops the start with a :class:`ConfigError` before the daemon runs."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        self._socket = _bind(settings.listen)
        host, port = self._socket.getsockname()[:2]
        self._address = f"{host!s}:{port}"  # kept: the socket is closed at stop
        limits = settings.server
        self._config = ServerConfig(
            app, request_timeout=limits.request_timeout, http=DeadlineProtocol, ws="none",
            lifespan="off", log_config=None, access_log=False, log_level=_uvicorn_level(),
            proxy_headers=False, server_header=False, headers=[("server", "image-updater")],
            timeout_keep_alive=limits.keep_alive)
        self._server = uvicorn.Server(self._config)
        # the cap counts the server's connections, so it wraps the app once the server exists
        self._config.app = ConnectionCap(app, state=self._server.server_state,
                                         limit=limits.max_connections)
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False
        _quiet_uvicorn_records()

    @property
    def address(self) -> str:
        return self._address

    @property
    def connections(self) -> int:
        """Connections open now (tests and the slow-sender check read it)."""
        return len(self._server.server_state.connections)

    @property
    def requests_in_flight(self) -> int:
        """Request tasks running now."""
        return len(self._server.server_state.tasks)

    async def start(self) -> None:
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._socket])
        self._ticker = asyncio.create_task(self._tick(), name="http")

    async def _tick(self) -> None:
        """The Date header of every answer, renewed once a second (uvicorn's own tick)."""
        while True:
            await self._server.on_tick(0)
            await asyncio.sleep(1)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish for up to ``server.shutdown_grace``
        seconds, cancel what is left, then close every connection and the port. A second
        call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        server, state = self._server, self._server.server_state
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        for listener in getattr(server, "servers", []):
            listener.close()
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        grace = self.settings.server.shutdown_grace
        if state.tasks:
            log.info("stopping the HTTP server: waiting up to %g s for %d request(s) in flight",
                     grace, len(state.tasks))
        try:
            async with asyncio.timeout(grace):
                while state.tasks:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning("%d request(s) did not finish within server.shutdown_grace (%g s); "
                        "cancelling them", len(state.tasks), grace)
            for task in list(state.tasks):
                task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        for connection in list(state.connections):
            connection.transport.close()
        for listener in getattr(server, "servers", []):
            await listener.wait_closed()
        self._socket.close()


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen} ({exc.strerror}); another process may "
                          "hold the port: choose another 'listen' address or set "
                          "IMAGE_UPDATER_LISTEN.") from exc


def _uvicorn_level() -> str:
    """uvicorn's loggers follow ours, but never below DEBUG: at its TRACE level it would log
    every request's headers, Authorization included."""
    ours = logging.getLogger().getEffectiveLevel()
    return "debug" if ours <= logging.DEBUG else "warning"


class _DropColorMessage(logging.Filter):
    """uvicorn attaches a colored copy of some messages as ``color_message``; our formatters
    would print it as a structured field."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def _quiet_uvicorn_records() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropColorMessage) for f in logger.filters):
        logger.addFilter(_DropColorMessage())
