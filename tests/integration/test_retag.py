"""``retag`` against real CNCF registries on 127.0.0.1 (and ECR on moto server mode).

Inputs are pushed with the fixtures' plain HTTP helpers; results are checked with plain
HTTP too, and requests are counted twice: by the client's ``on_request`` hook and by the
registry's own access log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_updater.cli import main
from image_updater.engine.promote import CAS_READ_MAX_AGE, RetagResult, retag
from image_updater.errors import (
    ConfigError,
    ConflictError,
    InvalidReferenceError,
    RegistryError,
)
from image_updater.registry.base import MANIFEST_ACCEPT, OCI_MANIFEST, Manifest
from image_updater.registry.copy import child_digests, copy_image, referenced_blobs
from image_updater.registry.ecr import EcrRegistry
from image_updater.registry.ecr_session import EcrOptions
from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from tests.fixtures.moto import ECR_HOST, MotoServer, fake_session
from tests.fixtures.registry import RegistryServer, digest_of, push_image, push_index

pytestmark = pytest.mark.integration

ACCEPT = {"Accept": ", ".join(MANIFEST_ACCEPT)}
PASSWORD = "s3cret-DO-NOT-LEAK-42"


# -- helpers ---------------------------------------------------------------------------------


def unique(prefix: str = "team/app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def manifest_bytes(server: RegistryServer, repo: str, ref: str) -> bytes | None:
    r = httpx.get(f"{server.url}/v2/{repo}/manifests/{ref}", headers=ACCEPT, timeout=10)
    return r.content if r.status_code == 200 else None


def tag_digest(server: RegistryServer, repo: str, tag: str) -> str | None:
    body = manifest_bytes(server, repo, tag)
    return digest_of(body) if body is not None else None


def blob_present(server: RegistryServer, repo: str, digest: str) -> bool:
    return httpx.head(f"{server.url}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 200


def blobs_of(server: RegistryServer, repo: str, ref: str) -> list[str]:
    body = manifest_bytes(server, repo, ref)
    assert body is not None
    data = json.loads(body)
    return [data["config"]["digest"], *(layer["digest"] for layer in data["layers"])]


class Requests:
    """on_request hook: every HTTP request the client sends."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, url: str) -> None:
        self.seen.append((method, url))


class LogMark:
    """The registry's access-log lines written after this point."""

    def __init__(self, server: RegistryServer) -> None:
        self.server = server
        self.start = len(server.access_log_lines())

    def lines(self) -> list[str]:
        return self.server.access_log_lines()[self.start:]

    def requests(self) -> list[str]:
        """``"METHOD path"`` per request, from the access log."""
        out = []
        for line in self.lines():
            method, _, rest = line.split('"', 2)[1].partition(" ")
            out.append(f"{method} {rest.rsplit(' ', 1)[0]}")
        return out


def run_retag(servers: list[RegistryServer], src: str, dst: str, *,
              hook: Requests | None = None, **kwargs: Any) -> RetagResult:
    """``retag()`` with one client per registry, closed afterwards."""
    hook = hook or Requests()
    clients = {s.host: OciRegistry(RegistryOptions(host=s.host, insecure=True, max_retries=0),
                                   on_request=hook) for s in servers}

    async def go() -> RetagResult:
        try:
            return await retag(src, dst, registry_for=clients.__getitem__,
                               count_requests=lambda: len(hook.seen), **kwargs)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(go())


def write_settings(tmp_path: Path, *servers: RegistryServer, username: str | None = None,
                   password_env: str | None = None) -> Path:
    registries = []
    for s in servers:
        entry: dict[str, Any] = {"host": s.host, "insecure": True}
        if username:
            entry["credentials"] = {"username": username, "password_env": password_env}
        registries.append(entry)
    path = tmp_path / f"settings-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps({"registries": registries, "cache_dir": str(tmp_path / "c")}))
    return path


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the real CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# -- same repository -------------------------------------------------------------------------


