"""OciRegistry against a real CNCF registry, and against a scripted stub for misbehaviour."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from image_updater.errors import (
    DigestMismatchError,
    ImmutableTagError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    TransientRegistryError,
)
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    sha256_digest,
)
from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from image_updater.registry.ratelimit import RateLimiter, TokenBucket
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.http_stub import HttpStub, Reply
from tests.fixtures.registry import RegistryServer, free_port, push_image, push_index

pytestmark = pytest.mark.integration

T = TypeVar("T")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
JSON = {"Content-Type": "application/json"}


class Sleeps:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Requests:
    """on_request hook: remembers (method, url) of every HTTP request sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, url: str) -> None:
        self.seen.append((method, url))

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, u in self.seen if m == method and fragment in u)


def client(host: str, *, sleeps: Sleeps | None = None, requests: Requests | None = None,
           metrics: Metrics | None = None, wall_clock: Callable[[], float] | None = None,
           **options: Any) -> OciRegistry:
    extra: dict[str, Any] = {"wall_clock": wall_clock} if wall_clock else {}
    return OciRegistry(RegistryOptions(host=host, insecure=True, **options),
                       sleep=sleeps or Sleeps(), on_request=requests, metrics=metrics,
                       jitter=lambda: 1.0, **extra)


def run(registry: OciRegistry, scenario: Callable[[OciRegistry], Awaitable[T]]) -> T:
    async def main() -> T:
        async with registry:
            return await scenario(registry)
    return asyncio.run(main())


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


def manifest_body(seed: str) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
              "digest": "sha256:" + hashlib.sha256(seed.encode()).hexdigest()}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                       "layers": [], "seed": seed}).encode()


# -- the real registry ---------------------------------------------------------------------


def test_tags_digests_head_and_get(registry: RegistryServer) -> None:
    dev = push_image(registry.url, "oci/basic", "dev", seed="dev")
    staging = push_image(registry.url, "oci/basic", "staging", seed="staging")
    requests = Requests()

    async def scenario(reg: OciRegistry) -> None:
        assert sorted(await reg.list_tags("oci/basic")) == ["dev", "staging"]
        assert await reg.digests("oci/basic", ["dev", "staging", "missing", "dev"]) == {
            "dev": dev, "staging": staging}
        assert await reg.head_manifest("oci/basic", "dev") == (dev, OCI_MANIFEST)
        assert await reg.head_manifest("oci/basic", dev) == (dev, OCI_MANIFEST)
        assert await reg.head_manifest("oci/basic", "missing") is None
        by_tag = await reg.get_manifest("oci/basic", "staging")
        by_digest = await reg.get_manifest("oci/basic", staging)
        assert by_tag == by_digest
        assert by_tag.digest == staging == sha256_digest(by_tag.body)
        assert by_tag.media_type == OCI_MANIFEST and not by_tag.is_index

    run(client(registry.host, requests=requests), scenario)
    # one HEAD per distinct tag for digests(), no GET needed
    assert requests.count("HEAD", "/manifests/missing") == 2
    assert requests.count("HEAD", "/manifests/dev") == 2


def test_index_and_created(registry: RegistryServer) -> None:
    index, children = push_index(registry.url, "oci/multi", "dev", seed="multi")
    requests = Requests()

    async def scenario(reg: OciRegistry) -> None:
        manifest = await reg.get_manifest("oci/multi", "dev")
        assert manifest.is_index and manifest.media_type == OCI_INDEX
        assert manifest.digest == index
        assert await reg.head_manifest("oci/multi", "dev") == (index, OCI_INDEX)
        assert await reg.created("oci/multi", index) == CREATED
        assert await reg.created("oci/multi", index, platform="linux/arm64") == CREATED
        assert await reg.created("oci/multi", children["amd64"]) == CREATED
        before = len(requests.seen)
        assert await reg.created("oci/multi", index) == CREATED  # digests are immutable
        assert len(requests.seen) == before
        with pytest.raises(NotFoundError, match=r"no manifest for linux/s390x \(available: "
                                                r"linux/amd64, linux/arm64\)"):
            await reg.created("oci/multi", index, platform="linux/s390x")

    run(client(registry.host, requests=requests), scenario)
    # the index's first child was the one read for created()
    assert requests.count("GET", f"/manifests/{children['amd64']}") >= 1


