"""cosign simple-signing signatures (cosign SIGNATURE_SPEC; containers/image "sigstore"
signatures): the payload is a JSON document whose ``critical`` section names the manifest
digest, the docker reference and the type; the signature is over the payload's exact bytes.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Sequence
from typing import Any

from image_updater.signatures.claims import repository_of, same_repository
from image_updater.signatures.keys import PublicKey
from image_updater.signatures.model import SIMPLE_SIGNING, Finding, Reason, SimpleSignature

SIGNATURE_TYPE = "cosign container image signature"


def check_simple(signature: SimpleSignature, *, digest: str, docker_reference: str,
                 keys: Sequence[PublicKey]) -> Finding:
    """Verify the signature first; the claims are only read from a payload one of ``keys``
    signed, so an unsigned payload can never decide the reason."""
    where = signature.where
    raw = decode_base64(signature.signature)
    if raw is None:
        return Finding(SIMPLE_SIGNING, where, Reason.MALFORMED,
                       f"has a signature at {where} whose annotation is not base64")
    signer = next((k for k in keys if k.verify(raw, signature.payload)), None)
    if signer is None:
        return Finding(SIMPLE_SIGNING, where, Reason.WRONG_KEY,
                       f"has a signature at {where} that none of the keys verifies (made by "
                       "another key, or its payload was altered after signing)")
    claims = _claims(signature.payload)
    if isinstance(claims, str):
        return Finding(SIMPLE_SIGNING, where, Reason.MALFORMED,
                       f"has a payload at {where}, signed by {signer.name}, that {claims}",
                       signer.name)
    signed_digest, reference = claims
    return claim_finding(SIMPLE_SIGNING, where, signer, digest, docker_reference,
                         signed_digest, reference)


def claim_finding(fmt: str, where: str, signer: PublicKey, digest: str, docker_reference: str,
                  signed_digest: str, reference: str) -> Finding:
    """The verdict on the claims of a signature ``signer`` made (shared by both formats)."""
    if signed_digest != digest:
        return Finding(fmt, where, Reason.WRONG_DIGEST,
                       f"has a signature at {where} by {signer.name} over another digest, "
                       f"{signed_digest[:80]}", signer.name)
    if not same_repository(reference, docker_reference):
        named = ("a malformed reference" if repository_of(reference) is None
                 else "another repository")
        return Finding(fmt, where, Reason.WRONG_IDENTITY,
                       f"has a signature at {where} by {signer.name} whose claims name "
                       f"{named}, {reference[:120]!r}, not {docker_reference}", signer.name)
    return Finding(fmt, where, None, f"is signed by {signer.name} ({fmt}, {where})", signer.name)


def decode_base64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _claims(payload: bytes) -> tuple[str, str] | str:
    """``(digest, docker reference)`` from a signed payload, or what is wrong with it."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "is not JSON"
    critical = _field(data, "critical")
    kind = _field(critical, "type")
    if kind != SIGNATURE_TYPE:
        return f"has critical.type {str(kind)[:60]!r}, not {SIGNATURE_TYPE!r}"
    digest = _field(_field(critical, "image"), "docker-manifest-digest")
    reference = _field(_field(critical, "identity"), "docker-reference")
    if not isinstance(digest, str) or not isinstance(reference, str):
        return ("lacks critical.image.docker-manifest-digest or "
                "critical.identity.docker-reference")
    return digest, reference


def _field(data: Any, name: str) -> Any:
    return data.get(name) if isinstance(data, dict) else None
