"""The seam between the engine and a registry: small value types and one protocol."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from image_updater.errors import InvalidReferenceError, NotFoundError, RegistryError

# Media types, most specific first: the Accept list sent with every manifest request.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
# The distribution spec's tag grammar: at most 128 characters.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_digest(value: str, *, what: str = "digest") -> str:
    """Return ``value`` if it is a well-formed sha256 digest; raise otherwise.

    Digests come from registries, webhooks and users: all untrusted.
    """
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        shown = repr(value)[:90]
        raise InvalidReferenceError(
            f"{what} {shown} is not a sha256 digest; expected 'sha256:' followed by 64 "
            "lowercase hex characters."
        )
    return value


def check_tag(value: str, *, what: str = "tag") -> str:
    """Return ``value`` if it is a valid tag per the distribution spec; raise otherwise."""
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        shown = repr(value)[:90]
        raise InvalidReferenceError(
            f"{what} {shown} is not a valid tag; tags are 1-128 characters of "
            "[A-Za-z0-9_.-] and must not start with '.' or '-'."
        )
    return value


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it: bytes are kept so copies are identical."""

    media_type: str
    digest: str
    body: bytes

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


def platform_child(manifest: Manifest, platform: str | None, where: str, host: str) -> str:
    """The digest of the child of an image index that runs on ``platform``.

    ``platform`` is ``os/arch`` or ``os/arch/variant``; without a variant any variant
    matches. Without a platform the first child that is an image (not an attestation,
    which buildx lists as ``unknown/unknown``) is chosen. The index bytes come from a
    registry and are untrusted: anything malformed is a :class:`RegistryError`.
    """
    try:
        data = json.loads(manifest.body)
    except (ValueError, UnicodeDecodeError):
        data = None
    entries = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RegistryError(f"Image index {where} is not a JSON object with a 'manifests' list; "
                            "the registry served a malformed index.", registry=host, url=where)
    wanted = platform.split("/") if platform else None
    available = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        parts = _platform_parts(entry.get("platform"))
        available.append("/".join(p for p in parts if p))
        if wanted is None:
            matched = parts[0] != "unknown"
        else:
            matched = parts[:2] == tuple(wanted[:2]) and (len(wanted) < 3 or parts[2] == wanted[2])
        if matched:
            return check_digest(entry.get("digest"),  # type: ignore[arg-type]
                                what=f"child digest in image index {where}")
    shown = ", ".join(p for p in available if p)[:200] or "none"
    raise NotFoundError(f"Image index {where} has no manifest for {platform or 'any image'} "
                        f"(available: {shown}); push that platform or fix the policy's "
                        "'platform'.", registry=host, url=where)


def _platform_parts(value: object) -> tuple[str, str, str]:
    if not isinstance(value, dict):
        return ("", "", "")
    os_name, arch, variant = (value.get(k) for k in ("os", "architecture", "variant"))
    return tuple(v if isinstance(v, str) else "" for v in (os_name, arch, variant))  # type: ignore[return-value]


@dataclass(frozen=True)
class TagDigest:
    """What one tag points at, as seen in one scan."""

    tag: str
    digest: str
    created: datetime | None = None  # image creation / push time where the registry tells


class Registry(Protocol):
    """One registry host. Repositories are names within it (``team/app``)."""

    host: str
    #: True when :meth:`digests` answers every tag of a repository from one listing (ECR):
    #: after a failure, asking tag by tag would only repeat the same request
    one_listing_per_repository: bool

    def begin_cycle(self) -> None:
        """Start of a reconcile cycle: forget anything cached for the previous one (ECR's
        listings). A no-op for a registry that caches nothing per cycle."""
        ...

    async def digests(self, repository: str, tags: Collection[str]) -> dict[str, str]:
        """Digest behind each of ``tags``; tags that do not exist are left out.

        The OCI client sends one HEAD per tag; ECR answers from one paginated listing.
        """
        ...

    async def list_tags(self, repository: str) -> list[str]: ...

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        """``(digest, media_type)`` of a tag or digest, or None when it does not exist."""
        ...

    async def get_manifest(self, repository: str, reference: str) -> Manifest: ...

    async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``tag``; return the digest the registry reports."""
        ...

    async def created(self, repository: str, digest: str) -> datetime | None:
        """Creation time of the image (config ``created``); cached by digest."""
        ...

    async def find_manifest(self, repository: str, reference: str, *,
                            max_bytes: int = ...) -> Manifest | None:
        """The manifest under ``reference`` or None (404); its digest checked, its shape not
        (cosign artefacts are read by :mod:`image_updater.registry.signatures`)."""
        ...

    async def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        """A small blob of at most ``max_bytes``, checked against ``digest``."""
        ...

    async def referrers(self, repository: str, digest: str, *,
                        max_bytes: int = ...) -> Manifest | None:
        """The OCI 1.1 referrers index of ``digest``, or None without a referrers API."""
        ...

    async def aclose(self) -> None: ...