def test_not_found_messages(registry: RegistryServer) -> None:
    push_image(registry.url, "oci/present", "dev", seed="present")

    async def scenario(reg: OciRegistry) -> None:
        with pytest.raises(NotFoundError) as tag:
            await reg.get_manifest("oci/present", "nope")
        assert str(tag.value) == (f"Tag nope not found in {registry.host}/oci/present; push it "
                                  "or fix the policy's tag.")
        with pytest.raises(NotFoundError) as repo:
            await reg.get_manifest("oci/absent", "dev")
        assert str(repo.value).startswith(
            f"Repository oci/absent does not exist on {registry.host};")
        with pytest.raises(NotFoundError, match="Repository oci/absent does not exist"):
            await reg.digests("oci/absent", ["dev", "prod"])
        with pytest.raises(NotFoundError, match="Repository oci/absent does not exist"):
            await reg.list_tags("oci/absent")

    run(client(registry.host), scenario)


def test_put_manifest_mount_and_copy_between_registries(
        registry: RegistryServer, fresh_registry: RegistryServer) -> None:
    digest = push_image(registry.url, "oci/src", "dev", seed="copy")
    requests = Requests()

    async def scenario(src: OciRegistry) -> None:
        manifest = await src.get_manifest("oci/src", digest)
        layers = json.loads(manifest.body)
        blobs = [layers["config"], *layers["layers"]]
        # same registry: mount from the source repository, then tag
        for blob in blobs:
            assert await src.mount_blob("oci/mounted", blob["digest"], "oci/src") is True
            assert await src.blob_exists("oci/mounted", blob["digest"])
        assert await src.put_manifest("oci/mounted", "staging", manifest) == digest
        # a repository without the blob cannot lend it: declined, upload cancelled
        assert await src.mount_blob("oci/mounted2", blobs[0]["digest"], "oci/none") is False
        # another registry: stream each blob through, then tag
        async with client(fresh_registry.host) as dst:
            for blob in blobs:
                assert not await dst.blob_exists("oci/dst", blob["digest"])
                await dst.copy_blob_stream(src, "oci/src", "oci/dst", blob["digest"],
                                           blob["size"])
                assert await dst.blob_exists("oci/dst", blob["digest"])
            assert await dst.put_manifest("oci/dst", "prod", manifest) == digest
            assert await dst.digests("oci/dst", ["prod"]) == {"prod": digest}
            assert await dst.created("oci/dst", digest) == CREATED

    run(client(registry.host, requests=requests), scenario)
    assert requests.count("DELETE", "/v2/oci/mounted2/blobs/uploads/") == 1


def test_metrics_record_requests_and_transport_errors(registry: RegistryServer) -> None:
    push_image(registry.url, "oci/metrics", "dev", seed="metrics")
    metrics = Metrics()

    async def scenario(reg: OciRegistry) -> None:
        await reg.digests("oci/metrics", ["dev", "gone"])

    run(client(registry.host, metrics=metrics), scenario)
    value = metrics.registry.get_sample_value
    labels = {"registry": registry.host, "method": "HEAD"}
    assert value("image_updater_registry_requests_total", {**labels, "status": "200"}) == 1
    assert value("image_updater_registry_requests_total", {**labels, "status": "404"}) == 1
    assert value("image_updater_registry_request_duration_seconds_count", labels) == 2

    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransientRegistryError):
        run(client(dead, metrics=metrics, max_retries=1),
            lambda reg: reg.head_manifest("x/y", "dev"))
    assert value("image_updater_registry_requests_total",
                 {"registry": dead, "method": "HEAD", "status": "error"}) == 2


# -- resilience, against the stub ----------------------------------------------------------


