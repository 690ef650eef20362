"""What bounds one client of the daemon's HTTP port: a request deadline, a connection cap and
a body cap. uvicorn's own limits do not cover these: its keep-alive timeout only runs between
requests, so a client trickling a header or body byte every few seconds would hold its
connection (and the request's task) forever.

- :class:`DeadlineProtocol`: uvicorn's h11 protocol with a deadline on *receiving* each
  request, from its first byte (or the connection's opening) to the end of its body. At the
  deadline a request still arriving is answered 408 and its connection closed; the route
  reading its body sees a disconnect, so its task ends too.
- :class:`ConnectionCap`: beyond ``server.max_connections`` open connections (or requests in
  flight), a request is answered 503, except the probes: they are answered at once and a
  flood must not get the pod restarted.
- :class:`BodyLimit`: a body larger than the route's cap is answered 413 before the route
  runs (announced by Content-Length) or as soon as it grows past the cap (chunked).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from image_updater.observability.logs import Throttle

log = logging.getLogger("image_updater.server")

#: after refusing an oversized body, read and drop at most this much of it (bytes), so the
#: sender sees our 413 instead of a connection reset; anything larger is cut off
DRAIN_LIMIT = 16 << 20
#: seconds between two warnings about refused connections (one line per burst, with a count)
LOG_EVERY = 10.0


class ServerConfig(uvicorn.Config):
    """uvicorn's settings plus the request deadline (s) that :class:`DeadlineProtocol` reads."""

    def __init__(self, app: ASGIApp, *, request_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.request_timeout = request_timeout


def plain_response(status: int, reason: str, text: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for the protocol to write
    when no ASGI response can be sent any more (the request is still arriving)."""
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request (module docstring)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.request_timeout = float(getattr(config, "request_timeout", 10.0))
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY or state is h11.IDLE:
            # a pipelined request, parsed after a response, gets its deadline here (the
            # buffer is only copied when no deadline runs, never per trickled byte)
            if self._deadline is None and (state is h11.SEND_BODY or self.conn.trailing_data[0]):
                self._arm()
        else:
            self._disarm()  # the whole request is in: the route has it

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Close when idle, else after the response (uvicorn's); a connection whose protocol
        state is broken (a refused request) is just closed."""
        try:
            super().shutdown()
        except h11.LocalProtocolError:
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self.conn.their_state is h11.SEND_BODY else None
        if cycle is not None and not cycle.response_complete:
            # the route's receive() answers "disconnected" and its sends are dropped, so
            # its task ends instead of waiting for the rest of the body
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is None or not cycle.response_started:
            self.transport.write(plain_response(
                408, "Request Timeout", f"the request was not received within "
                f"{self.request_timeout:g} s (server.request_timeout)"))
        log.debug("closed a connection from %s whose request did not arrive within %g s",
                  _client(self.client), self.request_timeout)
        self.transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


async def send_text(send: Send, status: int, text: str, *, close: bool = False,
                    headers: Collection[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole plain-text response from ASGI middleware (``close``: end the connection)."""
    body = (text + "\n").encode()
    head = [(b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ConnectionCap:
    """503 for a request beyond ``limit`` open connections or requests in flight (the probes
    in ``exempt`` excepted). ``state`` is the uvicorn server's, which counts both."""

    def __init__(self, app: ASGIApp, *, state: ServerState, limit: int,
                 exempt: Collection[str] = ("/healthz", "/readyz")) -> None:
        self.app = app
        self.state = state
        self.limit = limit
        self.exempt = frozenset(exempt)
        self._warnings = Throttle(LOG_EVERY)  # a flood is one line per LOG_EVERY s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        busy = max(len(self.state.connections), len(self.state.tasks))
        if scope["type"] != "http" or busy <= self.limit or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        refused = self._warnings.due()
        if refused:
            log.warning("refused %d request(s) with 503: %d connections are open, more than "
                        "server.max_connections (%d); raise it if this is normal load",
                        refused, busy, self.limit)
        await send_text(send, 503, f"the server is busy ({busy} connections, more than "
                        f"server.max_connections); try again shortly", close=True,
                        headers=[(b"retry-after", b"1")])


class BodyTooLarge(Exception):
    """A request body grew past its cap while the route was reading it."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(f"the body is larger than the {limit} bytes allowed ({setting})")
        self.limit = limit
        self.setting = setting


#: ``path -> (largest body in bytes, the setting that says so)``
LimitFor = Callable[[str], tuple[int, str]]
#: told of every 413 the middleware sends: ``(path, message)`` (webhooks count them)
OnRefused = Callable[[str, str], None]


class BodyLimit:
    """413 for a body larger than ``limit_for(path)`` (module docstring).

    A body announced too large is read and dropped up to :data:`DRAIN_LIMIT` before the
    413 (within the request deadline), so the sender, still writing, sees the answer rather
    than a reset; the route never runs.
    """

    def __init__(self, app: ASGIApp, *, limit_for: LimitFor,
                 on_refused: OnRefused | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        length = _content_length(scope)
        if length is not None and length > limit:
            await _drain(receive, min(length, DRAIN_LIMIT))
            await self._refuse(scope, send, f"the body has {length} bytes, more than the "
                                            f"{limit} allowed ({setting})")
            return
        started, received = False, 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit, setting)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(scope, send, str(exc))

    async def _refuse(self, scope: Scope, send: Send, message: str) -> None:
        if self.on_refused is not None:
            self.on_refused(scope["path"], message)
        await send_text(send, 413, message, close=True)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses such a request before it gets here
    return None


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop up to ``budget`` bytes of the body (see :class:`BodyLimit`)."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away, or the request deadline passed
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
