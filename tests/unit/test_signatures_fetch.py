"""fetch_signatures over a fake registry: the shapes a real registry refuses to store.

The real-registry paths are in tests/integration/test_signatures_registry.py; here each
malformed or oversized artefact must become a located problem (never an exception), transport
errors must still raise, and the request count must match the calls made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.stub import Stubber

from image_updater.errors import (
    DigestMismatchError,
    RegistryError,
    ResponseTooLargeError,
    TransientRegistryError,
)
from image_updater.registry.base import OCI_INDEX, OCI_MANIFEST, Manifest
from image_updater.registry.ecr import EcrRegistry
from image_updater.registry.signatures import (
    MAX_BUNDLE_REFERRERS,
    MAX_REFERRERS_INDEX_BYTES,
    MAX_SIGNATURE_BLOB_BYTES,
    MAX_SIGNATURE_LAYERS,
    MAX_SIGNATURE_MANIFEST_BYTES,
    REFERRERS_API,
    TAG_FALLBACK,
    fetch_signatures,
)
from image_updater.signatures import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Reason,
    SignatureArtifacts,
)
from tests.fixtures.moto import ECR_HOST, fake_session
from tests.fixtures.registry import free_port

DIGEST = "sha256:" + "c" * 64
SIG_TAG = "sha256-" + "c" * 64 + ".sig"
FALLBACK_TAG = "sha256-" + "c" * 64
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class FakeRegistry:
    """Manifests by reference, blobs by digest; ``tampered`` digests raise a mismatch."""

    host: str = "registry.test"
    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    referrers_index: bytes | None = None
    tampered: set[str] = field(default_factory=set)
    fail_with: Exception | None = None
    calls: list[str] = field(default_factory=list)
    one_listing_per_repository = False

    async def find_manifest(self, repository: str, reference: str, *,
                            max_bytes: int = 0) -> Manifest | None:
        self._call(f"manifest {reference}")
        if reference in self.tampered:
            raise DigestMismatchError("mismatch", registry=self.host)
        body = self.manifests.get(reference)
        return None if body is None else Manifest(OCI_MANIFEST, digest_of(body),
                                                  self._capped(body, max_bytes))

    async def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        self._call(f"blob {digest}")
        if digest in self.tampered:
            raise DigestMismatchError("mismatch", registry=self.host)
        return self._capped(self.blobs[digest], max_bytes)

    async def referrers(self, repository: str, digest: str, *,
                        max_bytes: int = 0) -> Manifest | None:
        self._call("referrers")
        body = self.referrers_index
        return None if body is None else Manifest(OCI_INDEX, digest_of(body),
                                                  self._capped(body, max_bytes))

    def _capped(self, body: bytes, max_bytes: int) -> bytes:
        # what RegistryTransport.read_capped does with a body over its cap
        if max_bytes and len(body) > max_bytes:
            raise ResponseTooLargeError("too large", registry=self.host)
        return body

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.fail_with is not None:
            raise self.fail_with

    def blob(self, body: bytes) -> dict[str, Any]:
        self.blobs[digest_of(body)] = body
        return {"digest": digest_of(body), "size": len(body)}

    def signature_layer(self, payload: bytes = b"{}", **extra: Any) -> dict[str, Any]:
        return {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, **self.blob(payload),
                "annotations": {SIGNATURE_ANNOTATION: "c2ln"}, **extra}


def fetch(registry: FakeRegistry) -> SignatureArtifacts:
    found = asyncio.run(fetch_signatures(registry, "team/app", DIGEST))  # type: ignore[arg-type]
    assert found.requests == len(registry.calls)
    return found


def sig_manifest(layers: list[Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "layers": layers}).encode()


def test_one_problem_per_bad_layer_and_the_good_ones_kept() -> None:
    registry = FakeRegistry()
    good = registry.signature_layer(b'{"good": 1}')
    registry.manifests[SIG_TAG] = sig_manifest([
        good,
        {"mediaType": "application/octet-stream", **registry.blob(b"x")},
        {**registry.signature_layer(b"y"), "annotations": {}},
        {**registry.signature_layer(b"z"), "size": MAX_SIGNATURE_BLOB_BYTES + 1},
        {**registry.signature_layer(b"w"), "digest": "sha256:nothex"},
        {**registry.signature_layer(b"v"), "size": 99},
    ])

    found = fetch(registry)

    assert [s.payload for s in found.simple_signing] == [b'{"good": 1}']
    assert [p.reason for p in found.problems] == [Reason.MALFORMED] * 4 + [Reason.TAMPERED]
    assert [p.where[-7:] for p in found.problems] == [f"layer {n}" for n in range(1, 6)]
    assert "oversized" in found.problems[2].message
    # .sig, the layers whose blob was fetched (0 and 5), the referrers API, the fallback tag
    assert found.requests == 5


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"layers": {}}'])
def test_a_malformed_signature_manifest_is_a_problem(body: bytes) -> None:
    registry = FakeRegistry(manifests={SIG_TAG: body})
    found = fetch(registry)
    assert [(p.reason, p.where) for p in found.problems] == [
        (Reason.MALFORMED, f"registry.test/team/app:{SIG_TAG}")]


def test_layers_beyond_the_cap_are_not_read() -> None:
    registry = FakeRegistry()
    layer = registry.signature_layer()
    registry.manifests[SIG_TAG] = sig_manifest([layer] * (MAX_SIGNATURE_LAYERS + 5))
    found = fetch(registry)
    assert len(found.simple_signing) == MAX_SIGNATURE_LAYERS
    assert "only the first" in found.problems[0].message


def test_a_tampered_signature_manifest_or_blob_is_tampered() -> None:
    registry = FakeRegistry(tampered={SIG_TAG})
    assert [p.reason for p in fetch(registry).problems] == [Reason.TAMPERED]
    registry = FakeRegistry()
    layer = registry.signature_layer(b"p")
    registry.manifests[SIG_TAG] = sig_manifest([layer])
    registry.tampered.add(layer["digest"])
    assert [p.reason for p in fetch(registry).problems] == [Reason.TAMPERED]


def test_an_oversized_signature_manifest_hides_no_bundle() -> None:
    # giant annotations on the .sig tag: a located problem, and the referrers are still read
    registry = FakeRegistry()
    layer = registry.signature_layer(annotations={SIGNATURE_ANNOTATION: "c2ln",
                                                  "x": "y" * MAX_SIGNATURE_MANIFEST_BYTES})
    registry.manifests[SIG_TAG] = sig_manifest([layer])
    registry.referrers_index = index([bundle_referrer(registry, b'{"b": 1}', "one")])

    found = fetch(registry)

    assert [b.body for b in found.bundles] == [b'{"b": 1}']
    assert [(p.reason, p.where) for p in found.problems] == [
        (Reason.MALFORMED, f"registry.test/team/app:{SIG_TAG}")]
    assert "oversized manifest" in found.problems[0].message


def test_an_oversized_referrers_index_keeps_the_simple_signatures() -> None:
    registry = FakeRegistry()
    registry.manifests[SIG_TAG] = sig_manifest([registry.signature_layer(b'{"s": 1}')])
    registry.referrers_index = b" " * (MAX_REFERRERS_INDEX_BYTES + 1)
    found = fetch(registry)
    assert [s.payload for s in found.simple_signing] == [b'{"s": 1}']
    assert [p.reason for p in found.problems] == [Reason.MALFORMED]
    assert "oversized referrers index" in found.problems[0].message


def bundle_referrer(registry: FakeRegistry, body: bytes, name: str) -> dict[str, Any]:
    manifest = json.dumps({"layers": [{"mediaType": BUNDLE, **registry.blob(body)}]}).encode()
    registry.manifests[digest_of(manifest)] = manifest
    return {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
            "artifactType": BUNDLE, "annotations": {"n": name}}


def index(entries: list[Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": entries}).encode()


def test_the_referrers_api_is_used_when_present_and_other_artifacts_skipped() -> None:
    registry = FakeRegistry()
    sbom = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 1,
            "artifactType": "application/spdx+json"}
    registry.referrers_index = index([sbom, bundle_referrer(registry, b'{"b": 1}', "one")])

    found = fetch(registry)

    assert found.referrers == REFERRERS_API
    assert [b.body for b in found.bundles] == [b'{"b": 1}'] and not found.problems
    assert f"manifest {FALLBACK_TAG}" not in registry.calls
    assert found.requests == 4  # .sig, referrers, the bundle's manifest and blob


def test_the_tag_fallback_is_read_without_the_api() -> None:
    registry = FakeRegistry()
    registry.manifests[FALLBACK_TAG] = index([bundle_referrer(registry, b"{}", "one")])
    found = fetch(registry)
    assert (found.referrers, len(found.bundles), found.requests) == (TAG_FALLBACK, 1, 5)


def test_bundle_referrers_are_capped_and_missing_ones_reported() -> None:
    registry = FakeRegistry()
    entries = [bundle_referrer(registry, b"{%d}" % n, str(n))
               for n in range(MAX_BUNDLE_REFERRERS + 1)]
    missing = {**entries[0], "digest": "sha256:" + "e" * 64}
    registry.referrers_index = index([missing, *entries])

    found = fetch(registry)

    assert len(found.bundles) == MAX_BUNDLE_REFERRERS - 1
    assert [p.reason for p in found.problems] == [Reason.MALFORMED, Reason.MALFORMED]
    assert "does not exist" in found.problems[1].message


def test_a_referrer_without_a_bundle_layer_is_malformed() -> None:
    registry = FakeRegistry()
    manifest = json.dumps({"layers": [{"mediaType": "text/plain", **registry.blob(b"x")}]})
    registry.manifests[digest_of(manifest.encode())] = manifest.encode()
    registry.referrers_index = index([{"digest": digest_of(manifest.encode()), "size": 1,
                                       "artifactType": BUNDLE}])
    found = fetch(registry)
    assert "without a sigstore bundle layer" in found.problems[0].message


def test_transport_errors_still_raise() -> None:
    registry = FakeRegistry(fail_with=TransientRegistryError("down", registry="registry.test"))
    with pytest.raises(TransientRegistryError):
        asyncio.run(fetch_signatures(registry, "team/app", DIGEST))  # type: ignore[arg-type]


def test_ecr_refuses_signature_reads_with_an_error_that_says_what_to_do() -> None:
    client = fake_session().client("ecr", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with Stubber(client):  # any call to AWS would fail the test: none may be made
        registry = EcrRegistry(ECR_HOST, client=client)
        with pytest.raises(RegistryError) as caught:
            asyncio.run(fetch_signatures(registry, "team/app", DIGEST))
    client.close()
    assert f"{ECR_HOST}/team/app" in str(caught.value)
    assert "not supported on ECR" in str(caught.value) and "Remove 'verify'" in str(caught.value)
