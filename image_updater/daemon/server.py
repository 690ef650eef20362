"""The daemon's one HTTP port: /metrics, /healthz, /readyz and /webhooks/<source>.

A stdlib threaded server is enough here: the endpoints are tiny, scrape and webhook rates
are low, and the reconcile work is handed to the daemon's event loop, never done on the
request thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from image_updater.config.settings import Settings

if TYPE_CHECKING:
    from image_updater.daemon.service import Daemon

log = logging.getLogger("image_updater.server")


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "0.0.0.0", int(port))


class HttpServer:
    def __init__(self, *, settings: Settings, daemon: Daemon,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.daemon = daemon
        self.loop = loop
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(parse_listen(settings.listen), handler)
        self.httpd.daemon_threads = True
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
        from image_updater.daemon.webhooks import (
            SOURCES,
            WebhookError,
            parse_webhook,
            split_source,
            verify,
        )

        metrics = self.daemon.runtime.metrics
        name = split_source(source)[0]
        label = name if name in SOURCES else "unknown"  # bounded; never the path token
        try:
            verify(source, headers, body, self.settings.webhooks)
            images = parse_webhook(source, headers, body)
        except WebhookError as exc:
            metrics.webhooks.labels(source=label, result=str(exc.status)).inc()
            log.warning("webhook %s refused (%d): %s", label, exc.status, exc)
            return exc.status, str(exc)
        apps: set[str] = set()
        for registry, repository in images:
            apps |= self.daemon.apps_for_image(registry, repository)
        self.loop.call_soon_threadsafe(self.daemon.request_apps, apps)
        metrics.webhooks.labels(source=label, result="accepted").inc()
        return 202, f"accepted: {len(apps)} app(s) will be reconciled now"


def _make_handler(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "image-updater"

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
                registry = server.daemon.runtime.metrics.registry
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
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
            limit = server.settings.webhooks.max_body_bytes
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if length < 0:
                self._send(411, b"Content-Length required\n")
                return
            if length > limit:
                self._send(413, f"body larger than {limit} bytes\n".encode())
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, text = server.on_webhook(path[len("/webhooks/"):], headers, body)
            self._send(status, (text + "\n").encode())

    return Handler