def test_accept_header_lists_every_manifest_type(stub: HttpStub) -> None:
    body = manifest_body("accept")
    digest = sha256_digest(body)
    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
    stub.add("GET", "/v2/a/b/manifests/dev", Reply(200, headers, body))
    stub.add("HEAD", "/v2/a/b/manifests/dev", Reply(200, headers))

    async def scenario(reg: OciRegistry) -> None:
        await reg.get_manifest("a/b", "dev")
        await reg.head_manifest("a/b", "dev")

    run(client(stub.host), scenario)
    sent = [r.headers["accept"] for r in stub.requests]
    assert len(sent) == 2
    for accept in sent:
        assert [t.strip() for t in accept.split(",")] == list(MANIFEST_ACCEPT)


def test_connections_are_reused_across_heads_and_not_found(stub: HttpStub) -> None:
    """Each unread-but-closed response used to cost a new TCP (and TLS) connection."""
    body = manifest_body("reuse")
    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(body)}
    stub.add("HEAD", "/v2/a/b/manifests/dev", Reply(200, headers))
    missing = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"}]}).encode()
    stub.add("HEAD", "/v2/a/b/manifests/gone", Reply(404))
    stub.add("GET", "/v2/a/b/manifests/gone", Reply(404, {"Content-Type": "application/json"},
                                                    missing))

    async def scenario(reg: OciRegistry) -> None:
        for _ in range(10):
            assert await reg.head_manifest("a/b", "dev") is not None
            assert await reg.head_manifest("a/b", "gone") is None
            with pytest.raises(NotFoundError):
                await reg.get_manifest("a/b", "gone")

    run(client(stub.host), scenario)
    assert len(stub.requests) >= 30
    assert len({r.peer for r in stub.requests}) == 1, "one keep-alive connection for all"