def test_same_repo_retag_moves_only_the_manifest(fresh_registry: RegistryServer) -> None:
    repo = unique()
    digest = push_image(fresh_registry.url, repo, "dev", seed="same-repo")
    hook, mark = Requests(), LogMark(fresh_registry)

    result = run_retag([fresh_registry], f"{fresh_registry.host}/{repo}:dev",
                       f"{fresh_registry.host}/{repo}:staging", hook=hook)
    logged = mark.requests()

    assert (result.status, result.digest) == ("promoted", digest)
    assert manifest_bytes(fresh_registry, repo, "staging") == manifest_bytes(
        fresh_registry, repo, "dev")
    # One round trip reads the source and the destination at once, the second writes.
    expected = sorted([f"GET /v2/{repo}/manifests/dev", f"HEAD /v2/{repo}/manifests/staging",
                       f"PUT /v2/{repo}/manifests/staging"])
    assert sorted(logged) == expected
    assert sorted(f"{m} {httpx.URL(u).path}" for m, u in hook.seen) == expected
    assert result.requests == 3


def test_rerun_says_already_promoted_and_writes_nothing(
        registry: RegistryServer, tmp_path: Path, cli: Cli) -> None:
    repo = unique()
    digest = push_image(registry.url, repo, "dev", seed="rerun")
    cfg = str(write_settings(tmp_path, registry))
    src, dst = f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging"

    first = cli("retag", src, dst, "--config", cfg)
    mark = LogMark(registry)
    second = cli("retag", src, dst, "--config", cfg)

    assert first[0] == 0 and f"promoted {src} to {dst}: {digest}" in first[1]
    assert second[0] == 0 and f"already promoted: {dst} is {digest}" in second[1]
    assert not [r for r in mark.requests() if r.startswith(("PUT", "POST"))]
    assert tag_digest(registry, repo, "staging") == digest


def test_a_pinned_digest_is_promoted_even_after_the_tag_moved(
        registry: RegistryServer, tmp_path: Path, cli: Cli) -> None:
    repo = unique()
    tested = push_image(registry.url, repo, "dev", seed="tested")
    newer = push_image(registry.url, repo, "dev", seed="pushed-during-tests")

    code, out, _ = cli("retag", f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                       "--digest", tested, "--config", str(write_settings(tmp_path, registry)))

    assert code == 0
    assert tag_digest(registry, repo, "staging") == tested != newer
    assert f"points at {newer} now, not at the given digest" in out
    assert f"promoted the given digest {tested}" in out


def test_a_pinned_digest_must_exist_in_the_source_repository(
        registry: RegistryServer, tmp_path: Path, cli: Cli) -> None:
    repo, other = unique(), unique()
    push_image(registry.url, repo, "dev", seed="exists")
    elsewhere = push_image(registry.url, other, "dev", seed="only-in-another-repo")

    code, _, err = cli("retag", f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                       "--digest", elsewhere, "--config", str(write_settings(tmp_path, registry)))

    assert code == 3
    assert f"Digest {elsewhere} does not exist in {registry.host}/{repo}" in err
    assert tag_digest(registry, repo, "staging") is None


# -- compare-and-swap ------------------------------------------------------------------------


def test_expect_current_mismatch_is_refused_with_exit_4(
        registry: RegistryServer, tmp_path: Path, cli: Cli) -> None:
    repo = unique()
    candidate = push_image(registry.url, repo, "dev", seed="candidate")
    running = push_image(registry.url, repo, "staging", seed="running")
    stale = digest_of(b"what the caller believed")

    code, _, err = cli("retag", f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                       "--expect-current", stale, "--config",
                       str(write_settings(tmp_path, registry)))

    assert code == 4
    assert running in err and stale in err and candidate in err
    assert tag_digest(registry, repo, "staging") == running


def test_expect_current_match_promotes(registry: RegistryServer, tmp_path: Path,
                                       cli: Cli) -> None:
    repo = unique()
    candidate = push_image(registry.url, repo, "dev", seed="candidate")
    running = push_image(registry.url, repo, "staging", seed="running")

    code, _, _ = cli("retag", f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                     "--expect-current", running, "--config",
                     str(write_settings(tmp_path, registry)))

    assert code == 0 and tag_digest(registry, repo, "staging") == candidate


