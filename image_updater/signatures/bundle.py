"""Sigstore bundles (protobuf-specs ``Bundle``, JSON form, v0.1 to v0.3) signed by a key.

Two contents are read:

- ``dsseEnvelope`` (what ``cosign sign`` writes since cosign 3): an in-toto statement of
  predicate type ``https://sigstore.dev/cosign/sign/v1`` whose subject carries the image's
  name and sha256; the signature is over the DSSE pre-authentication encoding (PAE).
- ``messageSignature``: a signature over the image manifest, given by its SHA-256. It names
  no repository, so it can never satisfy the identity claim and is refused as
  ``wrong-identity`` with a hint to sign with a statement instead.

Bundles with a certificate (keyless) are recognised and refused: their trust root (Fulcio,
Rekor) is not configured here. Transparency-log entries and timestamps in a key-based bundle
are not checked: the key is the trust.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from image_updater.signatures.keys import PublicKey
from image_updater.signatures.model import (
    SIGSTORE_BUNDLE,
    BundleDocument,
    Finding,
    Reason,
    is_bundle_media_type,
)
from image_updater.signatures.simple import claim_finding, decode_base64

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1",
                             "https://in-toto.io/Statement/v0.1"})
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def check_bundle(document: BundleDocument, *, digest: str, docker_reference: str,
                 keys: Sequence[PublicKey]) -> Finding:
    where = document.where
    data = _json_object(document.body)
    if data is None:
        return _malformed(where, "is not a JSON object")
    if not is_bundle_media_type(data.get("mediaType")):
        return _malformed(where, f"has mediaType {str(data.get('mediaType'))[:80]!r}, not a "
                                 "sigstore bundle v0.1-v0.3")
    material = data.get("verificationMaterial")
    if not isinstance(material, dict):
        return _malformed(where, "has no verificationMaterial")
    if "publicKey" not in material:
        return Finding(SIGSTORE_BUNDLE, where, Reason.WRONG_KEY,
                       f"has a keyless (certificate) signature at {where}; only signatures "
                       "by a listed key are accepted")
    if isinstance(data.get("dsseEnvelope"), dict):
        found = _check_dsse(data["dsseEnvelope"], where, digest, docker_reference, keys)
    elif isinstance(data.get("messageSignature"), dict):
        found = _check_message(data["messageSignature"], where, digest, keys)
    else:
        return _malformed(where, "has neither a dsseEnvelope nor a messageSignature")
    return _hinted(found, material, keys)


def _hinted(found: Finding, material: dict[str, Any], keys: Sequence[PublicKey]) -> Finding:
    """A bundle whose key hint (base64 SHA-256 of the key's DER) names one of our keys but
    whose signature that key does not verify was altered after signing: tampered, not a
    stranger's signature."""
    if found.reason is not Reason.WRONG_KEY:
        return found
    public_key = material.get("publicKey")
    hint = decode_base64(public_key.get("hint")) if isinstance(public_key, dict) else None
    named = next((k for k in keys if hint is not None and k.fingerprint == "sha256:" + hint.hex()),
                 None)
    if named is None:
        return found
    return Finding(SIGSTORE_BUNDLE, found.where, Reason.TAMPERED,
                   f"has a bundle at {found.where} that names {named.name} as its key, but "
                   "that key does not verify it: it was altered after signing", named.name)


def _check_dsse(envelope: dict[str, Any], where: str, digest: str, docker_reference: str,
                keys: Sequence[PublicKey]) -> Finding:
    payload = decode_base64(envelope.get("payload"))
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if payload is None or not isinstance(payload_type, str) or not isinstance(signatures, list):
        return _malformed(where, "has a DSSE envelope without a base64 payload, a payloadType "
                                 "and a signatures list")
    message = pae(payload_type, payload)
    raw = [decode_base64(s.get("sig")) for s in signatures if isinstance(s, dict)]
    signer = next((k for k in keys for sig in raw if sig is not None and k.verify(sig, message)),
                  None)
    if signer is None:
        return Finding(SIGSTORE_BUNDLE, where, Reason.WRONG_KEY,
                       f"has a bundle at {where} whose DSSE signatures none of the keys verifies")
    statement = _json_object(payload) if payload_type == IN_TOTO_PAYLOAD_TYPE else None
    if statement is None or not _one_of(statement.get("_type"), STATEMENT_TYPES):
        return _malformed(where, f"signed by {signer.name}, carries no in-toto statement",
                          signer.name)
    if statement.get("predicateType") != SIGN_PREDICATE:
        # An attestation (SBOM, provenance) by the same key is not a signature of the image.
        return Finding(SIGSTORE_BUNDLE, where, Reason.UNSIGNED,
                       f"has only an attestation at {where} (predicate type "
                       f"{str(statement.get('predicateType'))[:80]!r}), not a signature",
                       signer.name)
    return _statement_finding(statement, where, signer, digest, docker_reference)


def _statement_finding(statement: dict[str, Any], where: str, signer: PublicKey, digest: str,
                       docker_reference: str) -> Finding:
    listed = statement.get("subject")
    subjects = [s for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    named = [(_sha256(s), s.get("name")) for s in subjects]
    if not named:
        return _malformed(where, f"signed by {signer.name}, has a statement without subjects",
                          signer.name)
    # The subject over this digest decides; otherwise the first one shows what was signed.
    signed, name = next((n for n in named if n[0] == digest), named[0])
    return claim_finding(SIGSTORE_BUNDLE, where, signer, digest, docker_reference,
                         signed or "(no sha256)", name if isinstance(name, str) else "")


def _check_message(signature: dict[str, Any], where: str, digest: str,
                   keys: Sequence[PublicKey]) -> Finding:
    message_digest = signature.get("messageDigest")
    algorithm = message_digest.get("algorithm") if isinstance(message_digest, dict) else None
    hashed = decode_base64(message_digest.get("digest")) if isinstance(message_digest,
                                                                       dict) else None
    raw = decode_base64(signature.get("signature"))
    if algorithm != "SHA2_256" or hashed is None or len(hashed) != 32 or raw is None:
        return _malformed(where, "has a messageSignature without a base64 SHA2_256 digest "
                                 "and signature")
    signer = next((k for k in keys if k.verify_prehashed(raw, hashed)), None)
    if signer is None:
        return Finding(SIGSTORE_BUNDLE, where, Reason.WRONG_KEY,
                       f"has a bundle at {where} whose message signature none of the keys "
                       "verifies (Ed25519 keys cannot verify a message signature)")
    signed = "sha256:" + hashed.hex()
    if signed != digest:
        return claim_finding(SIGSTORE_BUNDLE, where, signer, digest, "", signed, "")
    return Finding(SIGSTORE_BUNDLE, where, Reason.WRONG_IDENTITY,
                   f"has a message signature at {where} by {signer.name}; it binds the digest "
                   "but names no repository (sign with 'cosign sign', which writes an in-toto "
                   "statement naming it)", signer.name)


def _one_of(value: object, choices: frozenset[str]) -> bool:
    return isinstance(value, str) and value in choices


def _sha256(subject: dict[str, Any]) -> str | None:
    value = subject.get("digest")
    hexdigest = value.get("sha256") if isinstance(value, dict) else None
    return f"sha256:{hexdigest}" if isinstance(hexdigest, str) else None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _malformed(where: str, what: str, key: str | None = None) -> Finding:
    return Finding(SIGSTORE_BUNDLE, where, Reason.MALFORMED, f"has a bundle at {where} that {what}",
                   key)
