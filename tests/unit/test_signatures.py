"""The pure verification core: keys, simple-signing claims, sigstore bundles, the verdict.

Signatures are made by tests/fixtures/cosign.py from the published formats; every refusal
case is a row with the reason it must give.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from image_updater.errors import ConfigError
from image_updater.signatures import (
    ArtifactProblem,
    BundleDocument,
    PublicKey,
    Reason,
    SignatureArtifacts,
    SignatureKeyError,
    SimpleSignature,
    load_public_key,
    repository_of,
    verify_signatures,
)
from tests.fixtures.cosign import (
    BUNDLE_V01,
    BUNDLE_V02,
    BUNDLE_V03,
    KeyPair,
    decrypt_private_key,
    make_bundle,
    make_key_pair,
    simple_signing_payload,
)

IMAGE = "registry.example.com/team/app"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    base = tmp_path_factory.mktemp("keys")
    kinds = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"]
    made = {kind: make_key_pair(base, kind=kind, name=kind) for kind in kinds}
    made["stranger"] = make_key_pair(base, name="stranger")
    return made


def public(pair: KeyPair) -> PublicKey:
    return load_public_key(pair.public_pem, name=str(pair.public_path))


def simple(pair: KeyPair, *, reference: str = IMAGE, digest: str = DIGEST,
           payload: bytes | None = None) -> SimpleSignature:
    body = payload if payload is not None else simple_signing_payload(reference, digest)
    return SimpleSignature(payload=body, signature=base64.b64encode(pair.sign(body)).decode(),
                           where=f"{IMAGE}:sha256-{'a' * 64}.sig layer 0")


def artifacts(*items: SimpleSignature | BundleDocument,
              problems: tuple[ArtifactProblem, ...] = ()) -> SignatureArtifacts:
    return SignatureArtifacts(
        image=IMAGE, digest=DIGEST,
        simple_signing=tuple(i for i in items if isinstance(i, SimpleSignature)),
        bundles=tuple(i for i in items if isinstance(i, BundleDocument)), problems=problems)


def bundle(body: bytes, media_type: str = BUNDLE_V03) -> BundleDocument:
    return BundleDocument(body=body, media_type=media_type, where=f"{IMAGE}@{OTHER}")


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"])
def test_each_supported_key_kind_loads_and_verifies_its_signature(
        pairs: dict[str, KeyPair], kind: str) -> None:
    key = public(pairs[kind])
    verdict = verify_signatures(artifacts(simple(pairs[kind])), digest=DIGEST,
                                docker_reference=IMAGE, keys=[key])
    assert key.kind == kind
    assert verdict.ok and verdict.key == str(pairs[kind].public_path), verdict.message


def test_the_fingerprint_is_of_the_der_key_not_of_the_pem_text(pairs: dict[str, KeyPair]) -> None:
    pem = pairs["ecdsa-p256"].public_pem
    der = serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    reflowed = pem.replace(b"\n", b"\r\n") + b"\n"
    first, second = (load_public_key(p, name="k.pub") for p in (pem, reflowed))
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()


def test_cosign_private_key_file_round_trips(pairs: dict[str, KeyPair]) -> None:
    pair = pairs["ecdsa-p256"]
    der = decrypt_private_key(pair.private_path.read_bytes(), pair.password_path.read_bytes())
    assert der == pair.private.private_bytes(serialization.Encoding.DER,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())


def _pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("data", "expected"), [
    (b"not a key", "is not a PEM public key"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "is not a PEM public key"),
    (b"-----BEGIN EC PRIVATE KEY-----\n...", "holds a private key"),
    (_pem(ec.generate_private_key(ec.SECP521R1())), "EC key on curve secp521r1"),
    (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024-bit RSA key"),
    (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "holds a certificate"),
    (_pem(ec.generate_private_key(ec.SECP256R1())) * 2, "holds 2 PEM blocks"),
])
def test_unusable_keys_are_configuration_errors_naming_the_file(data: bytes,
                                                                expected: str) -> None:
    with pytest.raises(SignatureKeyError) as caught:
        load_public_key(data, name="keys/ci.pub")
    assert isinstance(caught.value, ConfigError)
    assert "keys/ci.pub" in str(caught.value) and expected in str(caught.value)


# -- docker references ------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "repository"), [
    ("registry.example.com/team/app", "registry.example.com/team/app"),
    ("registry.example.com/team/app:dev", "registry.example.com/team/app"),
    ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000/team/app"),
    ("127.0.0.1:5000/team/app@" + DIGEST, "127.0.0.1:5000/team/app"),
    ("nginx", "docker.io/library/nginx"),
    ("index.docker.io/library/nginx:1", "docker.io/library/nginx"),
    ("team/app", "docker.io/team/app"),
    ("localhost/app", "localhost/app"),
])
def test_claims_are_compared_by_repository(reference: str, repository: str) -> None:
    assert repository_of(reference) == repository


@pytest.mark.parametrize("claim", [
    "registry.example.com/team/app-evil",     # a prefix of another repository
    "registry.example.com/team/app/evil",
    "registry.example.com:443/team/app",      # another port is another registry
    "REGISTRY.example.com/team/app",          # another spelling: compared as written
    "evil.example.com/team/app",
    "registry.example.com/team/app ",         # not a reference: names no repository
    " registry.example.com/team/app",
    "registry.example.com/team/app\n",
    "registry.example.com/team/app\x00",
    "registry.example.com/team/app\t:v1",
    "registry.example.com/Team/app",
    "registry.example.com/team/app:",
    "registry.example.com/team/app@",
    "registry.example.com/team/app:v1:v2",
    "https://registry.example.com/team/app",
    "",
])
def test_a_claim_naming_anything_else_is_another_identity(pairs: dict[str, KeyPair],
                                                         claim: str) -> None:
    verdict = verify_signatures(artifacts(simple(pairs["ecdsa-p256"], reference=claim)),
                                digest=DIGEST, docker_reference=IMAGE,
                                keys=[public(pairs["ecdsa-p256"])])
    assert (verdict.ok, verdict.reason) == (False, Reason.WRONG_IDENTITY), verdict.message


@pytest.mark.parametrize(("claim", "expected"), [
    ("registry.example.com/team/app:v1@" + DIGEST, IMAGE),
    ("nginx:1.27", "index.docker.io/library/nginx"),
    ("registry-1.docker.io/team/app", "team/app"),
])
def test_a_claim_spelling_the_same_repository_otherwise_is_accepted(
        pairs: dict[str, KeyPair], claim: str, expected: str) -> None:
    verdict = verify_signatures(artifacts(simple(pairs["ecdsa-p256"], reference=claim)),
                                digest=DIGEST, docker_reference=expected,
                                keys=[public(pairs["ecdsa-p256"])])
    assert verdict.ok, verdict.message


# -- simple signing refusals ------------------------------------------------------------------


def _tampered(pair: KeyPair) -> SimpleSignature:
    signed = simple(pair)
    return replace(signed, payload=signed.payload.replace(b"team/app", b"team/apq"))


SIMPLE_CASES = {
    "unsigned": (lambda p: artifacts(), Reason.UNSIGNED),
    "another key": (lambda p: artifacts(simple(p["stranger"])), Reason.WRONG_KEY),
    "another digest": (lambda p: artifacts(simple(p["ecdsa-p256"], digest=OTHER)),
                       Reason.WRONG_DIGEST),
    "another repository": (lambda p: artifacts(simple(p["ecdsa-p256"],
                                                      reference="registry.example.com/x/app")),
                           Reason.WRONG_IDENTITY),
    "payload altered after signing": (lambda p: artifacts(_tampered(p["ecdsa-p256"])),
                                      Reason.WRONG_KEY),
    "not base64": (lambda p: artifacts(replace(simple(p["ecdsa-p256"]), signature="%%")),
                   Reason.MALFORMED),
    "payload not JSON": (lambda p: artifacts(simple(p["ecdsa-p256"], payload=b"[1")),
                         Reason.MALFORMED),
    "another claim type": (lambda p: artifacts(simple(p["ecdsa-p256"], payload=(
        simple_signing_payload(IMAGE, DIGEST, kind="atomic container signature")))),
        Reason.MALFORMED),
    "claims missing": (lambda p: artifacts(simple(p["ecdsa-p256"], payload=json.dumps(
        {"critical": {"type": "cosign container image signature"}}).encode())),
        Reason.MALFORMED),
    "tampered blob": (lambda p: artifacts(problems=(ArtifactProblem(
        "simple-signing", Reason.TAMPERED, "x.sig layer 0", "a blob whose content does not "
        "hash to its digest at x.sig layer 0"),)), Reason.TAMPERED),
}


@pytest.mark.parametrize("case", list(SIMPLE_CASES))
def test_simple_signing_refusals(pairs: dict[str, KeyPair], case: str) -> None:
    build, reason = SIMPLE_CASES[case]
    verdict = verify_signatures(build(pairs), digest=DIGEST, docker_reference=IMAGE,
                                keys=[public(pairs["ecdsa-p256"])])
    assert (verdict.ok, verdict.reason) == (False, reason), verdict.message
    assert f"{IMAGE}@{DIGEST}" in verdict.message and verdict.message.endswith(".")


def test_a_valid_signature_wins_over_any_number_of_bad_ones(pairs: dict[str, KeyPair]) -> None:
    mixed = artifacts(simple(pairs["stranger"]), simple(pairs["ecdsa-p256"], digest=OTHER),
                      simple(pairs["ecdsa-p256"]))
    verdict = verify_signatures(mixed, digest=DIGEST, docker_reference=IMAGE + ":dev",
                                keys=[public(pairs["ecdsa-p256"])])
    assert verdict.ok and verdict.format == "simple-signing"


def test_the_most_specific_reason_is_given(pairs: dict[str, KeyPair]) -> None:
    mixed = artifacts(simple(pairs["stranger"]), simple(pairs["ecdsa-p256"], digest=OTHER))
    verdict = verify_signatures(mixed, digest=DIGEST, docker_reference=IMAGE,
                                keys=[public(pairs["ecdsa-p256"])])
    assert verdict.reason is Reason.WRONG_DIGEST and OTHER in verdict.message
    assert "2 signatures" in verdict.message


def test_a_claim_is_never_read_from_a_payload_no_key_signed(pairs: dict[str, KeyPair]) -> None:
    # The stranger's payload claims another digest; unverified, it can only be "wrong key".
    verdict = verify_signatures(artifacts(simple(pairs["stranger"], digest=OTHER)),
                                digest=DIGEST, docker_reference=IMAGE,
                                keys=[public(pairs["ecdsa-p256"])])
    assert verdict.reason is Reason.WRONG_KEY and OTHER not in verdict.message


# -- sigstore bundles -------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [BUNDLE_V01, BUNDLE_V02, BUNDLE_V03])
@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519", "rsa-2048"])
def test_dsse_bundles_of_every_version_verify(pairs: dict[str, KeyPair], media_type: str,
                                              kind: str) -> None:
    body = make_bundle(pairs[kind], DIGEST, IMAGE, media_type=media_type)
    verdict = verify_signatures(artifacts(bundle(body, media_type)), digest=DIGEST,
                                docker_reference=IMAGE, keys=[public(pairs[kind])])
    assert verdict.ok and verdict.format == "sigstore-bundle", verdict.message


def _altered_statement(pair: KeyPair) -> bytes:
    data = json.loads(make_bundle(pair, DIGEST, IMAGE))
    envelope = data["dsseEnvelope"]
    statement = base64.b64decode(envelope["payload"]).replace(b"team/app", b"team/apq")
    envelope["payload"] = base64.b64encode(statement).decode()
    return json.dumps(data).encode()


def _without(field: str, pair: KeyPair) -> bytes:
    data = json.loads(make_bundle(pair, DIGEST, IMAGE))
    del data[field]
    return json.dumps(data).encode()


BUNDLE_CASES = {
    "another key": (lambda p: make_bundle(p["stranger"], DIGEST, IMAGE), Reason.WRONG_KEY),
    "another digest": (lambda p: make_bundle(p["ecdsa-p256"], OTHER, IMAGE), Reason.WRONG_DIGEST),
    "another repository": (lambda p: make_bundle(p["ecdsa-p256"], DIGEST,
                                                 "registry.example.com/x/app"),
                           Reason.WRONG_IDENTITY),
    "statement altered, key hint ours": (lambda p: _altered_statement(p["ecdsa-p256"]),
                                         Reason.TAMPERED),
    "an attestation, not a signature": (lambda p: make_bundle(
        p["ecdsa-p256"], DIGEST, IMAGE, predicate_type="https://slsa.dev/provenance/v1"),
        Reason.UNSIGNED),
    "keyless": (lambda p: make_bundle(p["ecdsa-p256"], DIGEST, IMAGE, keyless=True),
                Reason.WRONG_KEY),
    "message signature names no repository": (lambda p: make_bundle(
        p["ecdsa-p256"], DIGEST, IMAGE, content="message"), Reason.WRONG_IDENTITY),
    "message signature over another digest": (lambda p: make_bundle(
        p["ecdsa-p256"], OTHER, IMAGE, content="message"), Reason.WRONG_DIGEST),
    "not JSON": (lambda p: b"{", Reason.MALFORMED),
    "not a bundle media type": (lambda p: make_bundle(p["ecdsa-p256"], DIGEST, IMAGE,
                                                      media_type="application/json"),
                                Reason.MALFORMED),
    "no content": (lambda p: _without("dsseEnvelope", p["ecdsa-p256"]), Reason.MALFORMED),
    "no verification material": (lambda p: _without("verificationMaterial", p["ecdsa-p256"]),
                                 Reason.MALFORMED),
}


@pytest.mark.parametrize("case", list(BUNDLE_CASES))
def test_bundle_refusals(pairs: dict[str, KeyPair], case: str) -> None:
    build, reason = BUNDLE_CASES[case]
    verdict = verify_signatures(artifacts(bundle(build(pairs))), digest=DIGEST,
                                docker_reference=IMAGE, keys=[public(pairs["ecdsa-p256"])])
    assert (verdict.ok, verdict.reason) == (False, reason), verdict.message
    assert f"{IMAGE}@{OTHER}" in verdict.message  # names the referrer it is about


def test_no_keys_accepts_nothing(pairs: dict[str, KeyPair]) -> None:
    verdict = verify_signatures(artifacts(simple(pairs["ecdsa-p256"])), digest=DIGEST,
                                docker_reference=IMAGE, keys=[])
    assert (verdict.ok, verdict.reason) == (False, Reason.WRONG_KEY)


def test_artifacts_of_one_digest_never_vouch_for_another(pairs: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match="given to verify"):
        verify_signatures(artifacts(simple(pairs["ecdsa-p256"], digest=OTHER)), digest=OTHER,
                          docker_reference=IMAGE, keys=[public(pairs["ecdsa-p256"])])


def _dsse(pair: KeyPair, subjects: list[tuple[str, str]], *,
          payload_type: str = "application/vnd.in-toto+json") -> BundleDocument:
    """A bundle whose DSSE statement, signed by ``pair``, lists ``subjects`` (name, digest)."""
    statement = json.dumps({
        "_type": "https://in-toto.io/Statement/v1", "predicateType":
        "https://sigstore.dev/cosign/sign/v1", "predicate": {},
        "subject": [{"name": n, "digest": {"sha256": d.split(":", 1)[1]}} for n, d in subjects],
    }).encode()
    body = json.loads(make_bundle(pair, DIGEST, IMAGE))
    body["dsseEnvelope"] = {"payload": base64.b64encode(statement).decode(),
                            "payloadType": payload_type, "signatures": [{"sig": base64.b64encode(
                                pair.sign(b"DSSEv1 %d %s %d %s" % (
                                    len(payload_type), payload_type.encode(), len(statement),
                                    statement))).decode()}]}
    return bundle(json.dumps(body).encode())


@pytest.mark.parametrize(("subjects", "payload_type", "reason"), [
    ([("registry.example.com/x/other", OTHER), (IMAGE, DIGEST)], None, None),
    ([(IMAGE, OTHER), ("registry.example.com/x/other", OTHER)], None, Reason.WRONG_DIGEST),
    ([("registry.example.com/team/app-evil", DIGEST)], None, Reason.WRONG_IDENTITY),
    ([(IMAGE, DIGEST)], "application/json", Reason.MALFORMED),
    ([(IMAGE, DIGEST)], "application/vnd.in-toto+json ", Reason.MALFORMED),
])
def test_a_dsse_statement_decides_by_its_subject_over_this_digest(
        pairs: dict[str, KeyPair], subjects: list[tuple[str, str]], payload_type: str | None,
        reason: Reason | None) -> None:
    document = _dsse(pairs["ecdsa-p256"], subjects,
                     **({"payload_type": payload_type} if payload_type else {}))
    verdict = verify_signatures(artifacts(document), digest=DIGEST, docker_reference=IMAGE,
                                keys=[public(pairs["ecdsa-p256"])])
    assert (verdict.ok, verdict.reason) == (reason is None, reason), verdict.message