def test_digest_mismatch_is_refused(stub: HttpStub) -> None:
    real = manifest_body("real")
    claimed = sha256_digest(b"something else")
    stub.add("GET", f"/v2/a/b/manifests/{claimed}", Reply(200, {"Content-Type": OCI_MANIFEST},
                                                          real))
    stub.add("GET", "/v2/a/b/manifests/dev",
             Reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": claimed}, real))
    stub.add("GET", f"/v2/a/b/blobs/{claimed}", Reply(200, JSON, b'{"created": "x"}'))

    async def scenario(reg: OciRegistry) -> None:
        with pytest.raises(DigestMismatchError, match=f"hashing to {sha256_digest(real)}, "
                                                      f"not {claimed}"):
            await reg.get_manifest("a/b", claimed)
        with pytest.raises(DigestMismatchError, match=f"reports digest {claimed}"):
            await reg.get_manifest("a/b", "dev")
        with pytest.raises(DigestMismatchError, match="tampered"):
            await reg.get_blob_json("a/b", claimed)
        tampered = Manifest(media_type=OCI_MANIFEST, digest=claimed, body=real)
        with pytest.raises(DigestMismatchError, match="refusing to upload"):
            await reg.put_manifest("a/b", "dev", tampered)

    run(client(stub.host), scenario)
    assert not stub.requests_to("PUT", "/v2/a/b/manifests/dev")


def test_copy_blob_refuses_corrupt_source(stub: HttpStub, fresh_registry: RegistryServer
                                          ) -> None:
    good = b"the real layer bytes"
    digest = sha256_digest(good)
    stub.add("GET", f"/v2/src/blobs/{digest}", Reply(200, {}, b"the evil layer bytes"))

    async def scenario(dst: OciRegistry) -> None:
        async with client(stub.host) as src:
            with pytest.raises(DigestMismatchError, match=f"for blob {digest}"):
                await dst.copy_blob_stream(src, "src", "dst", digest, len(good))
        assert not await dst.blob_exists("dst", digest)

    run(client(fresh_registry.host, max_retries=0), scenario)


def test_tags_pagination_relative_and_absolute_links(stub: HttpStub) -> None:
    base = "/v2/a/b/tags/list"
    stub.add("GET", base, Reply(200, {**JSON, "Link": f'<{base}?n=2&last=2>; rel="next"'},
                                b'{"name":"a/b","tags":["1","2"]}'))
    stub.add("GET", f"{base}?n=2&last=2",
             Reply(200, {**JSON, "Link": f'<{stub.url}{base}?n=2&last=4>; rel="next"'},
                   b'{"name":"a/b","tags":["3","4"]}'))
    stub.add("GET", f"{base}?n=2&last=4",
             Reply(200, JSON, b'{"name":"a/b","tags":["5","-invalid","2"]}'))

    tags = run(client(stub.host), lambda reg: reg.list_tags("a/b"))
    assert tags == ["1", "2", "3", "4", "5"]
    assert len(stub.requests) == 3


def test_tags_pagination_refuses_other_host_and_loops(stub: HttpStub) -> None:
    base = "/v2/a/b/tags/list"
    stub.add("GET", base, Reply(200, {**JSON, "Link": '<http://evil.example/x>; rel="next"'},
                                b'{"tags":["1"]}'))
    stub.add("GET", "/v2/c/d/tags/list",
             Reply(200, {**JSON, "Link": '</v2/c/d/tags/list>; rel="next"'}, b'{"tags":["1"]}'))

    async def scenario(reg: OciRegistry) -> None:
        with pytest.raises(RegistryError, match=r"to another host .*evil\.example.*refusing"):
            await reg.list_tags("a/b")
        with pytest.raises(RegistryError, match="loops back"):
            await reg.list_tags("c/d")

    run(client(stub.host), scenario)


def test_5xx_is_retried_with_backoff_then_succeeds(stub: HttpStub) -> None:
    body = manifest_body("retry")
    stub.add("GET", "/v2/a/b/manifests/dev", Reply(503), Reply(500), Reply(502),
             Reply(200, {"Content-Type": OCI_MANIFEST}, body))
    sleeps = Sleeps()

    manifest = run(client(stub.host, sleeps=sleeps, backoff_base=0.5, backoff_max=1.5),
                   lambda reg: reg.get_manifest("a/b", "dev"))
    assert manifest.digest == sha256_digest(body)
    assert sleeps.delays == [0.5, 1.0, 1.5]  # jitter pinned to 1: the exponential ceilings


def test_429_honours_retry_after_seconds_and_dates(stub: HttpStub) -> None:
    body = manifest_body("429")
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    stub.add("GET", "/v2/a/b/manifests/dev", Reply(429, {"Retry-After": "7"}),
             Reply(429, {"Retry-After": date}), Reply(429, {"Retry-After": "3600"}),
             Reply(200, {"Content-Type": OCI_MANIFEST}, body))
    sleeps = Sleeps()

    run(client(stub.host, sleeps=sleeps, wall_clock=lambda: now, retry_after_max=60),
        lambda reg: reg.get_manifest("a/b", "dev"))
    assert sleeps.delays == [7.0, 12.0, 60.0]


def test_retries_exhausted_is_transient_and_says_what_happens_next(stub: HttpStub) -> None:
    stub.add("HEAD", "/v2/a/b/manifests/dev", Reply(503))
    sleeps = Sleeps()

    with pytest.raises(TransientRegistryError) as info:
        run(client(stub.host, sleeps=sleeps, max_retries=2),
            lambda reg: reg.head_manifest("a/b", "dev"))
    assert len(stub.requests) == 3 and len(sleeps.delays) == 2
    assert info.value.temporary
    assert info.value.registry == stub.host
    assert info.value.url == f"{stub.url}/v2/a/b/manifests/dev"
    assert str(info.value) == (
        f"Registry {stub.host} did not answer HEAD {stub.url}/v2/a/b/manifests/dev "
        "successfully after 3 attempt(s) (HTTP 503); it will be retried next cycle.")


def test_digests_carry_a_first_failed_head_into_the_same_retries(stub: HttpStub) -> None:
    """digests() sends its HEADs from worker threads; a 5xx there is the first attempt of
    the usual retries (same backoff, same count, same message), not an extra request."""
    digest = sha256_digest(manifest_body("bulk"))
    ok = Reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest})
    stub.add("HEAD", "/v2/a/b/manifests/dev", Reply(503), Reply(502), ok)
    stub.add("HEAD", "/v2/a/b/manifests/prod", Reply(503))
    stub.add("HEAD", "/v2/a/b/manifests/qa", Reply(404))
    sleeps = Sleeps()

    found = run(client(stub.host, sleeps=sleeps, max_retries=2, backoff_base=0.5),
                lambda reg: reg.digests("a/b", ["dev", "qa"]))
    assert found == {"dev": digest}
    assert len(stub.requests_to("HEAD", "/v2/a/b/manifests/dev")) == 3
    assert len(stub.requests_to("HEAD", "/v2/a/b/manifests/qa")) == 1
    assert sleeps.delays == [0.5, 1.0]

    with pytest.raises(TransientRegistryError, match=r"after 3 attempt\(s\) \(HTTP 503\)"):
        run(client(stub.host, sleeps=Sleeps(), max_retries=2),
            lambda reg: reg.digests("a/b", ["prod"]))
    assert len(stub.requests_to("HEAD", "/v2/a/b/manifests/prod")) == 3


