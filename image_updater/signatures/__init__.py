"""Cosign signature verification: keys, the two storage formats and their signed claims.

Pure: bytes in, verdicts out; no network, clock or filesystem (the registry adapter
:mod:`image_updater.registry.signatures` fetches the :class:`SignatureArtifacts`).
"""

from __future__ import annotations

from image_updater.signatures.claims import repository_of, same_repository
from image_updater.signatures.keys import PublicKey, SignatureKeyError, load_public_key
from image_updater.signatures.model import (
    BUNDLE_MEDIA_TYPES,
    SIGNATURE_ANNOTATION,
    SIGSTORE_BUNDLE,
    SIMPLE_SIGNING,
    SIMPLE_SIGNING_MEDIA_TYPE,
    ArtifactProblem,
    BundleDocument,
    Reason,
    SignatureArtifacts,
    SignatureVerdict,
    SimpleSignature,
    is_bundle_media_type,
)
from image_updater.signatures.verify import verify_signatures

__all__ = [
    "BUNDLE_MEDIA_TYPES",
    "SIGNATURE_ANNOTATION",
    "SIGSTORE_BUNDLE",
    "SIMPLE_SIGNING",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "ArtifactProblem",
    "BundleDocument",
    "PublicKey",
    "Reason",
    "SignatureArtifacts",
    "SignatureKeyError",
    "SignatureVerdict",
    "SimpleSignature",
    "is_bundle_media_type",
    "load_public_key",
    "repository_of",
    "same_repository",
    "verify_signatures",
]
