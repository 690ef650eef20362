"""The daemon's HTTP port under hostile or unlucky clients: slow senders, too many
connections, oversized bodies, and a shutdown with requests in flight.

Real sockets on 127.0.0.1 against the real server (uvicorn on the daemon's loop, in a
thread of its own as in production), built by the same function the CLI uses. The daemon
behind it is real but not running: these tests are about the port, not about cycles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from image_updater.config.server import ServerSettings
from image_updater.config.settings import Settings
from image_updater.daemon.server import HttpServer, build_app
from image_updater.daemon.service import Daemon
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.daemon import (
    DaemonProcess,
    daemon_settings,
    metric_value,
    wait_until,
    write_policy,
)
from tests.fixtures.registry import free_port

pytestmark = pytest.mark.integration

SLOW_SENDERS = 300  # bounded: a few hundred, as the issue asks, on loopback
TIMEOUT = 3.0  # server.request_timeout in these tests (s)
PROBE_DEADLINE = 1.0  # s: the kubelet's default timeoutSeconds for a probe
T = TypeVar("T")


class Serving:
    """An :class:`HttpServer` for a real (idle) daemon on a loop thread of its own."""

    def __init__(self, settings: Settings, extra_routes: Sequence[BaseRoute] = ()) -> None:
        self.settings = settings
        self.extra_routes = extra_routes
        self.server: HttpServer
        self.stopped_after: float | None = None  # seconds stop() took
        self._ready = threading.Event()
        self._stop: asyncio.Event
        self._loop: asyncio.AbstractEventLoop
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="http-loop")

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runtime = Runtime(self.settings, secrets=SecretRegistry())
        daemon = Daemon(settings=self.settings, policy_paths=[], runtime=runtime, apps=[])
        self.server = HttpServer(build_app(daemon, self.settings,
                                           extra_routes=self.extra_routes), self.settings)
        await self.server.start()
        self._ready.set()
        await self._stop.wait()
        started = time.monotonic()
        await self.server.stop()
        self.stopped_after = time.monotonic() - started
        await runtime.aclose()

    @property
    def url(self) -> str:
        return f"http://{self.server.address}"

    @property
    def port(self) -> int:
        return int(self.server.address.rpartition(":")[2])

    def start(self) -> Serving:
        self._thread.start()
        assert self._ready.wait(timeout=10), "the server did not start within 10 s"
        return self

    def begin_stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.begin_stop()
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the server did not stop within 30 s"

    def on_loop(self, read: Callable[[], T]) -> T:
        """Read server state on its own loop (it is only touched there)."""
        async def value() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(value(), self._loop).result(timeout=5)


def limited(tmp_path: Path, **limits: float) -> Settings:
    base = daemon_settings(tmp_path)
    return dataclasses.replace(base, server=ServerSettings(**limits))  # type: ignore[arg-type]


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    # a cap above the senders, so the body senders' requests reach the route
    running = Serving(limited(tmp_path, request_timeout=TIMEOUT, max_connections=1000)).start()
    try:
        yield running
    finally:
        running.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent until it closed the connection (b"" for a bare close)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# -- slow senders --------------------------------------------------------------------------

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trickle\r\n\r\n"
BODY_HEAD = (b"POST /webhooks/registry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Authorization: Bearer x\r\nContent-Length: 1000\r\n\r\n")


def test_slow_senders_are_cut_off_at_the_deadline_while_healthz_keeps_answering(
        serving: Serving) -> None:
    """Half trickle their headers, half their body, a byte each every 0.2 s: none ever
    finishes. /healthz answers meanwhile, and at the deadline every one of them is
    answered 408 and closed: no connection and no request task is left.

    The trickling stops at half the deadline, so a slow (shared) machine cannot make a
    sender's own write hit a connection that was already, rightly, closed."""
    senders = [connect(serving.port) for _ in range(SLOW_SENDERS)]
    body_senders = senders[SLOW_SENDERS // 2:]
    for sock in body_senders:
        sock.sendall(BODY_HEAD)  # the request reaches the route, which waits for the body
    started = time.monotonic()
    probes: list[float] = []
    in_flight = 0
    try:
        step = 0
        while time.monotonic() - started < TIMEOUT / 2:
            for sock in senders:
                sock.send(HEAD[step:step + 1] if sock not in body_senders else b"{")
            probe = time.monotonic()
            response = httpx.get(serving.url + "/healthz", timeout=PROBE_DEADLINE)
            probes.append(time.monotonic() - probe)
            assert response.status_code == 200 and response.text == "ok\n"
            in_flight = max(in_flight, serving.on_loop(lambda: serving.server.requests_in_flight))
            time.sleep(max(0.0, 0.2 - (time.monotonic() - probe)))
            step += 1
        assert step >= 3 and time.monotonic() - started < TIMEOUT  # all before the deadline
        answers = [read_all(sock, timeout=TIMEOUT + 3) for sock in senders]
    finally:
        for sock in senders:
            sock.close()
    assert max(probes) < PROBE_DEADLINE, \
        f"/healthz took {max(probes):.2f} s under {SLOW_SENDERS} senders"
    assert in_flight >= len(body_senders)  # the body senders' requests had reached the route
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:len(senders) // 2]), \
        {a[:40] for a in answers}
    assert all(b"server.request_timeout" in a for a in answers[:len(senders) // 2])
    # a route still waiting for a body is cut off without an answer (its task ends)
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers[len(senders) // 2:])
    wait_until(lambda: serving.on_loop(lambda: (serving.server.connections,
                                                serving.server.requests_in_flight)) == (0, 0),
               timeout=5, what="no connection and no request task left")
    metrics = httpx.get(serving.url + "/metrics", timeout=5).text
    assert metric_value(metrics, "image_updater_webhook_requests_total", source="registry",
                        result="408") == len(body_senders)  # each cut-off webhook counted


def test_an_idle_connection_is_closed_at_the_deadline(serving: Serving) -> None:
    with connect(serving.port) as sock:
        started = time.monotonic()
        answer = read_all(sock, timeout=TIMEOUT + 3)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert TIMEOUT - 0.2 < waited < TIMEOUT + 1.5


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(tmp_path: Path) -> None:
    """The deadline counts from a request's first byte: a client that reuses its connection
    every second for longer than the deadline is served every time."""
    running = Serving(limited(tmp_path, request_timeout=1.0, keep_alive=5.0)).start()
    try:
        with httpx.Client(base_url=running.url, timeout=5) as client:
            statuses = []
            for _ in range(4):
                statuses.append(client.get("/healthz").status_code)
                time.sleep(0.5)
            assert running.on_loop(lambda: running.server.connections) == 1  # one, reused
    finally:
        running.stop()
    assert statuses == [200] * 4


# -- connection cap ------------------------------------------------------------------------

def test_beyond_max_connections_requests_get_503_but_probes_are_answered(
        tmp_path: Path) -> None:
    running = Serving(limited(tmp_path, max_connections=5, request_timeout=30)).start()
    idle = [connect(running.port) for _ in range(5)]
    try:
        wait_until(lambda: running.on_loop(lambda: running.server.connections) == 5,
                   timeout=5, what="5 open connections")
        busy = httpx.get(running.url + "/metrics", timeout=5)
        probe = httpx.get(running.url + "/healthz", timeout=5)
        for sock in idle:
            sock.close()
        wait_until(lambda: running.on_loop(lambda: running.server.connections) == 0,
                   timeout=5, what="the idle connections to close")
        calm = httpx.get(running.url + "/metrics", timeout=5)
    finally:
        for sock in idle:
            sock.close()
        running.stop()
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert "server.max_connections" in busy.text and busy.headers["connection"] == "close"
    assert probe.status_code == 200
    assert calm.status_code == 200 and "image_updater_" in calm.text


# -- bodies --------------------------------------------------------------------------------

async def echo(request: Request) -> Response:
    """A feature's route reading its whole body, as the promotions API will."""
    try:
        body = await request.body()
    except ClientDisconnect:
        return PlainTextResponse("gone", status_code=408)
    return PlainTextResponse(f"{len(body)} bytes")


def test_bodies_over_server_max_body_bytes_are_refused_with_413(tmp_path: Path) -> None:
    running = Serving(limited(tmp_path, max_body_bytes=1000),
                      [Route("/echo", echo, methods=["POST"])]).start()
    try:
        small = httpx.post(running.url + "/echo", content=b"x" * 1000, timeout=5)
        announced = httpx.post(running.url + "/echo", content=b"x" * 200_000, timeout=5)
        chunked = httpx.post(running.url + "/echo", timeout=5,
                             content=iter([b"x" * 600, b"x" * 600]))  # no Content-Length
    finally:
        running.stop()
    assert (small.status_code, small.text) == (200, "1000 bytes")
    assert announced.status_code == 413 and "server.max_body_bytes" in announced.text
    assert "200000 bytes" in announced.text
    assert chunked.status_code == 413 and chunked.headers["connection"] == "close"


# -- graceful shutdown ---------------------------------------------------------------------

async def slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params["seconds"]))
    return PlainTextResponse("done")


def test_shutdown_lets_requests_in_flight_finish_then_closes_the_port(tmp_path: Path) -> None:
    running = Serving(limited(tmp_path, shutdown_grace=10),
                      [Route("/slow", slow, methods=["GET"])]).start()
    results: list[httpx.Response] = []
    client = threading.Thread(target=lambda: results.append(
        httpx.get(running.url + "/slow?seconds=1", timeout=10)))
    client.start()
    wait_until(lambda: running.on_loop(lambda: running.server.requests_in_flight) == 1,
               timeout=5, what="the slow request to be in flight")
    running.begin_stop()
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):  # no new connection while draining
        httpx.get(running.url + "/healthz", timeout=2)
    client.join(timeout=10)
    running.stop()
    assert [(r.status_code, r.text) for r in results] == [(200, "done")]
    assert running.stopped_after is not None and 0.5 < running.stopped_after < 3


def test_shutdown_cancels_what_outlasts_the_grace_period(tmp_path: Path) -> None:
    running = Serving(limited(tmp_path, shutdown_grace=0.5),
                      [Route("/slow", slow, methods=["GET"])]).start()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.get(running.url + "/slow?seconds=60", timeout=20).status_code)
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    client = threading.Thread(target=call)
    client.start()
    wait_until(lambda: running.on_loop(lambda: running.server.requests_in_flight) == 1,
               timeout=5, what="the slow request to be in flight")
    running.stop()
    client.join(timeout=10)
    assert running.stopped_after is not None and running.stopped_after < 2.5
    assert outcome and outcome[0] != 200  # cut off: a 500 or a closed connection