def test_expect_current_none_creates_but_never_overwrites(
        registry: RegistryServer, tmp_path: Path, cli: Cli) -> None:
    repo = unique()
    first = push_image(registry.url, repo, "dev", seed="first")
    cfg = str(write_settings(tmp_path, registry))
    src, dst = f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging"

    created = cli("retag", src, dst, "--expect-current", "none", "--config", cfg)
    second = push_image(registry.url, repo, "dev", seed="second")
    refused = cli("retag", src, dst, "--expect-current", "none", "--config", cfg)

    assert created[0] == 0 and refused[0] == 4
    assert "does not exist" in refused[2] or "nothing" in refused[2]
    assert tag_digest(registry, repo, "staging") == first != second


def test_expect_current_reads_the_tag_back_once_after_the_put(
        fresh_registry: RegistryServer) -> None:
    repo = unique()
    candidate = push_image(fresh_registry.url, repo, "dev", seed="candidate")
    running = push_image(fresh_registry.url, repo, "staging", seed="running")
    mark = LogMark(fresh_registry)

    result = run_retag([fresh_registry], f"{fresh_registry.host}/{repo}:dev",
                       f"{fresh_registry.host}/{repo}:staging", expect_current=running)

    assert (result.status, result.digest, result.previous) == ("promoted", candidate, running)
    # HEAD + GET at once, PUT, then the read-back HEAD: 4 requests, 3 round trips
    logged = mark.requests()
    assert sorted(logged[:2]) == [f"GET /v2/{repo}/manifests/dev",
                                  f"HEAD /v2/{repo}/manifests/staging"]
    assert logged[2:] == [f"PUT /v2/{repo}/manifests/staging",
                          f"HEAD /v2/{repo}/manifests/staging"]
    assert result.requests == 4


class MeddlingRegistry(OciRegistry):
    """A real client that lets another writer move a tag at a chosen moment.

    ``after_put``: another writer's PUT lands right after ours (it read the old value too).
    ``after_head``: another writer moves the tag right after our compare-and-swap read, and
    our source read is slow, so our read is stale by the time we PUT.
    """

    def __init__(self, server: RegistryServer, repo: str, meddler: str, *, when: str) -> None:
        super().__init__(RegistryOptions(host=server.host, insecure=True, max_retries=0))
        self.server, self.repo, self.meddler, self.when = server, repo, meddler, when
        self.heads = 0
        self.moved: asyncio.Event | None = None

    def _move_tag(self, tag: str) -> None:
        body = manifest_bytes(self.server, self.repo, self.meddler)
        assert body is not None
        httpx.put(f"{self.server.url}/v2/{self.repo}/manifests/{tag}", content=body,
                  headers={"Content-Type": json.loads(body)["mediaType"]},
                  timeout=10).raise_for_status()

    async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        reported = await super().put_manifest(repository, tag, manifest)
        if self.when == "after_put" and tag == "staging":
            self._move_tag(tag)
        return reported

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        seen = await super().head_manifest(repository, reference)
        self.heads += 1
        if self.when == "after_head" and self.heads == 1:
            self._move_tag(reference)
            self._moved().set()
        return seen

    def _moved(self) -> asyncio.Event:
        self.moved = self.moved or asyncio.Event()  # created on the loop that runs retag
        return self.moved

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        if self.when == "after_head":  # our read of the destination is stale by the PUT
            await self._moved().wait()
            await asyncio.sleep(CAS_READ_MAX_AGE * 2)
        return await super().get_manifest(repository, reference)


@pytest.mark.parametrize("when", ["after_put", "after_head"])
def test_a_concurrent_writer_that_read_the_same_value_wins_and_we_say_so(
        registry: RegistryServer, when: str) -> None:
    repo = unique()
    candidate = push_image(registry.url, repo, "dev", seed="candidate")
    running = push_image(registry.url, repo, "staging", seed="running")
    meddler = push_image(registry.url, repo, None, seed="the other writer")
    client = MeddlingRegistry(registry, repo, meddler, when=when)

    async def go() -> RetagResult:
        try:
            return await retag(f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                               expect_current=running, registry_for=lambda _host: client)
        finally:
            await client.aclose()

    with pytest.raises(ConflictError) as caught:
        asyncio.run(go())
    assert meddler in str(caught.value) and candidate in str(caught.value)
    # after_put: ours was replaced and we say so; after_head: ours was never written
    assert tag_digest(registry, repo, "staging") == meddler
    assert client.heads == 2