def test_connection_refused_is_transient() -> None:
    host = f"127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    with pytest.raises(TransientRegistryError) as info:
        run(client(host, sleeps=sleeps, max_retries=3), lambda reg: reg.list_tags("a/b"))
    assert len(sleeps.delays) == 3
    message = str(info.value)
    assert f"Registry {host} did not answer GET http://{host}/v2/a/b/tags/list" in message
    assert "ConnectError" in message and "retried next cycle" in message


def test_permanent_errors_quote_truncated_oci_errors(stub: HttpStub) -> None:
    detail = "x" * 5000
    errors = {"errors": [{"code": "DENIED", "message": detail}]}
    stub.add("GET", "/v2/a/b/manifests/dev", Reply(400, JSON, json.dumps(errors).encode()))
    stub.add("PUT", "/v2/a/b/manifests/dev", Reply(
        400, JSON, b'{"errors":[{"code":"TAG_INVALID","message":"tag is immutable"}]}'))
    body = manifest_body("immutable")
    sleeps = Sleeps()

    async def scenario(reg: OciRegistry) -> None:
        with pytest.raises(RegistryError) as info:
            await reg.get_manifest("a/b", "dev")
        assert "HTTP 400: DENIED: xxx" in str(info.value)
        assert len(str(info.value)) < 600  # quoted through truncate()
        manifest = Manifest(media_type=OCI_MANIFEST, digest=sha256_digest(body), body=body)
        with pytest.raises(ImmutableTagError, match="refuses to move tag dev of a/b"):
            await reg.put_manifest("a/b", "dev", manifest)

    run(client(stub.host, sleeps=sleeps), scenario)
    assert sleeps.delays == []  # 4xx is not retried


def test_invalid_input_never_reaches_the_network(stub: HttpStub) -> None:
    async def scenario(reg: OciRegistry) -> None:
        for call in (reg.get_manifest("a/../b", "dev"), reg.get_manifest("a/b", "dev?x=1"),
                     reg.head_manifest("a/b", "sha256:abc"), reg.digests("A/b", ["dev"])):
            with pytest.raises(InvalidReferenceError, match=r"not a valid|not a sha256"):
                await call

    run(client(stub.host), scenario)
    assert stub.requests == []


def test_https_is_the_default_and_http_needs_insecure() -> None:
    assert RegistryOptions(host="reg.example.com").base_url == "https://reg.example.com"
    assert RegistryOptions(host="127.0.0.1:5000").base_url == "https://127.0.0.1:5000"
    assert RegistryOptions(host="127.0.0.1:5000", insecure=True).base_url == \
        "http://127.0.0.1:5000"
    assert RegistryOptions(host="docker.io").base_url == "https://registry-1.docker.io"


def test_tls_against_a_plain_http_registry_says_how_to_allow_it(
        registry: RegistryServer) -> None:
    """A local registry serves plain HTTP; without insecure: true the handshake fails. That
    is a settings problem, not an outage: no retries, and the message names the fix."""
    sleeps = Sleeps()
    options = RegistryOptions(host=registry.host, max_retries=4)
    with pytest.raises(RegistryError) as info:
        run(OciRegistry(options, sleep=sleeps), lambda reg: reg.ping())
    assert not isinstance(info.value, TransientRegistryError)
    assert f"https://{registry.host}/v2/" in str(info.value)
    assert f"registries: [{{host: '{registry.host}', insecure: true}}]" in str(info.value)
    assert sleeps.delays == []


