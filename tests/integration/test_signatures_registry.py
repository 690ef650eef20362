"""Cosign signatures read from a real registry (Debian's docker-registry 2.8) and verified.

Signatures are written from the published formats by tests/fixtures/cosign.py; skopeo (real,
not ours) carries simple-signing attachments to another repository and writes the ``.sig``
there itself. docker-registry 2.8 has no referrers API (``/v2/<name>/referrers/<digest>``
answers 404), so bundles are read through the ``sha256-<hex>`` tag fallback there, and through
:class:`ReferrersProxy` (the API added in front of the same registry) for the API path.
Every test counts the HTTP requests sent and checks the adapter's own ``requests`` count.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from image_updater.registry.signatures import (
    MAX_SIGNATURE_MANIFEST_BYTES,
    REFERRERS_API,
    TAG_FALLBACK,
    fetch_signatures,
)
from image_updater.signatures import (
    PublicKey,
    Reason,
    SignatureArtifacts,
    SignatureVerdict,
    load_public_key,
    verify_signatures,
)
from tests.fixtures.cosign import (
    BUNDLE_V01,
    BUNDLE_V02,
    BUNDLE_V03,
    KeyPair,
    ReferrersProxy,
    attach_bundle,
    attach_simple_signature,
    make_bundle,
    make_key_pair,
    sign_image,
    simple_signing_payload,
    skopeo_copy,
    skopeo_sign,
)
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.registry import RegistryServer, push_image
from tests.fixtures.tools import require_tool

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    base = tmp_path_factory.mktemp("keys")
    return {name: make_key_pair(base, name=name) for name in ("ci", "stranger")}


def public(key: KeyPair) -> PublicKey:
    return load_public_key(key.public_pem, name=str(key.public_path))


def fetch(host: str, repository: str, digest: str) -> tuple[SignatureArtifacts, list[str]]:
    """Fetch with a fresh client; also returns every HTTP request it sent."""
    seen: list[str] = []

    async def main() -> SignatureArtifacts:
        async with OciRegistry(RegistryOptions(host=host, insecure=True),
                               on_request=lambda method, url: seen.append(f"{method} {url}")
                               ) as client:
            return await fetch_signatures(client, repository, digest)
    return asyncio.run(main()), seen


def check(host: str, repository: str, digest: str, keys: list[KeyPair], *,
          reference: str | None = None) -> tuple[SignatureVerdict, SignatureArtifacts]:
    artifacts, seen = fetch(host, repository, digest)
    assert artifacts.requests == len(seen), seen
    verdict = verify_signatures(artifacts, digest=digest,
                                docker_reference=reference or f"{host}/{repository}",
                                keys=[public(k) for k in keys])
    return verdict, artifacts


def test_simple_signing_signature_is_found_and_verified(registry: RegistryServer,
                                                        keys: dict[str, KeyPair]) -> None:
    digest = push_image(registry.url, "sig/simple", "dev", seed="simple")
    assert sign_image(registry.url, "sig/simple", "dev", keys["ci"]) == digest

    verdict, artifacts = check(registry.host, "sig/simple", digest, [keys["stranger"],
                                                                      keys["ci"]])

    assert verdict.ok, verdict.message
    assert (verdict.key, verdict.format, verdict.reason) == (
        str(keys["ci"].public_path), "simple-signing", None)
    # the .sig manifest, its one layer; the referrers API's 404 and the fallback tag's 404
    assert artifacts.requests == 4
    assert artifacts.referrers == TAG_FALLBACK


def test_an_unsigned_digest_costs_three_requests(registry: RegistryServer,
                                                 keys: dict[str, KeyPair]) -> None:
    digest = push_image(registry.url, "sig/unsigned", "dev", seed="unsigned")

    verdict, artifacts = check(registry.host, "sig/unsigned", digest, [keys["ci"]])

    assert (verdict.ok, verdict.reason, artifacts.requests) == (False, Reason.UNSIGNED, 3)
    assert digest in verdict.message and "sign it" in verdict.message


def test_skopeo_carries_the_signature_and_the_claim_still_names_the_source(
        registry: RegistryServer, keys: dict[str, KeyPair], tmp_path: Path) -> None:
    require_tool("skopeo")
    digest = sign_image(registry.url, "sig/source",
                        push_image(registry.url, "sig/source", "v1", seed="carried"),
                        keys["ci"])
    skopeo_copy(f"{registry.host}/sig/source:v1", f"{registry.host}/sig/copy:v1", tmp_path)

    as_source, artifacts = check(registry.host, "sig/copy", digest, [keys["ci"]],
                                 reference=f"{registry.host}/sig/source")
    as_copy, _ = check(registry.host, "sig/copy", digest, [keys["ci"]])

    assert as_source.ok, as_source.message
    assert "sig/copy:sha256-" in artifacts.simple_signing[0].where  # skopeo wrote it there
    print(as_copy.message)
    assert as_copy.reason is Reason.WRONG_IDENTITY
    assert f"{registry.host}/sig/source" in as_copy.message


def test_skopeo_signing_here_is_refused_by_debian_or_verifies(
        registry: RegistryServer, keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """Debian's skopeo has sigstore signing patched out; where skopeo can sign, its signature
    (a claim naming host/repo:tag) must verify."""
    digest = push_image(registry.url, "sig/skopeo", "v1", seed="skopeo")
    done = skopeo_sign(f"{registry.host}/sig/skopeo:v1", keys["ci"], tmp_path)

    if done.returncode != 0:
        assert "Debian-local change: sigstore disabled" in done.stderr, done.stderr
        return
    verdict, _ = check(registry.host, "sig/skopeo", digest, [keys["ci"]])
    assert verdict.ok, verdict.message


@pytest.mark.parametrize(("version", "media_type"),
                         [("v01", BUNDLE_V01), ("v02", BUNDLE_V02), ("v03", BUNDLE_V03)])
def test_bundle_through_the_tag_fallback(registry: RegistryServer, keys: dict[str, KeyPair],
                                         version: str, media_type: str) -> None:
    repository = f"sig/bundle-{version}"
    digest = push_image(registry.url, repository, "dev", seed=media_type)
    bundle = make_bundle(keys["ci"], digest, f"{registry.host}/{repository}",
                         media_type=media_type)
    attach_bundle(registry.url, repository, digest, bundle, media_type=media_type)

    verdict, artifacts = check(registry.host, repository, digest, [keys["ci"]])

    assert verdict.ok, verdict.message
    assert (verdict.format, artifacts.referrers) == ("sigstore-bundle", TAG_FALLBACK)
    # .sig 404, referrers API 404, fallback index, the bundle's manifest and blob
    assert artifacts.requests == 5


def test_bundle_through_the_referrers_api(registry: RegistryServer,
                                          keys: dict[str, KeyPair]) -> None:
    digest = push_image(registry.url, "sig/referrers", "dev", seed="referrers")
    with ReferrersProxy(registry.url) as proxy:
        attach_bundle(registry.url, "sig/referrers", digest,
                      make_bundle(keys["ci"], digest, f"{proxy.host}/sig/referrers"))

        verdict, artifacts = check(proxy.host, "sig/referrers", digest, [keys["ci"]])

    assert verdict.ok, verdict.message
    assert artifacts.referrers == REFERRERS_API
    paths = [r.path for r in proxy.requests]
    assert f"/v2/sig/referrers/referrers/{digest}" in paths
    assert f"/v2/sig/referrers/manifests/{digest.replace(':', '-')}" not in paths
    assert artifacts.requests == 4  # .sig 404, referrers, the bundle's manifest and blob


def test_refusals_on_the_real_registry(registry: RegistryServer,
                                       keys: dict[str, KeyPair]) -> None:
    host, url = registry.host, registry.url
    other = push_image(url, "sig/refused", "other", seed="other")
    cases = {
        "stranger": (Reason.WRONG_KEY, keys["stranger"], None),
        "copied": (Reason.WRONG_DIGEST, keys["ci"], other),
        "elsewhere": (Reason.WRONG_IDENTITY, keys["ci"], f"{host}/sig/elsewhere"),
    }
    for seed, (reason, key, twist) in cases.items():
        digest = push_image(url, "sig/refused", seed, seed=seed)
        claim_digest = twist if twist and twist.startswith("sha256:") else digest
        claim_ref = twist if twist and not twist.startswith("sha256:") else f"{host}/sig/refused"
        attach_simple_signature(url, "sig/refused", digest, key,
                                payload=simple_signing_payload(claim_ref, claim_digest))

        verdict, _ = check(host, "sig/refused", digest, [keys["ci"]])

        print(verdict.message)
        assert (verdict.ok, verdict.reason) == (False, reason), verdict.message


def test_a_payload_altered_in_registry_storage_is_tampered(
        registry: RegistryServer, keys: dict[str, KeyPair]) -> None:
    digest = push_image(registry.url, "sig/tampered", "dev", seed="tampered")
    payload = simple_signing_payload(f"{registry.host}/sig/tampered", digest)
    attach_simple_signature(registry.url, "sig/tampered", digest, keys["ci"], payload=payload)
    blob = hashlib.sha256(payload).hexdigest()
    assert registry.workdir is not None
    stored = registry.workdir / "data/docker/registry/v2/blobs/sha256" / blob[:2] / blob / "data"
    stored.write_bytes(payload.replace(b"sig/tampered", b"sig/tampereD"))

    verdict, _ = check(registry.host, "sig/tampered", digest, [keys["ci"]])

    print(verdict.message)
    assert (verdict.ok, verdict.reason) == (False, Reason.TAMPERED), verdict.message
    assert "layer 0" in verdict.message


def test_a_malformed_signature_layer_is_reported_not_raised(
        registry: RegistryServer, keys: dict[str, KeyPair]) -> None:
    digest = push_image(registry.url, "sig/malformed", "dev", seed="malformed")
    attach_simple_signature(registry.url, "sig/malformed", digest, None,
                            payload=simple_signing_payload("x", digest), signature="not base64!")

    verdict, _ = check(registry.host, "sig/malformed", digest, [keys["ci"]])

    assert (verdict.ok, verdict.reason) == (False, Reason.MALFORMED), verdict.message
    assert "not base64" in verdict.message


def test_a_signature_manifest_served_altered_is_tampered(registry: RegistryServer,
                                                         keys: dict[str, KeyPair]) -> None:
    """The registry reports the stored manifest's digest but serves other bytes."""
    digest = sign_image(registry.url, "sig/served",
                        push_image(registry.url, "sig/served", "dev", seed="served"), keys["ci"])
    sig_path = f"/v2/sig/served/manifests/{digest.replace(':', '-')}.sig"
    with FaultProxy(registry.url) as proxy:
        proxy.replace_body("GET", sig_path, b'{"schemaVersion": 2, "layers": []}')
        verdict, artifacts = check(proxy.host, "sig/served", digest, [keys["ci"]],
                                   reference=f"{registry.host}/sig/served")

    assert (verdict.ok, verdict.reason) == (False, Reason.TAMPERED), verdict.message
    assert artifacts.problems[0].where.endswith(".sig")


def test_an_oversized_signature_manifest_is_not_read_and_hides_no_bundle(
        registry: RegistryServer, keys: dict[str, KeyPair]) -> None:
    digest = sign_image(registry.url, "sig/huge",
                        push_image(registry.url, "sig/huge", "dev", seed="huge"), keys["ci"])
    identity = f"{registry.host}/sig/huge"
    attach_bundle(registry.url, "sig/huge", digest, make_bundle(keys["ci"], digest, identity))
    sig_path = f"/v2/sig/huge/manifests/{digest.replace(':', '-')}.sig"
    with FaultProxy(registry.url) as proxy:
        proxy.replace_body("GET", sig_path, b" " * (MAX_SIGNATURE_MANIFEST_BYTES + 1))
        verdict, artifacts = check(proxy.host, "sig/huge", digest, [keys["ci"]],
                                   reference=identity)
    assert verdict.ok and verdict.format == "sigstore-bundle", verdict.message
    (problem,) = artifacts.problems
    assert problem.reason is Reason.MALFORMED and "oversized manifest" in problem.message
    assert problem.where.endswith(".sig") and artifacts.simple_signing == ()