def run_at_once(jobs: dict[str, list[str]]) -> dict[str, int]:
    """Run the real CLI once per job, in threads released together; exit code per job."""
    start = threading.Barrier(len(jobs))
    codes: dict[str, int] = {}

    def job(name: str, argv: list[str]) -> None:
        start.wait()
        codes[name] = main(argv)

    threads = [threading.Thread(target=job, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return codes


def test_concurrent_retags_with_one_expect_current_never_both_succeed(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two jobs promote different images over the same expected digest, through the CLI."""
    cfg = str(write_settings(tmp_path, registry))
    raced = 0
    for trial in range(20):
        repo = unique()
        before = push_image(registry.url, repo, "staging", seed=f"S0 {trial}")
        digests = {name: push_image(registry.url, repo, name, seed=f"{name} {trial}")
                   for name in ("a", "b")}
        codes = run_at_once({
            name: ["retag", f"{registry.host}/{repo}:{name}", f"{registry.host}/{repo}:staging",
                   "--expect-current", before, "--config", cfg] for name in digests})
        err = capsys.readouterr().err
        raced += "concurrent writer won" in err

        winners = [name for name, code in codes.items() if code == 0]
        assert sorted(codes.values()) == [0, 4], (trial, codes, err)
        assert tag_digest(registry, repo, "staging") == digests[winners[0]], (trial, err)
    print(f"{raced} of 20 trials had both jobs pass the compare-and-swap read")
    assert raced, "the jobs never raced: the test did not exercise the read-back"


# -- errors ----------------------------------------------------------------------------------


def test_missing_source_exits_3_naming_the_image(registry: RegistryServer, tmp_path: Path,
                                                 cli: Cli) -> None:
    repo = unique()
    push_image(registry.url, repo, "other", seed="x")

    code, _, err = cli("retag", f"{registry.host}/{repo}:dev", f"{registry.host}/{repo}:staging",
                       "--config", str(write_settings(tmp_path, registry)))

    assert code == 3
    assert f"Tag dev does not exist in {registry.host}/{repo}" in err


@pytest.mark.parametrize(("dst_suffix", "why"), [
    ("", "must name a tag"),
    (":staging@sha256:" + "a" * 64, "must name a tag and no digest"),
])
def test_destination_without_a_tag_is_a_usage_error(
        registry: RegistryServer, tmp_path: Path, cli: Cli, dst_suffix: str, why: str) -> None:
    code, _, err = cli("retag", f"{registry.host}/team/x:dev",
                       f"{registry.host}/team/y{dst_suffix}", "--config",
                       str(write_settings(tmp_path, registry)))
    assert code == 2 and why in err


def test_malformed_digest_is_a_usage_error(registry: RegistryServer, tmp_path: Path,
                                           cli: Cli) -> None:
    code, _, err = cli("retag", f"{registry.host}/team/x:dev", f"{registry.host}/team/x:prod",
                       "--digest", "sha256:NOTHEX", "--config",
                       str(write_settings(tmp_path, registry)))
    assert code == 2 and "--digest 'sha256:NOTHEX' is not a sha256 digest" in err


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry that only lets ``ci`` in, with htpasswd (bcrypt) basic auth."""
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "ci", PASSWORD], capture_output=True,
                              text=True, check=True).stdout
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd)
    with RegistryServer(extra_config={"auth": {"htpasswd": {"realm": "test",
                                                            "path": str(path)}}}) as server:
        yield server


