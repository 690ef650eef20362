"""Copying one image, byte for byte, to a tag in the same or another repository or registry.

The manifest bytes are never re-encoded, so the destination serves the very digest the
source does. How the content gets there depends on where the destination is:

- the same repository: the blobs and child manifests are already there; one PUT of the
  manifest under the new tag is all it takes (works for ECR too, via ``PutImage``);
- another repository of the same registry: every blob is *mounted* from the source
  repository (``POST …/blobs/uploads/?mount=…&from=…``, no bytes move); a registry that
  declines a mount gets the blob streamed instead;
- another registry: every blob the destination lacks is streamed through this process,
  chunk by chunk and verified against its digest, never held in memory whole.

For an image index, every child manifest (all platforms) is copied first, blobs then the
child itself by digest, and the index last: a registry refuses an index whose children it
does not hold, and a reader must never see a tag whose content is incomplete.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from image_updater.errors import ConfigError, DigestMismatchError, RegistryError, truncate
from image_updater.registry.base import Manifest, Registry, check_digest, sha256_digest
from image_updater.registry.oci import OciRegistry

#: an index of indexes is legal but rare; deeper nesting is refused rather than followed
MAX_INDEX_DEPTH = 2
# Descriptors with these media types point at content a registry may not serve ("foreign"
# Windows base layers); like docker and skopeo we leave them where their ``urls`` say.
_NON_DISTRIBUTABLE = ("nondistributable", "foreign")


@dataclass(frozen=True)
class Blob:
    """A blob a manifest references: what to copy and how many bytes to expect."""

    digest: str
    size: int


BlobMover = Callable[[Blob], Awaitable[None]]


# -- reading manifests (pure) ----------------------------------------------------------------


def manifest_json(manifest: Manifest, where: str) -> dict[str, Any]:
    """The manifest as a JSON object; the bytes are untrusted, so anything else is refused."""
    try:
        data = json.loads(manifest.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RegistryError(f"Manifest {manifest.digest} of {where} is not a JSON object "
                            f"({truncate(manifest.body, 80)!r}); it cannot be copied.")
    return data


def child_digests(manifest: Manifest, where: str) -> list[str]:
    """Digests of an index's child manifests, in order, without duplicates."""
    entries = manifest_json(manifest, where).get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"Image index {manifest.digest} of {where} has no 'manifests' list; "
                            "it cannot be copied.")
    digests = [_descriptor(e, where, "child manifest").digest for e in entries]
    return list(dict.fromkeys(digests))


def referenced_blobs(manifest: Manifest, where: str) -> list[Blob]:
    """The config and layer blobs of an image manifest that a registry must hold."""
    data = manifest_json(manifest, where)
    found: list[Blob] = []
    config = data.get("config")
    if config is not None:
        found.append(_descriptor(config, where, "config"))
    layers = data.get("layers") or []
    if not isinstance(layers, list):
        raise RegistryError(f"Manifest {manifest.digest} of {where} has a 'layers' field that "
                            "is not a list; it cannot be copied.")
    found += [_descriptor(layer, where, "layer") for layer in layers
              if not _non_distributable(layer)]
    return list({b.digest: b for b in found}.values())


def _descriptor(entry: object, where: str, what: str) -> Blob:
    if not isinstance(entry, dict):
        raise RegistryError(f"A {what} descriptor in {where} is not a JSON object; the "
                            "manifest cannot be copied.")
    digest = check_digest(entry.get("digest"), what=f"{what} digest in {where}")  # type: ignore[arg-type]
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"The {what} {digest} in {where} has size {str(size)[:40]!r}, not a "
                            "non-negative integer; the manifest cannot be copied.")
    return Blob(digest=digest, size=size)


def _non_distributable(layer: object) -> bool:
    if not isinstance(layer, dict):
        return False
    media_type = str(layer.get("mediaType", ""))
    return bool(layer.get("urls")) and any(m in media_type for m in _NON_DISTRIBUTABLE)


# -- blob movers -----------------------------------------------------------------------------


def mount_or_stream(registry: OciRegistry, src_repository: str, dst_repository: str
                    ) -> BlobMover:
    """Same registry: link each blob from the source repository; stream it if declined."""

    async def move(blob: Blob) -> None:
        if not await registry.mount_blob(dst_repository, blob.digest, src_repository):
            await registry.copy_blob_stream(registry, src_repository, dst_repository,
                                            blob.digest, blob.size)

    return move


