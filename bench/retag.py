"""Benchmark: ``image-updater retag`` against ``skopeo copy`` on a real registry. Not a test.

Both run as whole processes (start-up included), as a PostSync job would run them, against
one CNCF distribution registry on 127.0.0.1: same repository and across repositories, a
single image and a two-platform index. Each run promotes a freshly pushed image, so no run
finds its work already done. Requests are counted from the registry's access log.

Two networks: plain loopback, and loopback through a delay proxy adding ``--rtt-ms``
(default 20 ms) of round-trip time. The proxy holds every chunk for half the RTT in each
direction and delays each new connection by one RTT (the TCP handshake to a distant
registry). A kernel ``netem`` qdisc would be the usual tool, but needs the ``sch_netem``
module; this userspace proxy needs nothing and is used everywhere for comparable figures.

    python bench/retag.py [--runs 5] [--rtt-ms 20] [--layer-kib 1024] [--python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.registry import (  # noqa: E402  (needs the repository root on sys.path)
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryServer,
    digest_of,
    put_manifest,
    upload_blob,
)

OCI_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The container image compiles bytecode at install time. A shell with
#: PYTHONDONTWRITEBYTECODE=1 would make every measured run compile the package from source
#: (about 40 ms here), which no PostSync job pays; the first run writes the .pyc files.
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# -- a network with latency ------------------------------------------------------------------


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that adds ``rtt`` seconds of round-trip time."""

    def __init__(self, upstream_port: int, rtt: float) -> None:
        self.upstream_port = upstream_port
        self.rtt = rtt
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(self.rtt)  # the handshake with a distant server
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            client_w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                queue.put_nowait((loop.time() + self.rtt / 2, data))
        finally:
            queue.put_nowait((loop.time() + self.rtt / 2, b""))
            await sender


# -- images ----------------------------------------------------------------------------------


def push_fresh(base: str, repo: str, tag: str, *, multi: bool, layer_kib: int) -> str:
    """Push a new image (or a two-platform index) with real gzip layers; return its digest."""
    with httpx.Client(timeout=60) as client:
        arches = ("amd64", "arm64") if multi else ("amd64",)
        children = [_push_image(client, base, repo, arch, layer_kib) for arch in arches]
        if not multi:
            body, media_type = children[0][1], OCI_MANIFEST
        else:
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d, "size": len(b),
                 "platform": {"architecture": a, "os": "linux"}}
                for (d, b), a in zip(children, arches, strict=True)]}).encode()
            media_type = OCI_INDEX
        return put_manifest(client, base, repo, tag, body, media_type)


def _push_image(client: httpx.Client, base: str, repo: str, arch: str,
                layer_kib: int) -> tuple[str, bytes]:
    layers = [gzip.compress(os.urandom(layer_kib * 1024)), gzip.compress(os.urandom(512))]
    digests = [upload_blob(client, base, repo, layer) for layer in layers]
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [digest_of(gzip.decompress(x)) for x in layers]}}).encode()
    config_digest = upload_blob(client, base, repo, config)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                  "size": len(config)},
                       "layers": [{"mediaType": OCI_GZIP_LAYER, "digest": d, "size": len(x)}
                                  for d, x in zip(digests, layers, strict=True)]}).encode()
    digest = put_manifest(client, base, repo, digest_of(body), body, OCI_MANIFEST)
    return digest, body


# -- the tools -------------------------------------------------------------------------------


Tool = Callable[[str, str, bool], list[str]]


def ours(config: Path, python: str) -> Tool:
    def command(src: str, dst: str, multi: bool) -> list[str]:
        return [python, "-m", "image_updater.cli", "retag", src, dst, "--config", str(config)]

    return command


def skopeo(src: str, dst: str, multi: bool) -> list[str]:
    # --preserve-digests: copy, never re-compress, so both tools produce the same digest
    return ["skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
            "--dest-tls-verify=false", *(["--all"] if multi else []),
            f"docker://{src}", f"docker://{dst}"]


@dataclass
class Sample:
    seconds: float
    requests: int