def test_refused_credentials_exit_5_without_showing_the_password(
        auth_registry: RegistryServer, tmp_path: Path, cli: Cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = str(write_settings(tmp_path, auth_registry, username="ci",
                             password_env="TEST_REGISTRY_PASSWORD"))
    src, dst = f"{auth_registry.host}/team/app:dev", f"{auth_registry.host}/team/app:staging"
    wrong = "wrong-" + PASSWORD
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", wrong)

    code, out, err = cli("retag", src, dst, "--config", cfg)

    assert code == 5
    assert f"Registry {auth_registry.host} refused access" in err
    assert wrong not in out + err and PASSWORD not in out + err


def test_valid_credentials_pass_the_auth_registry(
        auth_registry: RegistryServer, tmp_path: Path, cli: Cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixtures push anonymously, so the input goes in with basic auth by hand.
    with httpx.Client(auth=("ci", PASSWORD), timeout=10) as client:
        digest = push_image(auth_registry.url, "team/app", "dev", seed="auth", client=client)
    cfg = str(write_settings(tmp_path, auth_registry, username="ci",
                             password_env="TEST_REGISTRY_PASSWORD"))
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", PASSWORD)

    code, out, _ = cli("retag", f"{auth_registry.host}/team/app:dev",
                       f"{auth_registry.host}/team/app:staging", "--config", cfg)

    assert code == 0 and digest in out and PASSWORD not in out


# -- across repositories and registries ------------------------------------------------------


def test_cross_repository_retag_mounts_blobs_instead_of_uploading(
        fresh_registry: RegistryServer) -> None:
    src_repo, dst_repo = unique("team/src"), unique("team/dst")
    digest = push_image(fresh_registry.url, src_repo, "dev", seed="mount")
    mark = LogMark(fresh_registry)

    result = run_retag([fresh_registry], f"{fresh_registry.host}/{src_repo}:dev",
                       f"{fresh_registry.host}/{dst_repo}:staging")
    requests = mark.requests()

    assert result.status == "promoted" and tag_digest(fresh_registry, dst_repo,
                                                      "staging") == digest
    mounts = [r for r in requests if r.startswith(f"POST /v2/{dst_repo}/blobs/uploads/?mount=")]
    assert len(mounts) == 2  # config and layer
    assert not [r for r in requests if r.startswith("PUT") and "/blobs/" in r]
    assert not [r for r in requests if r.startswith("GET") and "/blobs/" in r]
    assert all(blob_present(fresh_registry, dst_repo, b)
               for b in blobs_of(fresh_registry, src_repo, "dev"))


def test_multi_arch_index_arrives_with_every_child_by_digest(
        fresh_registry: RegistryServer) -> None:
    src_repo, dst_repo = unique("team/src"), unique("team/dst")
    index, children = push_index(fresh_registry.url, src_repo, "dev", seed="multi",
                                 arches=("amd64", "arm64", "s390x"))
    mark = LogMark(fresh_registry)

    result = run_retag([fresh_registry], f"{fresh_registry.host}/{src_repo}:dev",
                       f"{fresh_registry.host}/{dst_repo}:staging")
    puts = [r for r in mark.requests() if r.startswith(f"PUT /v2/{dst_repo}/manifests/")]

    assert result.digest == index == tag_digest(fresh_registry, dst_repo, "staging")
    for child in children.values():
        assert manifest_bytes(fresh_registry, dst_repo, child) == manifest_bytes(
            fresh_registry, src_repo, child)
        assert all(blob_present(fresh_registry, dst_repo, b)
                   for b in blobs_of(fresh_registry, src_repo, child))
    # children by digest first, the index under its tag last
    assert sorted(puts[:-1]) == sorted(f"PUT /v2/{dst_repo}/manifests/{c}"
                                       for c in children.values())
    assert puts[-1] == f"PUT /v2/{dst_repo}/manifests/staging"


def test_cross_registry_retag_streams_every_platform(
        registry: RegistryServer, fresh_registry: RegistryServer) -> None:
    src_repo, dst_repo = unique("team/src"), unique("team/dst")
    index, children = push_index(registry.url, src_repo, "dev", seed="far")
    src_mark, dst_mark = LogMark(registry), LogMark(fresh_registry)

    result = run_retag([registry, fresh_registry], f"{registry.host}/{src_repo}:dev",
                       f"{fresh_registry.host}/{dst_repo}:prod")
    gets = [r for r in src_mark.requests() if r.startswith(f"GET /v2/{src_repo}/blobs/")]
    uploads = [r for r in dst_mark.requests() if r.startswith(f"PUT /v2/{dst_repo}/blobs/")]

    assert result.digest == index == tag_digest(fresh_registry, dst_repo, "prod")
    blobs = {b for child in children.values() for b in blobs_of(registry, src_repo, child)}
    assert all(blob_present(fresh_registry, dst_repo, b) for b in blobs)
    # every blob read once from the source and uploaded once to the destination
    assert len(gets) == len(uploads) == len(blobs)

    rerun_mark = LogMark(fresh_registry)
    again = run_retag([registry, fresh_registry], f"{registry.host}/{src_repo}:dev",
                      f"{fresh_registry.host}/{dst_repo}:prod")
    assert again.status == "already"
    assert not [r for r in rerun_mark.requests() if "/blobs/" in r or r.startswith("PUT")]


def test_cross_registry_single_image_is_byte_identical(
        registry: RegistryServer, fresh_registry: RegistryServer) -> None:
    src_repo = unique("team/src")
    digest = push_image(registry.url, src_repo, None, seed="by-digest")

    result = run_retag([registry, fresh_registry], f"{registry.host}/{src_repo}@{digest}",
                       f"{fresh_registry.host}/{src_repo}:dev")

    assert result.digest == digest
    assert manifest_bytes(fresh_registry, src_repo, "dev") == manifest_bytes(
        registry, src_repo, digest)


# -- start-up cost ---------------------------------------------------------------------------


def test_retag_on_an_oci_registry_never_imports_boto3_or_git(
        registry: RegistryServer, tmp_path: Path) -> None:
    repo = unique()
    digest = push_image(registry.url, repo, "dev", seed="fast-start")
    script = (
        "import sys\n"
        "from image_updater.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('LOADED', sorted(m for m in ('boto3', 'botocore', 'git') if m in sys.modules))\n"
        "sys.exit(code)\n")
    proc = subprocess.run(
        [sys.executable, "-c", script, "retag", f"{registry.host}/{repo}:dev",
         f"{registry.host}/{repo}:staging", "--config", str(write_settings(tmp_path, registry))],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    assert tag_digest(registry, repo, "staging") == digest


# -- ECR (moto server mode) ------------------------------------------------------------------


def test_ecr_retag_within_a_repository(moto_server: MotoServer) -> None:
    client = fake_session().client("ecr", endpoint_url=moto_server.url)
    repo = unique("team/ecr")
    client.create_repository(repositoryName=repo)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest_of(b"config"), "size": 6}, "layers": []}, sort_keys=True).encode()
    digest = digest_of(body)
    client.put_image(repositoryName=repo, imageManifest=body.decode(), imageTag="dev",
                     imageManifestMediaType=OCI_MANIFEST, imageDigest=digest)
    ecr = EcrRegistry(ECR_HOST, options=EcrOptions(endpoint_url=moto_server.url),
                      session=fake_session())

    async def go() -> tuple[RetagResult, RetagResult]:
        try:
            registry_for = {ECR_HOST: ecr}.__getitem__
            first = await retag(f"{ECR_HOST}/{repo}:dev", f"{ECR_HOST}/{repo}:staging",
                                expect_current="none", registry_for=registry_for)
            again = await retag(f"{ECR_HOST}/{repo}:dev", f"{ECR_HOST}/{repo}:staging",
                                registry_for=registry_for)
            return first, again
        finally:
            await ecr.aclose()

    first, again = asyncio.run(go())
    images = client.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "staging"}],
                                    acceptedMediaTypes=[OCI_MANIFEST])["images"]
    client.close()
    assert (first.status, again.status) == ("promoted", "already")
    assert images[0]["imageId"]["imageDigest"] == digest
    assert images[0]["imageManifest"].encode() == body