def stream(src: OciRegistry, src_repository: str, dst: OciRegistry, dst_repository: str
           ) -> BlobMover:
    """Another registry: stream each blob the destination does not hold yet."""

    async def move(blob: Blob) -> None:
        # copy_blob_stream checks the destination first, so reruns move no bytes
        await dst.copy_blob_stream(src, src_repository, dst_repository, blob.digest, blob.size)

    return move


# -- copying ---------------------------------------------------------------------------------


async def copy_image(manifest: Manifest, *, src: Registry, src_repository: str,
                     dst: Registry, dst_repository: str, tag: str,
                     before_put: Callable[[], Awaitable[None]] | None = None) -> str:
    """Make ``dst_repository:tag`` serve exactly ``manifest``; return the digest it reports.

    ``manifest`` must have been read from ``src_repository`` on ``src``. ``before_put`` runs
    after the content is in place and just before the tag is written (a compare-and-swap
    re-checks the tag there, as copying blobs may take long).
    """
    if sha256_digest(manifest.body) != manifest.digest:
        raise DigestMismatchError(f"The manifest read from {src.host}/{src_repository} does "
                                  f"not hash to {manifest.digest}; it is not copied.",
                                  registry=src.host)
    if src.host != dst.host or src_repository != dst_repository:
        await _copy_content(manifest, _mover(src, src_repository, dst, dst_repository),
                            src=_oci(src, dst), src_repository=src_repository,
                            dst=_oci(dst, src), dst_repository=dst_repository, depth=0)
    if before_put is not None:
        await before_put()
    reported = await dst.put_manifest(dst_repository, tag, manifest)
    if reported != manifest.digest:
        raise DigestMismatchError(
            f"Registry {dst.host} stored {dst_repository}:{tag} as {reported}, not as the "
            f"source digest {manifest.digest}; the tag may now point at an altered image. "
            "Check the registry, then retag again.", registry=dst.host)
    return reported


def _mover(src: Registry, src_repository: str, dst: Registry, dst_repository: str
           ) -> BlobMover:
    if src.host == dst.host:
        return mount_or_stream(_oci(dst, src), src_repository, dst_repository)
    return stream(_oci(src, dst), src_repository, _oci(dst, src), dst_repository)


def _oci(registry: Registry, other: Registry) -> OciRegistry:
    """Blob operations need the OCI API; ECR's native API has no way to copy blobs."""
    if isinstance(registry, OciRegistry):
        return registry
    raise ConfigError(
        f"Copying an image between {other.host} and {registry.host} needs blob uploads, which "
        f"the native API of {registry.host} does not offer; retag within one repository "
        "there, or copy the image with 'skopeo copy --all' or registry replication.")


async def _copy_content(manifest: Manifest, move: BlobMover, *, src: OciRegistry,
                        src_repository: str, dst: OciRegistry, dst_repository: str,
                        depth: int) -> None:
    """Everything ``manifest`` references, present in the destination repository."""
    where = f"{src.host}/{src_repository}@{manifest.digest}"
    if not manifest.is_index:
        await _all(move(blob) for blob in referenced_blobs(manifest, where))
        return
    if depth >= MAX_INDEX_DEPTH:
        raise RegistryError(f"Image index {where} nests indexes more than {MAX_INDEX_DEPTH} "
                            "deep; it is not copied.", registry=src.host)

    async def copy_child(digest: str) -> None:
        child = await src.get_manifest(src_repository, digest)  # verifies the child's sha256
        await _copy_content(child, move, src=src, src_repository=src_repository, dst=dst,
                            dst_repository=dst_repository, depth=depth + 1)
        await dst.put_manifest(dst_repository, child.digest, child)

    await _all(copy_child(d) for d in child_digests(manifest, where))


async def _all(awaitables: Iterable[Awaitable[object]]) -> None:
    """Run concurrently (the registry client bounds how many requests are in flight). The
    first error cancels the rest, and none outlives it; that error is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for awaitable in awaitables:
                group.create_task(_awaited(awaitable))
        return
    except ExceptionGroup as errors:
        error = leading_error(errors)
    raise error  # outside the handler: the error keeps its own cause and context


async def _awaited(awaitable: Awaitable[object]) -> None:
    await awaitable


def leading_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first that failed (it cancelled the
    rest), unwrapped, so callers keep raising and catching ``ImageUpdaterError``."""
    first = errors.exceptions[0]
    return leading_error(first) if isinstance(first, BaseExceptionGroup) else first