# -- logs ----------------------------------------------------------------------------------

def test_the_servers_own_logs_are_our_json_lines_and_never_show_a_request(
        tmp_path: Path) -> None:
    """uvicorn logs through our handler (JSON, masked); its access log stays off even at
    debug, because a request line may carry a webhook's path token or a query secret."""
    token = "path-token-9c1e77d2"
    closed = f"127.0.0.1:{free_port()}"  # an app whose registry is down: cycles fail fast
    policies = tmp_path / "policies"
    write_policy(policies, "app", f"{closed}/team/app", f"file://{tmp_path / 'none.git'}")
    config = tmp_path / "settings.yaml"
    config.write_text(f"listen: '127.0.0.1:0'\nlog_level: debug\ncache_dir: '{tmp_path}'\n"
                      f"registries: [{{host: '{closed}', insecure: true, max_retries: 0}}]\n"
                      "server: {request_timeout: 1}\n")
    with DaemonProcess(tmp_path, config, [policies], env={}) as proc:
        port = int(proc.address.rpartition(":")[2])
        with connect(port) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            garbage = read_all(sock, timeout=5)
        with connect(port) as sock:  # never finishes its request: cut off at the deadline
            sock.sendall(f"GET /webhooks/dockerhub/{token}?token={token} HTTP/1.1\r\n".encode())
            late = read_all(sock, timeout=5)
        served = httpx.get(f"{proc.url}/metrics?token={token}", timeout=5)
        proc.wait_for_record(lambda r: "did not arrive within" in r["msg"], timeout=10,
                             what="the deadline's debug line")
        code = proc.terminate()
        records, output = proc.records(), proc.output()
    assert code == 0
    assert garbage.startswith(b"HTTP/1.1 400 ") and late.startswith(b"HTTP/1.1 408 ")
    assert served.status_code == 200
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(records) == len(lines)  # every line printed is one of our JSON records
    uvicorn = [r for r in records if r["logger"].startswith("uvicorn")]
    assert [r["msg"] for r in uvicorn] == ["Invalid HTTP request received."]
    assert all("color_message" not in r for r in records)
    assert token not in output and "/metrics" not in output