# -- rate limiting (pure, fake clock) ------------------------------------------------------


def test_token_bucket_spaces_requests() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2.0, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0  # refilled, but never above the burst
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]


def test_rate_limiter_sleeps_and_caps_concurrency() -> None:
    sleeps = Sleeps()
    limiter = RateLimiter(max_concurrency=2, requests_per_second=1.0, clock=lambda: 0.0,
                          sleep=sleeps)
    inside = [0]
    peak = [0]

    async def one() -> None:
        async with limiter.slot():
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            await asyncio.sleep(0)
            inside[0] -= 1

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(5)))

    asyncio.run(main())
    assert peak[0] == 2
    assert sleeps.delays == [1.0, 2.0, 3.0, 4.0]


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    workdir = tmp_path_factory.mktemp("tls")
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_stub(tls_files: tuple[Path, Path]) -> Iterator[HttpStub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    with HttpStub(tls=context) as server:
        server.add("GET", "/v2/", Reply(200, JSON, b"{}"))
        yield server


def test_tls_custom_ca_file_is_trusted(tls_stub: HttpStub, tls_files: tuple[Path, Path]
                                       ) -> None:
    options = RegistryOptions(host=tls_stub.host, ca_file=tls_files[0])
    run(OciRegistry(options, sleep=Sleeps()), lambda reg: reg.ping())
    assert [r.path for r in tls_stub.requests] == ["/v2/"]


def test_tls_unknown_ca_is_permanent_and_points_at_ca_file(tls_stub: HttpStub) -> None:
    sleeps = Sleeps()
    with pytest.raises(RegistryError) as info:
        run(OciRegistry(RegistryOptions(host=tls_stub.host), sleep=sleeps),
            lambda reg: reg.ping())
    assert not isinstance(info.value, TransientRegistryError)
    assert "could not be verified against certifi's public roots" in str(info.value)
    assert "set ca_file" in str(info.value)
    assert sleeps.delays == []  # not retried
    assert tls_stub.requests == []


def test_tls_skip_verify_connects(tls_stub: HttpStub) -> None:
    options = RegistryOptions(host=tls_stub.host, insecure_skip_verify=True)
    run(OciRegistry(options, sleep=Sleeps()), lambda reg: reg.ping())
    assert len(tls_stub.requests) == 1


# -- untrusted JSON from a real registry, bent by the fault proxy ------------------------------


def test_a_tag_list_of_the_wrong_shape_is_refused_not_split_into_letters(
        registry: RegistryServer) -> None:
    push_image(registry.url, "oci/shape", "dev", seed="shape")
    with FaultProxy(registry.url) as proxy:
        proxy.replace_body("GET", r"/v2/oci/shape/tags/list", b'{"tags": "dev"}')
        with pytest.raises(RegistryError) as info:
            run(client(proxy.host), lambda reg: reg.list_tags("oci/shape"))
        where = f"{proxy.url}/v2/oci/shape/tags/list"
    assert "'tags' is not a list of strings ('dev')" in str(info.value)
    assert where in str(info.value) and info.value.url == where


def test_an_index_with_a_malformed_child_digest_is_refused(registry: RegistryServer) -> None:
    push_index(registry.url, "oci/badindex", "dev", seed="badindex")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:../../etc", "size": 1}]}).encode()
    with FaultProxy(registry.url) as proxy:
        proxy.replace_body("GET", r"/v2/oci/badindex/manifests/dev", body)
        proxy.rewrite_header("GET", r"/v2/oci/badindex/manifests/dev", "Docker-Content-Digest",
                             None)
        with pytest.raises(RegistryError, match=r"manifests\[0\]\.digest 'sha256:\.\./\.\./etc'"):
            run(client(proxy.host), lambda reg: reg.get_manifest("oci/badindex", "dev"))