def run_once(server: RegistryServer, host: str, tool: Tool, *, cross: bool, multi: bool,
             layer_kib: int) -> Sample:
    src_repo = f"bench/src-{uuid.uuid4().hex[:8]}"
    dst_repo = f"bench/dst-{uuid.uuid4().hex[:8]}" if cross else src_repo
    digest = push_fresh(server.url, src_repo, "dev", multi=multi, layer_kib=layer_kib)
    before = len(server.access_log_lines())
    started = time.perf_counter()
    proc = subprocess.run(tool(f"{host}/{src_repo}:dev", f"{host}/{dst_repo}:staging", multi),
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                          env=TOOL_ENV)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(tool('SRC', 'DST', multi)[:3])} failed: {proc.stderr}")
    time.sleep(0.2)  # the registry writes its access log just after answering
    requests = len(server.access_log_lines()) - before
    landed = httpx.get(f"{server.url}/v2/{dst_repo}/manifests/staging", timeout=10,
                       headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"})
    if digest_of(landed.content) != digest:
        raise SystemExit(f"the copy of {digest} arrived as {digest_of(landed.content)}")
    return Sample(seconds=elapsed, requests=requests)


SCENARIOS = [("same repo, 1 platform", False, False), ("same repo, 2-platform index", False, True),
             ("cross repo, 1 platform", True, False), ("cross repo, 2-platform index", True, True)]


def measure(server: RegistryServer, host: str, runs: int, layer_kib: int,
            workdir: Path, python: str) -> list[tuple[str, Sample, Sample]]:
    config = workdir / f"config-{host.replace(':', '-')}.yaml"
    config.write_text(json.dumps({"registries": [{"host": host, "insecure": True}]}))
    rows = []
    for name, cross, multi in SCENARIOS:
        samples: dict[str, list[Sample]] = {"ours": [], "skopeo": []}
        for _ in range(runs):  # interleaved, so drift hits both tools alike
            for label, tool in (("ours", ours(config, python)), ("skopeo", skopeo)):
                samples[label].append(run_once(server, host, tool, cross=cross, multi=multi,
                                               layer_kib=layer_kib))
        rows.append((name, _median(samples["ours"]), _median(samples["skopeo"])))
    return rows


def _median(samples: list[Sample]) -> Sample:
    return Sample(seconds=statistics.median(s.seconds for s in samples),
                  requests=int(statistics.median(s.requests for s in samples)))


def startup_seconds(runs: int, python: str) -> float:
    """Interpreter start plus the imports ``retag`` needs, without any request: the floor."""
    code = ("import image_updater.cli, image_updater.commands, image_updater.engine.promote, "
            "image_updater.wiring.registries")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-c", code], cwd=ROOT, check=True, env=TOOL_ENV)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table(results: list[tuple[str, list[tuple[str, Sample, Sample]]]], runs: int,
          startup: float) -> str:
    lines = ["| network | scenario | retag (s) | skopeo (s) | retag / skopeo | retag requests "
             "| skopeo requests |", "|---|---|---:|---:|---:|---:|---:|"]
    for network, rows in results:
        for name, a, b in rows:
            lines.append(f"| {network} | {name} | {a.seconds:.3f} | {b.seconds:.3f} | "
                         f"{a.seconds / b.seconds:.2f} | {a.requests} | {b.requests} |")
    lines.append(f"\nMedian of {runs} runs each; whole processes, start-up included. Python "
                 f"start-up with retag's imports alone (no request): {startup:.3f} s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--layer-kib", type=int, default=1024,
                        help="size of each image's big layer (random, gzip)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs retag; point it at an environment with "
                             "only the runtime dependencies (as in the container image) to "
                             "measure what a PostSync job pays; default: this one")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed (Debian package 'skopeo').")
    workdir = Path(tempfile.mkdtemp(prefix="bench-retag-"))
    startup_seconds(1, args.python)  # warm-up: writes the .pyc files an install would have
    try:
        with RegistryServer() as server:
            results = [("loopback", measure(server, server.host, args.runs, args.layer_kib,
                                            workdir, args.python))]
            with DelayProxy(server.port, args.rtt_ms / 1000) as proxy:
                results.append((f"+{args.rtt_ms:g} ms RTT",
                                measure(server, f"127.0.0.1:{proxy.port}", args.runs,
                                        args.layer_kib, workdir, args.python)))
        print(table(results, args.runs, startup_seconds(args.runs, args.python)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
