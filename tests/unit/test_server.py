"""The port's ASGI guards, driven directly with ASGI messages: what reaches the route, what
is refused and how, and what the refusal tells the webhook counters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send
from uvicorn.server import ServerState

from image_updater.config.settings import Settings
from image_updater.daemon.http_limits import (
    DRAIN_LIMIT,
    BodyLimit,
    ConnectionCap,
    plain_response,
)
from image_updater.daemon.server import build_app, parse_listen
from image_updater.daemon.service import Daemon
from image_updater.errors import ConfigError
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime


def scope(path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers)}


class Client:
    """The request's body in chunks, and everything the app sent back."""

    def __init__(self, chunks: Sequence[bytes] = (b"",), *, leaves: bool = False) -> None:
        self.chunks = list(chunks)
        self.leaves = leaves  # disconnects after its chunks instead of ending the body
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        self.read += len(chunk)
        more = bool(self.chunks) or self.leaves
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.sent[1:]).decode()


async def reads_body(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that reads its whole body, then answers how much it got."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def body_limit(refused: list[tuple[str, str]]) -> BodyLimit:
    def limit_for(path: str) -> tuple[int, str]:
        return (10, "webhooks.max_body_bytes") if path.startswith("/webhooks/") \
            else (100, "server.max_body_bytes")

    return BodyLimit(reads_body, limit_for=limit_for,
                     on_refused=lambda path, why: refused.append((path, why)))


@pytest.mark.parametrize(("path", "size", "status"), [
    ("/api/x", 100, 200), ("/api/x", 101, 413), ("/webhooks/registry", 10, 200),
    ("/webhooks/registry", 11, 413),
])
def test_an_announced_body_over_the_routes_cap_is_refused_before_the_route_runs(
        path: str, size: int, status: int) -> None:
    refused: list[tuple[str, str]] = []
    client = Client([b"x" * size])
    asyncio.run(body_limit(refused)(
        scope(path, [(b"content-length", str(size).encode())]), client.receive, client.send))
    assert client.status == status
    if status == 200:
        assert client.text == str(size) and refused == []
    else:
        setting = "webhooks" if path.startswith("/webhooks/") else "server"
        assert f"{setting}.max_body_bytes" in client.text and f"{size} bytes" in client.text
        assert client.headers[b"connection"] == b"close"
        assert refused == [(path, client.text.strip())]
        assert client.read == size  # drained, so the sender reads the 413, not a reset


def test_a_huge_announced_body_is_drained_only_up_to_the_drain_limit() -> None:
    chunk = b"x" * (1 << 20)
    client = Client([chunk] * 40)  # 40 MiB on its way
    asyncio.run(body_limit([])(scope("/api/x", [(b"content-length", b"41943040")]),
                               client.receive, client.send))
    assert client.status == 413
    assert DRAIN_LIMIT <= client.read < DRAIN_LIMIT + len(chunk)


def test_a_chunked_body_growing_past_the_cap_is_refused_while_it_is_read() -> None:
    client = Client([b"x" * 60, b"x" * 60, b"x" * 60])  # no Content-Length
    asyncio.run(body_limit([])(scope("/api/x"), client.receive, client.send))
    assert client.status == 413 and "larger than the 100 bytes" in client.text
    assert client.read == 120  # the third chunk was never asked for


def test_a_client_gone_while_draining_still_gets_an_answer_attempt() -> None:
    client = Client([b"x" * 5], leaves=True)  # announced 1000, sent 5, then disconnected
    asyncio.run(body_limit([])(scope("/api/x", [(b"content-length", b"1000")]),
                               client.receive, client.send))
    assert client.status == 413 and client.read == 5


async def answers_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(("connections", "path", "status"), [
    (3, "/metrics", 200), (4, "/metrics", 503), (4, "/healthz", 200), (50, "/readyz", 200),
    (4, "/api/v1/status", 503),
])
def test_the_cap_refuses_beyond_max_connections_except_the_probes(
        connections: int, path: str, status: int) -> None:
    state = ServerState()
    state.connections = {object() for _ in range(connections)}  # type: ignore[misc]
    client = Client()
    asyncio.run(ConnectionCap(answers_ok, state=state, limit=3)(
        scope(path), client.receive, client.send))
    assert client.status == status
    if status == 503:
        assert client.headers[b"retry-after"] == b"1"
        assert client.headers[b"connection"] == b"close"
        assert "server.max_connections" in client.text


def test_the_protocols_own_answer_is_complete_http_that_closes() -> None:
    raw = plain_response(408, "Request Timeout", "too slow")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    assert "connection: close" in lines and f"content-length: {len(body)}" in lines
    assert body == b"too slow\n"


@pytest.mark.parametrize(("listen", "expected"), [
    ("0.0.0.0:8080", ("0.0.0.0", 8080)), (":9090", ("0.0.0.0", 9090)),
    ("[::1]:80", ("::1", 80)), ("localhost:1", ("localhost", 1)),
])
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


def test_a_listen_address_without_a_port_says_how_to_write_one() -> None:
    with pytest.raises(ConfigError, match="write host:port"):
        parse_listen("0.0.0.0")


def test_unknown_paths_get_one_line_and_a_routes_own_404_keeps_its_message(
        tmp_path: Path) -> None:
    async def missing(_request: Request) -> Response:
        raise HTTPException(404, "no app is named 'x'; see image-updater status")

    settings = Settings(cache_dir=str(tmp_path))
    daemon = Daemon(settings=settings, policy_paths=[], apps=[],
                    runtime=Runtime(settings, secrets=SecretRegistry()))
    app = build_app(daemon, settings, extra_routes=[Route("/api/x", missing)])

    async def ask() -> tuple[httpx.Response, ...]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://port") as client:
            return (await client.get("/nowhere"), await client.get("/api/x"),
                    await client.post("/metrics"))

    unknown, own, wrong_method = asyncio.run(ask())
    assert (unknown.status_code, unknown.text) == (404, "not found\n")
    assert (own.status_code, own.text) == (404, "no app is named 'x'; see image-updater status\n")
    assert wrong_method.status_code == 405


def test_a_trailing_slash_is_not_redirected_to_the_host_the_request_named(
        tmp_path: Path) -> None:
    """Starlette would answer ``/healthz/`` with a 307 to ``http://<Host header>/healthz``:
    a redirect to wherever the request says, and a promotion POST answered without JSON.
    The port answers unknown paths 404, as the standard-library server did."""
    settings = Settings(cache_dir=str(tmp_path))
    daemon = Daemon(settings=settings, policy_paths=[], apps=[],
                    runtime=Runtime(settings, secrets=SecretRegistry()))
    app = build_app(daemon, settings)

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://port") as client:
            return [await client.get(path, headers={"Host": "evil.example"})
                    for path in ("/healthz/", "/metrics/", "/healthz%2F")]

    for answer in asyncio.run(ask()):
        assert answer.status_code == 404 and "location" not in answer.headers
