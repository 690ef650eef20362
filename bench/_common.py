"""Shared set-up for benchmarks: a populated local registry, a deploy repo and policies.

Inputs are created with plain HTTP calls and the git CLI (never with image-updater's own
clients), so what a benchmark measures does not also build its own fixture.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.gitrepo import BRANCH, GIT_ENV, make_bare_repo
from tests.fixtures.registry import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryServer,
    digest_of,
    put_manifest,
    upload_blob,
)

ENVS: tuple[str, ...] = ("dev", "staging", "prod")
SEED_REPO = "bench/seed"


@dataclass(frozen=True)
class Image:
    """One small image: its blobs are shared by every repository, manifests differ by label."""

    layer: bytes
    config: bytes

    def manifest(self, variant: str) -> bytes:
        # An annotation changes the manifest digest while reusing the same two blobs, so a
        # "moved" tag costs one manifest PUT and no blob upload.
        return json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(self.config),
                       "size": len(self.config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(self.layer),
                        "size": len(self.layer)}],
            "annotations": {"bench.variant": variant},
        }, sort_keys=True).encode()


def small_image() -> Image:
    layer = b"bench layer: the same bytes in every repository"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "created": "2026-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}},
                        sort_keys=True).encode()
    return Image(layer=layer, config=config)


def app_name(i: int) -> str:
    return f"app-{i:05d}"


def repository(i: int) -> str:
    return f"bench/{app_name(i)}"


# -- registry ------------------------------------------------------------------------------

def seed_registry(server: RegistryServer, image: Image, apps: int, *, workers: int = 8
                  ) -> dict[str, str]:
    """Push ``apps`` repositories with one tag per env; return {env: manifest digest}.

    Blobs are uploaded once into a seed repository and cross-mounted into the others.
    """
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(timeout=30, limits=limits) as client:
        upload_blob(client, server.url, SEED_REPO, image.layer)
        upload_blob(client, server.url, SEED_REPO, image.config)
        bodies = {env: image.manifest(env) for env in ENVS}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda i: _seed_one(client, server.url, image, repository(i), bodies),
                          range(apps)))
    return {env: digest_of(body) for env, body in bodies.items()}


def _seed_one(client: httpx.Client, base: str, image: Image, repo: str,
              bodies: dict[str, bytes]) -> None:
    for blob in (image.layer, image.config):
        mount_blob(client, base, repo, digest_of(blob))
    for env, body in bodies.items():
        put_manifest(client, base, repo, env, body, OCI_MANIFEST)


def mount_blob(client: httpx.Client, base: str, repo: str, digest: str) -> None:
    r = client.post(f"{base}/v2/{repo}/blobs/uploads/",
                    params={"mount": digest, "from": SEED_REPO})
    if r.status_code != 201:
        raise RuntimeError(f"mounting {digest} into {repo} answered {r.status_code}, not 201; "
                           "the registry declined the cross-repository mount.")


def move_tags(server: RegistryServer, image: Image, targets: Iterable[tuple[int, str]], *,
              suffix: str = "moved", workers: int = 8) -> dict[tuple[int, str], str]:
    """Point each (app index, env) tag at a new manifest; return the new digests."""
    bodies = {env: image.manifest(f"{env}-{suffix}") for env in ENVS}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(timeout=30, limits=limits) as client, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        def move(target: tuple[int, str]) -> None:
            i, env = target
            put_manifest(client, server.url, repository(i), env, bodies[env], OCI_MANIFEST)

        wanted = list(targets)
        list(pool.map(move, wanted))
    return {(i, env): digest_of(bodies[env]) for i, env in wanted}


class AccessLog:
    """Counts the registry's access-log lines as they are appended.

    Reads only what is new, in chunks: reading the whole log each cycle (tens of MB at
    1,000 apps) would add its own memory to the peak RSS this benchmark reports.
    """

    def __init__(self, server: RegistryServer) -> None:
        self._path = server.log_path
        self._offset = 0
        self.count = 0

    def update(self) -> int:
        with self._path.open("rb") as log:
            log.seek(self._offset)
            while chunk := log.read(1 << 16):
                complete, newline, _ = chunk.rpartition(b"\n")
                if not newline:
                    break  # a line still being written: count it next time
                self._offset += len(complete) + 1
                self.count += sum(1 for line in complete.split(b"\n")
                                  if b'"' in line and b"HTTP/1.1" in line)
                log.seek(self._offset)
        return self.count


# -- deploy repository and policies --------------------------------------------------------

def values_text(app: str, env: str, digest: str) -> str:
    return (f"# Helm values for {app} in {env}\n"
            "replicaCount: 1\n"
            "image:\n"
            f"  repository: registry.example.com/{app}\n"
            f"  digest: {digest}  # written by image-updater\n"
            "service:\n"
            "  port: 8080\n")


def make_deploy_repo(root: Path, apps: int, digests: dict[str, str]) -> Path:
    """A bare repository already holding the right digest for every app environment."""
    files = {f"{app_name(i)}/values-{env}.yaml": values_text(app_name(i), env, digests[env])
             for i in range(apps) for env in ENVS}
    # 30,000 new objects start `git gc --auto` in the background, which races the
    # fixture's removal of its work tree: no automatic gc while the repository is made.
    os.environ.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="gc.auto", GIT_CONFIG_VALUE_0="0")
    try:
        return make_bare_repo(root, files).path
    finally:
        for key in ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"):
            os.environ.pop(key, None)


def write_policies(folder: Path, host: str, deploy: Path, apps: int) -> Path:
    """One policy file per app, as a ConfigMap mounted as a folder would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(apps):
        name = app_name(i)
        envs = "".join(f"  {env}: {{file: {name}/values-{env}.yaml, tag: {env}}}\n"
                       for env in ENVS)
        (folder / f"{name}.yaml").write_text(
            f"app: {name}\n"
            f"image: {host}/{repository(i)}\n"
            f'git: {{url: "file://{deploy}", branch: {BRANCH}}}\n'
            "defaults:\n"
            "  strategy: digest\n"
            "  write: {digest: image.digest}\n"
            "environments:\n" + envs)
    return folder


def head_file(deploy: Path, path: str) -> str:
    """A file's text at the deploy repository's head, read with the git CLI."""
    return _git(deploy, "cat-file", "blob", f"{BRANCH}:{path}")


def commit_count(deploy: Path) -> int:
    return int(_git(deploy, "rev-list", "--count", BRANCH))


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={**os.environ, **GIT_ENV})
    return proc.stdout


# -- measuring and printing ----------------------------------------------------------------

def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """ru_maxrss is in KiB on Linux (bytes on macOS)."""
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(who).ru_maxrss * scale / 2**20


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def workdir(keep: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    if keep:
        print(f"work directory (kept): {path}", file=sys.stderr)
    return path


def remove(path: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
