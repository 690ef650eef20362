"""The daemon's one HTTP port: /metrics, /healthz, /readyz and /webhooks/<source>.

A stdlib threaded server is enough here: the endpoints are tiny, scrape and webhook rates
are low, and the reconcile work is handed to the daemon's event loop, never done on the
request thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from image_updater.config.settings import Settings
from image_updater.errors import ConfigError
from image_updater.observability.metrics import Metrics
from image_updater.secrets import SecretRegistry


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


log = logging.getLogger("image_updater.server")

#: seconds a client may take to send its request; a stalled sender must not hold a thread
REQUEST_TIMEOUT = 10.0
#: after refusing an oversized body, read and drop at most this much of it (bytes), so the
#: sender sees our 413 instead of a connection reset; anything larger is cut off
DRAIN_LIMIT = 16 << 20


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"listen address {listen!r} has no valid port; write host:port, "
                          "e.g. 0.0.0.0:8080 or 127.0.0.1:9090.") from None
    return (host.strip("[]") or "0.0.0.0", number)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not block shutdown


class HttpServer:
    def __init__(self, *, settings: Settings, daemon: DaemonPort,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.daemon = daemon
        self.loop = loop
        handler = _make_handler(self)
        try:
            self.httpd = _Server(parse_listen(settings.listen), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen} ({exc.strerror}); another "
                              "process may hold the port: choose another 'listen' address or "
                              "set IMAGE_UPDATER_LISTEN.") from exc
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                        daemon=True)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def on_webhook(self, source: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """Authenticate, parse, and hand the matching apps to the daemon's loop."""
        from image_updater.daemon.webhooks import WebhookError, parse_webhook, verify

        try:
            verify(source, headers, body, self.settings.webhooks,
                   secrets=self.daemon.secrets)
            images = parse_webhook(source, headers, body)
        except WebhookError as exc:
            return self.refuse(source, exc.status, str(exc))
        apps: set[str] = set()
        for registry, repository in images:
            apps |= self.daemon.apps_for_image(registry, repository)
        label = source_label(source)
        self.daemon.metrics.webhooks.labels(source=label, result="accepted").inc()
        if apps:
            self.loop.call_soon_threadsafe(self.daemon.request_apps, apps)
            log.info("webhook %s: reconciling app(s) %s now", label, ", ".join(sorted(apps)),
                     extra={"source": label})
        elif images:
            shown = ", ".join(sorted({f"{h or '?'}/{r}" for h, r in images}))[:200]
            log.debug("webhook %s: no app watches %s; nothing to do", label, shown,
                      extra={"source": label})
        return 202, f"accepted: {len(apps)} app(s) will be reconciled now"

    def refuse(self, source: str, status: int, message: str) -> tuple[int, str]:
        """Count and log a refused webhook; the metric's result label is the status code."""
        label = source_label(source)
        self.daemon.metrics.webhooks.labels(source=label, result=str(status)).inc()
        log.warning("webhook %s refused (%d): %s", label, status, message,
                    extra={"source": label})
        return status, message


def source_label(source_path: str) -> str:
    """The metric/log label of ``/webhooks/<source>[/<token>]``: bounded, never the token."""
    from image_updater.daemon.webhooks import SOURCES, split_source

    name = split_source(source_path)[0]
    return name if name in SOURCES else "unknown"


def _make_handler(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "image-updater"
        timeout = REQUEST_TIMEOUT

        def log_message(self, format: str, *args: object) -> None:
            pass  # request lines may carry a webhook path token; we log outcomes instead

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
                  ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, *server.daemon.metrics.exposition())
            elif path == "/healthz":
                ok = server.daemon.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"scheduler stalled\n")
            elif path == "/readyz":
                ok = server.daemon.ready()
                self._send(200 if ok else 503,
                           b"ready\n" if ok else b"not ready: policies or deploy repo\n")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if not path.startswith("/webhooks/"):
                self._send(404, b"not found\n")
                return
            source = path[len("/webhooks/"):]
            limit = server.settings.webhooks.max_body_bytes
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if length < 0:
                self._refuse(source, 411, "a Content-Length header is required")
                return
            if length > limit:
                self._refuse(source, 413, f"the body has {length} bytes, more than the "
                                          f"{limit} allowed (webhooks.max_body_bytes)")
                self._drain(length)
                return
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                self._refuse(source, 408, f"the body was not received within "
                                          f"{REQUEST_TIMEOUT:.0f} s")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, text = server.on_webhook(source, headers, body)
            self._send(status, (text + "\n").encode())

        def _refuse(self, source: str, status: int, message: str) -> None:
            status, text = server.refuse(source, status, message)
            self.close_connection = True
            self._send(status, (text + "\n").encode())

        def _drain(self, length: int) -> None:
            # Closing a socket with unread input makes the kernel send a reset, which can
            # destroy our 413 before the client reads it. Read (and drop) what was sent.
            remaining = min(length, DRAIN_LIMIT)
            try:
                self.connection.shutdown(socket.SHUT_WR)
                while remaining > 0:
                    chunk = self.rfile.read1(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            except OSError:
                pass  # the client gave up first; nothing left to protect

    return Handler
