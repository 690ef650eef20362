"""Blob transfer between registries: mount, stream-copy with verification, uploads.

A copied blob streams through, hashed on the way: a wrong size or digest raises before
the upload is finished, so the destination never commits a blob that is not the one
asked for. Upload ``Location`` URLs must stay on the registry's own origin.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import httpx

from image_updater.errors import RegistryError, TransientRegistryError
from image_updater.registry.auth import repository_scope
from image_updater.registry.base import check_digest
from image_updater.registry.oci_errors import fail
from image_updater.registry.reference import check_repository
from image_updater.registry.transport import RegistryTransport, closing, shown
from image_updater.retry import RetryLater, retry_async

log = logging.getLogger(__name__)


def blob_url(transport: RegistryTransport, repository: str, digest: str) -> str:
    return f"{transport.base}/v2/{repository}/blobs/{digest}"


async def open_blob(transport: RegistryTransport, repository: str, digest: str, *,
                    retries: int | None = None) -> httpx.Response:
    """GET a blob, streamed; the caller reads and closes it."""
    check_repository(repository)
    check_digest(digest)
    # identity: the bytes must hash to the digest exactly as stored.
    response = await transport.request("GET", blob_url(transport, repository, digest),
                                       headers={"Accept-Encoding": "identity"},
                                       retries=retries)
    if response.status_code != 200:
        async with closing(response):
            await fail(transport, response, repository=repository, reference=digest)
    return response


async def copy_blob(dst: RegistryTransport, src: RegistryTransport, src_repository: str,
                    dst_repository: str, digest: str, size: int) -> None:
    """Stream one blob from ``src`` to ``dst``, retrying the whole copy when it fails
    transiently (a half-sent upload cannot be resumed portably)."""

    async def attempt() -> None:
        try:
            await _copy_once(dst, src, src_repository, dst_repository, digest, size)
        except TransientRegistryError as exc:
            raise RetryLater(str(exc), final=exc) from exc

    def on_retry(failed: int, total: int, reason: str, delay: float) -> None:
        log.warning("copying blob %s to %s/%s failed (%s); attempt %d/%d, retrying in %.1f s",
                    digest, dst.host, dst_repository, reason, failed, total, delay)

    await retry_async(attempt, attempts=dst.options.max_retries + 1, backoff=dst.backoff,
                      sleep=dst.sleep, on_retry=on_retry)


async def _copy_once(dst: RegistryTransport, src: RegistryTransport, src_repository: str,
                     dst_repository: str, digest: str, size: int) -> None:
    push = (repository_scope(dst_repository, ("pull", "push")),)
    started = await dst.request("POST", f"{dst.base}/v2/{dst_repository}/blobs/uploads/",
                                content=b"", scopes=push, retries=0)
    async with closing(started):
        if started.status_code != 202:
            await fail(dst, started, repository=dst_repository, reference=digest)
        location = upload_location(dst, started)
    source = await open_blob(src, src_repository, digest, retries=0)
    async with closing(source):
        chunks = verified_chunks(source, digest, size, src)
        put = await dst.request(
            "PUT", location, params={"digest": digest}, content=chunks, scopes=push,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            retries=0)
    async with closing(put):
        if put.status_code not in (201, 204):
            await fail(dst, put, repository=dst_repository, reference=digest)


def upload_location(transport: RegistryTransport, response: httpx.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        url = shown(str(response.request.url))
        raise RegistryError(
            f"Registry {transport.host} started an upload without a Location header at {url}; "
            "it does not follow the OCI distribution spec.", registry=transport.host, url=url)
    return transport.same_origin(response.request.url.join(location), "upload Location")


async def cancel_upload(transport: RegistryTransport, location: str) -> None:
    try:
        response = await transport.request("DELETE", location, retries=0)
    except RegistryError as exc:
        # The registry purges abandoned uploads itself; this only tidies up early.
        log.info("cancelling an unused upload on %s failed: %s", transport.host, exc)
        return
    await response.aclose()


async def verified_chunks(source: httpx.Response, digest: str, size: int,
                          src: RegistryTransport) -> AsyncIterator[bytes]:
    """Pass the source's raw bytes through while hashing them; a wrong size or digest raises
    before the upload is finished, so the destination never commits the blob."""
    hasher = hashlib.sha256()
    count = 0
    url = str(source.request.url)
    async for chunk in source.aiter_raw():
        count += len(chunk)
        if count > size:
            raise src.mismatch(url, f"sent more than the {size} bytes declared for {digest}")
        hasher.update(chunk)
        yield chunk
    actual = "sha256:" + hasher.hexdigest()
    if count != size or actual != digest:
        raise src.mismatch(url, f"sent {count} bytes hashing to {actual} for blob {digest} "
                                f"({size} bytes expected)")
