"""What was read from a registry about one digest, and what was concluded from it.

:class:`SignatureArtifacts` is filled by the registry adapter
(:mod:`image_updater.registry.signatures`) and read only by :func:`verify_signatures`;
callers pass it through and look at ``requests``. :class:`SignatureVerdict` is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

SIMPLE_SIGNING = "simple-signing"
SIGSTORE_BUNDLE = "sigstore-bundle"

#: The sigstore bundle media types, v0.1 to v0.3 (sigstore protobuf-specs); each is used both
#: as the referrer's artifactType and as the bundle layer's media type.
BUNDLE_MEDIA_TYPES = frozenset({
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
})


def is_bundle_media_type(value: object) -> bool:
    """Whether an untrusted JSON value names a sigstore bundle (it may be of any type)."""
    return isinstance(value, str) and value in BUNDLE_MEDIA_TYPES


#: The layer media type of a cosign simple-signing signature (cosign SIGNATURE_SPEC)
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
#: The layer annotation that carries the base64 signature over the layer's bytes
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


class Reason(StrEnum):
    """Why a digest is not eligible; the ``reason`` label of verification failure metrics."""

    UNSIGNED = "unsigned"
    WRONG_KEY = "wrong-key"
    WRONG_DIGEST = "wrong-digest"
    WRONG_IDENTITY = "wrong-identity"
    TAMPERED = "tampered"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class SimpleSignature:
    """One layer of a ``sha256-<hex>.sig`` manifest: the signed payload and its signature."""

    payload: bytes
    signature: str  # the base64 annotation, as found (untrusted)
    where: str      # e.g. "registry/team/app:sha256-….sig layer 0"


@dataclass(frozen=True)
class BundleDocument:
    """One sigstore bundle (the JSON layer of a referrer)."""

    body: bytes
    media_type: str
    where: str      # e.g. "registry/team/app referrer sha256:…"


@dataclass(frozen=True)
class ArtifactProblem:
    """Something found while reading that cannot be verified: a malformed manifest or layer,
    an oversized blob, content that does not hash to its descriptor (tampered)."""

    format: str
    reason: Reason
    where: str
    message: str


@dataclass(frozen=True)
class SignatureArtifacts:
    """Everything the registry holds that may sign ``digest`` of ``image`` (host/repository)."""

    image: str
    digest: str
    simple_signing: tuple[SimpleSignature, ...] = ()
    bundles: tuple[BundleDocument, ...] = ()
    problems: tuple[ArtifactProblem, ...] = ()
    #: registry requests the read took (token fetches and retries not included)
    requests: int = 0
    #: how bundles were looked up: "referrers-api" or "tag-fallback"
    referrers: str = ""


@dataclass(frozen=True)
class SignatureVerdict:
    """The answer for one digest and key set. ``message`` is a full sentence naming the image
    and digest, what was found and, on refusal, what to do."""

    ok: bool
    key: str | None           # the name of the key that made the accepted signature
    format: str | None        # SIMPLE_SIGNING or SIGSTORE_BUNDLE, of the deciding signature
    reason: Reason | None     # None when ok
    message: str


@dataclass(frozen=True)
class Finding:
    """What one signature (or one unreadable artefact) says about the digest: ``reason`` None
    means a valid signature by ``key`` with the right claims. ``detail`` finishes the
    sentence "Image X@D …"."""

    format: str
    where: str
    reason: Reason | None
    detail: str
    key: str | None = None
