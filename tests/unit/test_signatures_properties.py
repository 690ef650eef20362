"""Signature artefacts are untrusted: whatever JSON or bytes a registry serves, the verdict
is a refusal with a reason (never an exception, never ``ok``) and the reader reports
problems instead of raising."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from image_updater.registry.base import OCI_INDEX, OCI_MANIFEST, Manifest
from image_updater.registry.signatures import fetch_signatures
from image_updater.signatures import (
    BundleDocument,
    Reason,
    SignatureArtifacts,
    SimpleSignature,
    load_public_key,
    verify_signatures,
)

IMAGE = "registry.test/team/app"
DIGEST = "sha256:" + "a" * 64
KEY = load_public_key(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), name="ci.pub")
PROPERTY = settings(max_examples=200, derandomize=True, deadline=None)

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
# Objects shaped like the real documents, with any values in their fields.
bundle_like = st.fixed_dictionaries({
    "mediaType": st.sampled_from(["application/vnd.dev.sigstore.bundle.v0.3+json"])
    | json_values,
    "verificationMaterial": st.just({"publicKey": {"hint": "AAAA"}}) | json_values,
}, optional={"dsseEnvelope": st.fixed_dictionaries(
    {"payload": st.just("e30=") | json_values, "payloadType": json_values,
     "signatures": st.lists(st.dictionaries(st.just("sig"), json_values), max_size=2)
     | json_values}),
    "messageSignature": json_values})
bodies = (st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode())
          | bundle_like.map(lambda v: json.dumps(v).encode()))


@PROPERTY
@given(payloads=st.lists(bodies, max_size=3), signatures=st.lists(json_values | st.text(),
                                                                  max_size=3),
       bundles=st.lists(bodies, max_size=3))
def test_any_artefact_content_is_refused_with_a_reason(payloads: list[bytes],
                                                       signatures: list[Any],
                                                       bundles: list[bytes]) -> None:
    found = SignatureArtifacts(
        image=IMAGE, digest=DIGEST,
        simple_signing=tuple(SimpleSignature(p, s if isinstance(s, str) else json.dumps(s),
                                             "x.sig") for p, s in zip(payloads, signatures,
                                                                      strict=False)),
        bundles=tuple(BundleDocument(b, "application/vnd.dev.sigstore.bundle.v0.3+json", "r")
                      for b in bundles))
    verdict = verify_signatures(found, digest=DIGEST, docker_reference=IMAGE, keys=[KEY])
    assert not verdict.ok and isinstance(verdict.reason, Reason)
    assert IMAGE in verdict.message


class JsonRegistry:
    """Serves the generated documents as the .sig manifest and the referrers index."""

    host = "registry.test"

    def __init__(self, signature: bytes, index: bytes) -> None:
        self.signature, self.index = signature, index

    async def find_manifest(self, repository: str, reference: str, *,
                            max_bytes: int = 0) -> Manifest | None:
        if reference.endswith(".sig"):
            return Manifest(OCI_MANIFEST, DIGEST, self.signature)
        return Manifest(OCI_MANIFEST, reference, self.signature) if reference.startswith(
            "sha256:") else None

    async def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        return b"{}"

    async def referrers(self, repository: str, digest: str, *,
                        max_bytes: int = 0) -> Manifest | None:
        return Manifest(OCI_INDEX, DIGEST, self.index)


manifest_like = st.fixed_dictionaries({}, optional={
    "layers": st.lists(json_values | st.fixed_dictionaries(
        {"mediaType": json_values, "digest": st.just(DIGEST) | json_values,
         "size": json_values, "annotations": json_values}), max_size=3) | json_values,
    "manifests": st.lists(json_values | st.fixed_dictionaries(
        {"artifactType": json_values, "digest": st.just(DIGEST) | json_values}), max_size=3)
    | json_values})


@PROPERTY
@given(signature=manifest_like | json_values, index=manifest_like | json_values)
def test_any_manifest_shape_is_read_without_raising(signature: Any, index: Any) -> None:
    registry = JsonRegistry(json.dumps(signature).encode(), json.dumps(index).encode())
    found = asyncio.run(fetch_signatures(registry, "team/app", DIGEST))  # type: ignore[arg-type]
    verdict = verify_signatures(found, digest=DIGEST, docker_reference=IMAGE, keys=[KEY])
    assert not verdict.ok and isinstance(verdict.reason, Reason)
