"""The OCI distribution API client: one :class:`OciRegistry` per registry host.

The operations live here; the parts they share are split out along their seams:
``transport.py`` (rate limit → auth → one send, retried; TLS diagnosis), ``oci_errors.py``
(a non-success answer → the error that says what to do), ``blobs.py`` (verified blob
transfer between registries) and ``documents.py`` (the checked shapes of registry JSON).

Everything read from a registry is untrusted: bodies are size-capped, digests are
recomputed and compared, tags and documents are checked, pagination may not leave the host.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import httpx

from image_updater.clocks import MonotonicClock, WallClock
from image_updater.errors import InvalidReferenceError, RegistryError, truncate
from image_updater.registry import artefacts, documents, heads
from image_updater.registry.auth import repository_scope
from image_updater.registry.base import (
    MANIFEST_ACCEPT,
    Manifest,
    check_digest,
    check_tag,
    platform_child,
    sha256_digest,
)
from image_updater.registry.blobs import (
    blob_url,
    cancel_upload,
    copy_blob,
    open_blob,
    upload_location,
)
from image_updater.registry.documents import Where, json_object
from image_updater.registry.oci_errors import (
    error_codes,
    fail,
    fail_put_manifest,
    read_error_body,
)
from image_updater.registry.options import RegistryOptions
from image_updater.registry.ratelimit import Sleep
from image_updater.registry.reference import check_repository
from image_updater.registry.transport import (
    OnRequest,
    RegistryTransport,
    closing,
    shown,
)
from image_updater.retry import RetryLater

if TYPE_CHECKING:  # prometheus_client is imported only by processes that export metrics
    from image_updater.observability.metrics import Metrics

ACCEPT_MANIFESTS = ", ".join(MANIFEST_ACCEPT)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024     # the distribution registry's own manifest limit
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024
MAX_TAG_PAGES = 1000
CREATED_CACHE_SIZE = 4096
_LINK_RE = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL_NEXT_RE = re.compile(r';\s*rel\s*=\s*"?([^";]*)"?')
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")  # as base.check_digest: its fast path
T = TypeVar("T")

__all__ = ["ACCEPT_MANIFESTS", "OciRegistry", "OnRequest"]


class OciRegistry:
    """A registry speaking the OCI distribution API; implements ``base.Registry``.

    ``sleep``, ``clock`` (monotonic, for latency and rate limits), ``wall_clock`` (for
    ``Retry-After`` dates and token ``issued_at``) and ``jitter`` are parameters so tests
    control time and randomness. ``on_request(method, url)`` sees every HTTP request,
    token fetches included.
    """

    #: one HEAD per tag: a failure can concern one tag only
    one_listing_per_repository = False

    def __init__(self, options: RegistryOptions, *, metrics: Metrics | None = None,
                 on_request: OnRequest | None = None, sleep: Sleep = asyncio.sleep,
                 clock: MonotonicClock = time.monotonic, wall_clock: WallClock = time.time,
                 jitter: Callable[[], float] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.host = options.host
        self.transport = RegistryTransport(
            options, metrics=metrics, on_request=on_request, sleep=sleep, clock=clock,
            wall_clock=wall_clock, jitter=jitter, transport=transport)
        self._base = options.base_url
        self._created: dict[tuple[str, str | None], datetime | None] = {}

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> OciRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Registry protocol -----------------------------------------------------------

    async def ping(self) -> None:
        """Check that ``/v2/`` answers and the credentials are accepted."""
        response = await self.transport.request("GET", f"{self._base}/v2/")
        async with closing(response):
            if response.status_code != 200:
                await fail(self.transport, response, repository="")

    async def list_tags(self, repository: str) -> list[str]:
        """All tags, following ``Link: <…>; rel="next"`` pages on the same host."""
        check_repository(repository)
        url = f"{self._base}/v2/{repository}/tags/list"
        tags: dict[str, None] = {}
        seen = {url}
        for _ in range(MAX_TAG_PAGES):
            page, link = await self._tags_page(repository, url)
            tags.update(dict.fromkeys(page))
            next_url = self._next_page(url, link)
            if next_url is None:
                return list(tags)
            if next_url in seen:
                raise RegistryError(
                    f"Registry {self.host} sent a tag-list page link that loops back to "
                    f"{shown(next_url)}; the tag list of {repository} cannot be read.",
                    registry=self.host, url=shown(next_url))
            seen.add(next_url)
            url = next_url
        raise RegistryError(
            f"The tag list of {repository} on {self.host} has more than {MAX_TAG_PAGES} pages; "
            "refusing to read further.", registry=self.host, url=shown(url))

    async def _manifest_request(self, method: str, repository: str, reference: str, *,
                                first: RetryLater | None = None
                                ) -> tuple[str, httpx.Response]:
        """Send ``method`` for a manifest (reference checked first); the caller closes it."""
        check_repository(repository)
        _check_reference(reference)
        url = self._manifest_url(repository, reference)
        return url, await self.transport.request(method, url, first=first,
                                                 headers={"Accept": ACCEPT_MANIFESTS})

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        return await self._head(repository, reference)

    async def _head(self, repository: str, reference: str, *, first: RetryLater | None = None
                    ) -> tuple[str, str] | None:
        url, response = await self._manifest_request("HEAD", repository, reference, first=first)
        async with closing(response):
            self.transport.from_origin(response, "manifest digest")
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                await fail(self.transport, response, repository=repository, reference=reference)
            digest = response.headers.get("Docker-Content-Digest")
            media_type = _media_type(response.headers.get("Content-Type", ""))
        if not digest:
            # Some registries omit the digest on HEAD; the body tells it for certain.
            manifest = await self.get_manifest(repository, reference)
            return manifest.digest, manifest.media_type
        digest = self._reported_digest(digest, url)
        if reference.startswith("sha256:") and digest != reference:
            raise self.transport.mismatch(url, f"reports digest {digest} for manifest {reference}")
        return digest, media_type

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        url, response = await self._manifest_request("GET", repository, reference)
        async with closing(response):
            self.transport.from_origin(response, "manifest")
            if response.status_code == 404:
                await self._fail_manifest_unknown(response, repository, reference)
            if response.status_code != 200:
                await fail(self.transport, response, repository=repository, reference=reference)
            body = await self.transport.read_capped(response, MAX_MANIFEST_BYTES, what="manifest")
            reported = response.headers.get("Docker-Content-Digest")
            content_type = _media_type(response.headers.get("Content-Type", ""))
        digest = self.transport.manifest_digest(url, reference, body, reported)
        media_type = documents.manifest_media_type(content_type, body,
                                                   Where(self.host, shown(url),
                                                         f"{self.host}/{repository}"))
        return Manifest(media_type=media_type, digest=digest, body=body)

    def begin_cycle(self) -> None:
        """Nothing is cached per cycle: every tag lookup asks the registry."""

    async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``tag``; ``tag`` may also be the manifest's own digest
        (an index's children are stored by digest, untagged)."""
        check_repository(repository)
        if tag != manifest.digest:
            check_tag(tag)
        url = self._manifest_url(repository, tag)
        if sha256_digest(manifest.body) != manifest.digest:
            raise self.transport.mismatch(
                url, f"would receive a manifest whose body does not hash to {manifest.digest}; "
                     "refusing to upload it")
        response = await self.transport.request(
            "PUT", url, content=manifest.body, headers={"Content-Type": manifest.media_type},
            scopes=(repository_scope(repository, ("pull", "push")),))
        async with closing(response):
            if response.status_code not in (200, 201):
                await fail_put_manifest(self.transport, response, repository=repository, tag=tag)
            reported = response.headers.get("Docker-Content-Digest")
        if reported and reported != manifest.digest:
            raise self.transport.mismatch(
                url, f"stored tag {tag} as {truncate(reported, 80)}, not {manifest.digest}")
        return manifest.digest

    async def digests(self, repository: str, tags: Collection[str]) -> dict[str, str]:
        """One HEAD per tag, concurrently on the transport's threads (``heads.py``)."""
        check_repository(repository)
        wanted = [check_tag(t) for t in dict.fromkeys(tags)]
        outcomes: dict[str, heads.Outcome] = {}
        for part in await _all(self.transport.in_thread(
                heads.head_tags, self.transport,
                {t: self._manifest_url(repository, t) for t in job}, ACCEPT_MANIFESTS,
                self._reported_digest) for job in heads.jobs(wanted)):
            outcomes.update(part)
        # Plain answers are final; only the others need the async path (a task each).
        unsettled = [t for t in wanted if not (outcomes[t] is None
                                               or isinstance(outcomes[t], str))]
        if unsettled:
            # return_exceptions: every HEAD finishes before we raise, so no task is left
            results = await asyncio.gather(*(self._settle(repository, t, outcomes[t])
                                             for t in unsettled), return_exceptions=True)
            for tag, result in zip(unsettled, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                outcomes[tag] = result
        found = {t: d for t in wanted if isinstance(d := outcomes[t], str)}
        if wanted and not found:
            # HEAD answers carry no body: tell a missing repository from missing tags.
            await self._require_repository(repository)
        return found

    async def _settle(self, repository: str, tag: str, outcome: heads.Outcome) -> str | None:
        """A bulk HEAD's outcome as ``head_manifest`` would have answered it."""
        if outcome is None or isinstance(outcome, str):
            return outcome
        if isinstance(outcome, heads.AskAgain) and outcome.get:
            return (await self.get_manifest(repository, tag)).digest  # no digest on HEAD
        if isinstance(outcome, RetryLater | heads.AskAgain):
            first = outcome if isinstance(outcome, RetryLater) else None
            found = await self._head(repository, tag, first=first)
            return found[0] if found is not None else None
        raise outcome

    async def created(self, repository: str, digest: str,
                      platform: str | None = None) -> datetime | None:
        """Config ``created`` of an image; for an index, of ``platform`` or the first image."""
        check_digest(digest)
        key = (digest, platform)  # digests are immutable, so the answer never changes
        if key not in self._created:
            value = await self._load_created(repository, digest, platform)
            if len(self._created) >= CREATED_CACHE_SIZE:
                self._created.pop(next(iter(self._created)))
            self._created[key] = value
        return self._created[key]

    # -- blobs, for promotion across repositories and registries ---------------------------

    async def blob_exists(self, repository: str, digest: str) -> bool:
        check_repository(repository)
        check_digest(digest)
        response = await self.transport.request("HEAD",
                                                blob_url(self.transport, repository, digest))
        async with closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            await fail(self.transport, response, repository=repository, reference=digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository: True when it did."""
        check_repository(repository)
        check_repository(from_repository)
        check_digest(digest)
        url = f"{self._base}/v2/{repository}/blobs/uploads/"
        response = await self.transport.request(
            "POST", url, params={"mount": digest, "from": from_repository}, content=b"",
            scopes=(repository_scope(repository, ("pull", "push")),
                    repository_scope(from_repository, ("pull",))))
        async with closing(response):
            if response.status_code == 201:
                return True
            if response.status_code != 202:
                await fail(self.transport, response, repository=repository, reference=digest)
            location = upload_location(self.transport, response)
        # 202 means "declined, here is an ordinary upload instead": we do not want it.
        await cancel_upload(self.transport, location)
        return False

    async def copy_blob_stream(self, src: OciRegistry, src_repository: str, dst_repository: str,
                               digest: str, size: int) -> None:
        """Copy one blob from ``src`` by streaming it through; never holds it in memory."""
        check_repository(src_repository)
        check_repository(dst_repository)
        check_digest(digest)
        if size < 0:
            raise InvalidReferenceError(f"blob {digest} has a negative size {size}.")
        if await self.blob_exists(dst_repository, digest):
            return
        await copy_blob(self.transport, src.transport, src_repository, dst_repository, digest,
                        size)

    async def get_blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        """A small JSON blob (an image config), verified against its digest."""
        response = await open_blob(self.transport, repository, digest)
        url = str(response.request.url)
        async with closing(response):
            body = await self.transport.read_capped(response, MAX_CONFIG_BYTES, what="config blob")
        if sha256_digest(body) != digest:
            raise self.transport.mismatch(
                url, f"served blob {digest} with content hashing to {sha256_digest(body)}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"Blob {digest} in {self.host}/{repository} is not JSON; it is "
                                "not an image config.", registry=self.host, url=shown(url)
                                ) from exc
        if not isinstance(data, dict):
            raise RegistryError(f"Blob {digest} in {self.host}/{repository} is not a JSON "
                                "object; it is not an image config.", registry=self.host,
                                url=shown(url))
        return data

    # -- small artefacts (cosign signatures, referrers): registry/artefacts.py ------------

    async def find_manifest(self, repository: str, reference: str, *,
                            max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest | None:
        return await artefacts.find_manifest(self.transport, repository, reference, max_bytes)

    async def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        return await artefacts.get_blob(self.transport, repository, digest, max_bytes)

    async def referrers(self, repository: str, digest: str, *,
                        max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest | None:
        return await artefacts.referrers(self.transport, repository, digest, max_bytes)

    # -- helpers for the operations above --------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self._base}/v2/{repository}/manifests/{reference}"

    async def _tags_page(self, repository: str, url: str) -> tuple[list[str], str | None]:
        response = await self.transport.request("GET", url)
        async with closing(response):
            if response.status_code != 200:
                await fail(self.transport, response, repository=repository)
            body = await self.transport.read_capped(response, MAX_TAGS_PAGE_BYTES, what="tag list")
            link = response.headers.get("Link")
        where = Where(self.host, shown(url), f"{self.host}/{repository}")
        return documents.tag_list(body, where, repository), link

    def _next_page(self, url: str, link: str | None) -> str | None:
        if not link:
            return None
        for match in _LINK_RE.finditer(link):
            rels = _REL_NEXT_RE.findall(match.group(2))
            if any("next" in rel.split() for rel in rels):
                return self.transport.same_origin(httpx.URL(url).join(match.group(1)),
                                                  "pagination Link")
        return None

    async def _require_repository(self, repository: str) -> None:
        response = await self.transport.request("GET", f"{self._base}/v2/{repository}/tags/list",
                                       params={"n": "1"})
        async with closing(response):
            if response.status_code == 404:
                await fail(self.transport, response, repository=repository)

    async def _fail_manifest_unknown(self, response: httpx.Response, repository: str,
                                     reference: str) -> NoReturn:
        body = await read_error_body(response)
        if "NAME_UNKNOWN" not in error_codes(body):
            # The CNCF registry says MANIFEST_UNKNOWN even when the whole repository is
            # missing; ask once more so the message points at the right fix.
            await self._require_repository(repository)
        await fail(self.transport, response, repository=repository, reference=reference, body=body)

    async def _load_created(self, repository: str, digest: str,
                            platform: str | None) -> datetime | None:
        manifest = await self.get_manifest(repository, digest)
        if manifest.is_index:
            child = platform_child(manifest, platform, f"{self.host}/{repository}@{digest}",
                                   self.host)
            manifest = await self.get_manifest(repository, child)
        config = (json_object(manifest.body) or {}).get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str):
            return None  # not an image (an artifact or a schema-1 manifest): no creation time
        check_digest(config_digest, what=f"config digest in manifest {manifest.digest}")
        return _parse_created((await self.get_blob_json(repository, config_digest)).get(
            "created"))

    def _reported_digest(self, digest: str, url: str) -> str:
        if _DIGEST_RE.fullmatch(digest):
            return digest  # the usual answer: no message to prepare
        try:
            return check_digest(digest, what=f"Docker-Content-Digest from {shown(url)}")
        except InvalidReferenceError as exc:
            raise RegistryError(f"Registry {self.host} answered {shown(url)} with a malformed "
                                f"digest header: {exc}", registry=self.host, url=shown(url)
                                ) from exc


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``gather`` without its task per awaitable when there is just one (one repository's
    few tags are one thread job: the common case of a poll)."""
    pending = list(awaitables)
    if len(pending) == 1:
        return [await pending[0]]
    return list(await asyncio.gather(*pending))


# -- module helpers (pure) -------------------------------------------------------------------


def _check_reference(reference: str) -> str:
    if isinstance(reference, str) and reference.startswith("sha256:"):
        return check_digest(reference)
    return check_tag(reference)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _parse_created(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # Go writes nanoseconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