def ecr_image(client: Any, repo: str, seed: str, tag: str | None = None) -> str:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest_of(seed.encode()), "size": len(seed)}, "layers": []},
        sort_keys=True).encode()
    digest = digest_of(body)
    client.put_image(repositoryName=repo, imageManifest=body.decode(), imageDigest=digest,
                     imageManifestMediaType=OCI_MANIFEST, **({"imageTag": tag} if tag else {}))
    return digest


def test_ecr_read_back_reports_a_concurrent_put_image_that_won(
        moto_server: MotoServer) -> None:
    client = fake_session().client("ecr", endpoint_url=moto_server.url)
    repo = unique("team/ecr")
    client.create_repository(repositoryName=repo)
    candidate = ecr_image(client, repo, "candidate", "dev")
    running = ecr_image(client, repo, "running", "staging")
    other = ecr_image(client, repo, "the other writer")

    class Meddling(EcrRegistry):
        async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
            reported = await super().put_manifest(repository, tag, manifest)
            ecr_image(client, repo, "the other writer", tag)  # its PutImage lands after ours
            return reported

    ecr = Meddling(ECR_HOST, options=EcrOptions(endpoint_url=moto_server.url),
                   session=fake_session())

    async def go() -> RetagResult:
        try:
            return await retag(f"{ECR_HOST}/{repo}:dev", f"{ECR_HOST}/{repo}:staging",
                               expect_current=running, registry_for={ECR_HOST: ecr}.__getitem__)
        finally:
            await ecr.aclose()

    with pytest.raises(ConflictError) as caught:
        asyncio.run(go())
    now = client.describe_images(repositoryName=repo, imageIds=[{"imageTag": "staging"}])
    client.close()
    assert other in str(caught.value) and candidate in str(caught.value)
    assert now["imageDetails"][0]["imageDigest"] == other


