"""Small artefacts an OCI registry holds beside images: cosign signatures, referrers.

Read for :mod:`image_updater.registry.signatures`, through the same transport as every other
request. Each read has its own size cap; manifests are checked against their digest but not
their shape (the artefact's reader checks what it needs, so a malformed one is reported, not
raised); blobs are checked against their digest.
"""

from __future__ import annotations

import httpx

from image_updater.registry.auth import repository_scope
from image_updater.registry.base import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Manifest,
    check_digest,
    check_tag,
    sha256_digest,
)
from image_updater.registry.blobs import open_blob
from image_updater.registry.documents import json_object
from image_updater.registry.oci_errors import fail
from image_updater.registry.reference import check_repository
from image_updater.registry.transport import RegistryTransport, closing

_ACCEPT = ", ".join(MANIFEST_ACCEPT)


async def find_manifest(transport: RegistryTransport, repository: str, reference: str,
                        max_bytes: int) -> Manifest | None:
    """The manifest under ``reference`` (a tag or digest), or None when there is none (404)."""
    check_repository(repository)
    if reference.startswith("sha256:"):
        check_digest(reference)
    else:
        check_tag(reference)
    url = f"{transport.base}/v2/{repository}/manifests/{reference}"
    response = await transport.request("GET", url, headers={"Accept": _ACCEPT})
    async with closing(response):
        transport.from_origin(response, "manifest")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            await fail(transport, response, repository=repository, reference=reference)
        body = await transport.read_capped(response, max_bytes, what="manifest")
        reported = response.headers.get("Docker-Content-Digest")
        content_type = _media_type(response)
    digest = transport.manifest_digest(url, reference, body, reported)
    declared = (json_object(body) or {}).get("mediaType")
    media_type = content_type if content_type in MANIFEST_ACCEPT else (
        declared if isinstance(declared, str) else content_type)
    return Manifest(media_type=media_type, digest=digest, body=body)


async def get_blob(transport: RegistryTransport, repository: str, digest: str,
                   max_bytes: int) -> bytes:
    """A small blob, at most ``max_bytes``, verified against its digest."""
    response = await open_blob(transport, repository, digest)
    url = str(response.request.url)
    async with closing(response):
        body = await transport.read_capped(response, max_bytes, what="blob")
    if sha256_digest(body) != digest:
        raise transport.mismatch(
            url, f"served blob {digest} with content hashing to {sha256_digest(body)}")
    return body


async def referrers(transport: RegistryTransport, repository: str, digest: str,
                    max_bytes: int) -> Manifest | None:
    """The OCI 1.1 referrers index of ``digest`` (first page), or None when the registry has
    no referrers API: it answers 404, and the distribution spec's tag fallback applies."""
    check_repository(repository)
    check_digest(digest)
    url = f"{transport.base}/v2/{repository}/referrers/{digest}"
    # The path is not one auth.py derives a scope from: name the scope.
    response = await transport.request("GET", url, headers={"Accept": OCI_INDEX},
                                       scopes=(repository_scope(repository, ("pull",)),))
    async with closing(response):
        transport.from_origin(response, "referrers index")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            await fail(transport, response, repository=repository, reference=digest)
        body = await transport.read_capped(response, max_bytes, what="referrers index")
    return Manifest(media_type=OCI_INDEX, digest=sha256_digest(body), body=body)


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
