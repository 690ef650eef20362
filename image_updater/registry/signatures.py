"""Read what may sign a digest: cosign's ``.sig`` tag and sigstore bundle referrers.

The registry side of :mod:`image_updater.signatures`. Everything read is untrusted and small:
manifests, layer counts and blobs are capped, blobs are checked against their descriptors.
What cannot be verified does not raise: a malformed or oversized artefact becomes a located
:class:`~image_updater.signatures.ArtifactProblem` (``malformed``), content that does not hash
to its descriptor one marked ``tampered``; the verdict explains them. Transport, auth and
server errors still raise (``RegistryError``, ``TransientRegistryError``): they say nothing
about the image.

Requests per digest (token fetches aside): 1 for the ``.sig`` tag plus 1 per signature layer;
1 for the referrers API, or 2 without it (the API's 404, then the ``sha256-<hex>`` tag), plus
2 per sigstore bundle (its manifest and its blob).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from image_updater.errors import (
    DigestMismatchError,
    InvalidReferenceError,
    NotFoundError,
    ResponseTooLargeError,
)
from image_updater.registry.base import Manifest, Registry, check_digest
from image_updater.registry.documents import json_object
from image_updater.signatures import (
    SIGNATURE_ANNOTATION,
    SIGSTORE_BUNDLE,
    SIMPLE_SIGNING,
    SIMPLE_SIGNING_MEDIA_TYPE,
    ArtifactProblem,
    BundleDocument,
    Reason,
    SignatureArtifacts,
    SimpleSignature,
    is_bundle_media_type,
)

MAX_SIGNATURE_MANIFEST_BYTES = 256 * 1024
MAX_REFERRERS_INDEX_BYTES = 4 * 1024 * 1024  # the distribution registry's manifest limit
MAX_SIGNATURE_BLOB_BYTES = 128 * 1024  # a bundle with a certificate chain is a few KiB
MAX_SIGNATURE_LAYERS = 16
MAX_BUNDLE_REFERRERS = 16
REFERRERS_API = "referrers-api"
TAG_FALLBACK = "tag-fallback"


async def fetch_signatures(registry: Registry, repository: str, digest: str
                           ) -> SignatureArtifacts:
    """Everything in ``repository`` that may sign ``digest``, with the requests it took."""
    check_digest(digest)
    reader = _Reader(registry, repository, digest)
    await reader.read_simple_signing()
    await reader.read_bundles()
    return SignatureArtifacts(
        image=reader.image, digest=digest, simple_signing=tuple(reader.simple),
        bundles=tuple(reader.bundles), problems=tuple(reader.problems),
        requests=reader.requests, referrers=reader.referrers)


@dataclass
class _Reader:
    registry: Registry
    repository: str
    digest: str
    simple: list[SimpleSignature] = field(default_factory=list)
    bundles: list[BundleDocument] = field(default_factory=list)
    problems: list[ArtifactProblem] = field(default_factory=list)
    requests: int = 0
    referrers: str = ""

    @property
    def image(self) -> str:
        return f"{self.registry.host}/{self.repository}"

    # -- simple signing: the sha256-<hex>.sig tag -------------------------------------------

    async def read_simple_signing(self) -> None:
        tag = self.digest.replace(":", "-", 1) + ".sig"
        where = f"{self.image}:{tag}"
        manifest = await self._manifest(tag, where, SIMPLE_SIGNING)
        layers = self._list(manifest, "layers", where, SIMPLE_SIGNING, MAX_SIGNATURE_LAYERS)
        for number, layer in enumerate(layers):
            await self._read_simple_layer(layer, f"{where} layer {number}")

    async def _read_simple_layer(self, layer: Any, where: str) -> None:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            self._problem(SIMPLE_SIGNING, Reason.MALFORMED, where,
                          f"a layer that is not a {SIMPLE_SIGNING_MEDIA_TYPE} descriptor")
            return
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations,
                                                                        dict) else None
        if not isinstance(signature, str):
            self._problem(SIMPLE_SIGNING, Reason.MALFORMED, where,
                          f"a layer without the {SIGNATURE_ANNOTATION} annotation")
            return
        payload = await self._blob(layer, where, SIMPLE_SIGNING)
        if payload is not None:
            self.simple.append(SimpleSignature(payload=payload, signature=signature,
                                               where=where))

    # -- sigstore bundles: OCI 1.1 referrers ------------------------------------------------

    async def read_bundles(self) -> None:
        self.requests += 1
        try:
            index = await self.registry.referrers(self.repository, self.digest,
                                                  max_bytes=MAX_REFERRERS_INDEX_BYTES)
        except ResponseTooLargeError:
            # an oversized answer is the registry's problem; it must not hide the .sig tag's
            # signatures (read already) behind an error
            self._problem(SIGSTORE_BUNDLE, Reason.MALFORMED, f"{self.image} referrers of "
                          f"{self.digest}", "an oversized referrers index (it was not read)")
            return
        if index is not None:
            self.referrers, where = REFERRERS_API, f"{self.image} referrers of {self.digest}"
        else:
            # The distribution spec's fallback: an index under the tag sha256-<hex>.
            tag = self.digest.replace(":", "-", 1)
            self.referrers, where = TAG_FALLBACK, f"{self.image}:{tag}"
            index = await self._manifest(tag, where, SIGSTORE_BUNDLE)
        entries = self._list(index, "manifests", where, SIGSTORE_BUNDLE, None)
        wanted = [e for e in entries
                  if isinstance(e, dict) and is_bundle_media_type(e.get("artifactType"))]
        if len(wanted) > MAX_BUNDLE_REFERRERS:
            self._problem(SIGSTORE_BUNDLE, Reason.MALFORMED, where,
                          f"{len(wanted)} bundle referrers; only the first "
                          f"{MAX_BUNDLE_REFERRERS} were read")
        for entry in wanted[:MAX_BUNDLE_REFERRERS]:
            await self._read_bundle(entry, where)

    async def _read_bundle(self, entry: dict[str, Any], listed_in: str) -> None:
        reference = self._digest_of(entry, listed_in, SIGSTORE_BUNDLE)
        if reference is None:
            return
        where = f"{self.image}@{reference}"
        manifest = await self._manifest(reference, where, SIGSTORE_BUNDLE)
        if manifest is None:
            self._problem(SIGSTORE_BUNDLE, Reason.MALFORMED, where,
                          f"a referrer listed in {listed_in} that does not exist")
            return
        layers = self._list(manifest, "layers", where, SIGSTORE_BUNDLE, MAX_SIGNATURE_LAYERS)
        layer = next((x for x in layers if isinstance(x, dict)
                      and is_bundle_media_type(x.get("mediaType"))), None)
        if layer is None:
            self._problem(SIGSTORE_BUNDLE, Reason.MALFORMED, where,
                          "a bundle referrer without a sigstore bundle layer")
            return
        body = await self._blob(layer, f"{where} bundle layer", SIGSTORE_BUNDLE)
        if body is not None:
            self.bundles.append(BundleDocument(body=body, media_type=layer["mediaType"],
                                               where=where))

    # -- reading, bounded and checked -------------------------------------------------------

    async def _manifest(self, reference: str, where: str, fmt: str) -> Manifest | None:
        self.requests += 1
        try:
            return await self.registry.find_manifest(
                self.repository, reference, max_bytes=MAX_SIGNATURE_MANIFEST_BYTES)
        except DigestMismatchError:
            self._problem(fmt, Reason.TAMPERED, where,
                          f"a manifest ({reference}) whose content does not hash to the "
                          "digest the registry gives for it")
            return None
        except ResponseTooLargeError:
            self._problem(fmt, Reason.MALFORMED, where, f"an oversized manifest ({reference}, "
                          f"more than {MAX_SIGNATURE_MANIFEST_BYTES} bytes; it was not read)")
            return None

    def _list(self, manifest: Manifest | None, name: str, where: str, fmt: str,
              limit: int | None) -> list[Any]:
        if manifest is None:
            return []
        items = (json_object(manifest.body) or {}).get(name)
        if not isinstance(items, list):
            self._problem(fmt, Reason.MALFORMED, where,
                          f"a manifest that is not a JSON object with a '{name}' list")
            return []
        if limit is not None and len(items) > limit:
            self._problem(fmt, Reason.MALFORMED, where,
                          f"{len(items)} {name}; only the first {limit} were read")
            return items[:limit]
        return items

    async def _blob(self, descriptor: dict[str, Any], where: str, fmt: str) -> bytes | None:
        digest = self._digest_of(descriptor, where, fmt)
        size = descriptor.get("size")
        if digest is None:
            return None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            self._problem(fmt, Reason.MALFORMED, where, "a descriptor without a valid size")
            return None
        if size > MAX_SIGNATURE_BLOB_BYTES:
            self._problem(fmt, Reason.MALFORMED, where,
                          f"an oversized blob ({size} bytes, at most "
                          f"{MAX_SIGNATURE_BLOB_BYTES} are read)")
            return None
        self.requests += 1
        try:
            body = await self.registry.get_blob(self.repository, digest,
                                                MAX_SIGNATURE_BLOB_BYTES)
        except DigestMismatchError:
            self._problem(fmt, Reason.TAMPERED, where,
                          f"a blob whose content does not hash to its digest {digest}")
            return None
        except NotFoundError:
            self._problem(fmt, Reason.MALFORMED, where, f"a descriptor of a missing blob {digest}")
            return None
        except ResponseTooLargeError:  # its descriptor said it was small
            self._problem(fmt, Reason.TAMPERED, where,
                          f"a blob larger than its descriptor's {size} bytes")
            return None
        if len(body) != size:
            self._problem(fmt, Reason.TAMPERED, where,
                          f"a blob of {len(body)} bytes where its descriptor says {size}")
            return None
        return body

    def _digest_of(self, descriptor: dict[str, Any], where: str, fmt: str) -> str | None:
        try:
            return check_digest(descriptor.get("digest"),  # type: ignore[arg-type]
                                what="descriptor digest")
        except InvalidReferenceError as exc:
            self._problem(fmt, Reason.MALFORMED, where, f"a descriptor whose {_why(exc)}")
            return None

    def _problem(self, fmt: str, reason: Reason, where: str, what: str) -> None:
        self.problems.append(ArtifactProblem(format=fmt, reason=reason, where=where,
                                             message=f"{what} at {where}"))


def _why(exc: Exception) -> str:
    """An error's message as a clause: first letter lowered, final period dropped."""
    text = str(exc).rstrip(".")
    return text[:1].lower() + text[1:]