def test_ecr_cannot_copy_across_repositories_and_says_how_instead(
        moto_server: MotoServer) -> None:
    ecr = EcrRegistry(ECR_HOST, options=EcrOptions(endpoint_url=moto_server.url),
                      session=fake_session())
    manifest = Manifest(media_type=OCI_MANIFEST, digest=digest_of(b"{}"), body=b"{}")

    with pytest.raises(ConfigError) as caught:
        asyncio.run(copy_image(manifest, src=ecr, src_repository="team/a", dst=ecr,
                               dst_repository="team/b", tag="staging"))
    asyncio.run(ecr.aclose())
    assert "skopeo copy --all" in str(caught.value)


# -- manifest parsing (pure) -----------------------------------------------------------------


def _manifest(data: object, media_type: str = OCI_MANIFEST) -> Manifest:
    body = json.dumps(data).encode()
    return Manifest(media_type=media_type, digest=digest_of(body), body=body)


D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(("data", "message"), [
    ([], "is not a JSON object"),
    ({"config": {"digest": D1, "size": -1}}, "not a non-negative integer"),
    ({"config": {"digest": D1, "size": True}}, "not a non-negative integer"),
    ({"config": {"digest": "sha256:../../etc", "size": 1}}, "is not a sha256 digest"),
    ({"config": {"digest": D1, "size": 1}, "layers": "x"}, "'layers' field that is not a list"),
    ({"config": {"digest": D1, "size": 1}, "layers": ["x"]}, "is not a JSON object"),
])
def test_untrusted_manifests_are_refused(data: object, message: str) -> None:
    with pytest.raises((RegistryError, InvalidReferenceError), match=message):
        referenced_blobs(_manifest(data), "r/x@sha256:…")


def test_blobs_are_deduplicated_and_foreign_layers_left_out() -> None:
    manifest = _manifest({"config": {"digest": D1, "size": 3}, "layers": [
        {"digest": D2, "size": 5}, {"digest": D2, "size": 5},
        {"digest": "sha256:" + "3" * 64, "size": 9, "urls": ["https://example.com/l"],
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}]})
    assert [(b.digest, b.size) for b in referenced_blobs(manifest, "w")] == [(D1, 3), (D2, 5)]


def test_index_children_must_be_well_formed() -> None:
    index = _manifest({"manifests": [{"digest": D1, "size": 1}, {"digest": D1, "size": 1}]})
    assert child_digests(index, "w") == [D1]
    with pytest.raises(RegistryError, match="has no 'manifests' list"):
        child_digests(_manifest({"manifests": None}), "w")
