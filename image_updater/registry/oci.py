"""The OCI distribution API client: one :class:`OciRegistry` per registry host.

Every request goes through the same short path: rate limit → auth flow (``RegistryAuth``)
→ one send, wrapped in a retry loop that retries connection errors, timeouts, 5xx and 429
with exponential backoff and full jitter, honouring ``Retry-After``. What cannot succeed
by retrying becomes one of our errors at once (``errors.py``), with the registry's OCI
``errors[]`` quoted through ``truncate``.

Everything read from a registry is untrusted: bodies are size-capped, digests are
recomputed and compared, tags are validated, pagination may not leave the host.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import certifi
import httpx

from image_updater.errors import (
    ConfigError,
    DigestMismatchError,
    ImmutableTagError,
    InvalidReferenceError,
    NotFoundError,
    RegistryAuthError,
    RegistryError,
    TransientRegistryError,
    truncate,
)
from image_updater.registry.auth import (
    SCOPES_EXTENSION,
    RegistryAuth,
    WallClock,
    repository_scope,
)
from image_updater.registry.base import (
    MANIFEST_ACCEPT,
    Manifest,
    check_digest,
    check_tag,
    platform_child,
    sha256_digest,
)
from image_updater.registry.options import RegistryOptions
from image_updater.registry.ratelimit import MonotonicClock, RateLimiter, Sleep
from image_updater.registry.reference import check_repository

if TYPE_CHECKING:  # prometheus_client is imported only by processes that export metrics
    from image_updater.observability.metrics import Metrics

log = logging.getLogger(__name__)

ACCEPT_MANIFESTS = ", ".join(MANIFEST_ACCEPT)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024     # the distribution registry's own manifest limit
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_TAG_PAGES = 1000
CREATED_CACHE_SIZE = 4096
_NON_RETRYABLE_5XX = frozenset({501, 505})  # "not implemented" does not get better later
_LINK_RE = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL_NEXT_RE = re.compile(r';\s*rel\s*=\s*"?([^";]*)"?')

OnRequest = Callable[[str, str], None]


class OciRegistry:
    """A registry speaking the OCI distribution API; implements ``base.Registry``.

    ``sleep``, ``clock`` (monotonic, for latency and rate limits), ``wall_clock`` (for
    ``Retry-After`` dates and token ``issued_at``) and ``jitter`` are parameters so tests
    control time and randomness. ``on_request(method, url)`` sees every HTTP request,
    token fetches included.
    """

    def __init__(self, options: RegistryOptions, *, metrics: Metrics | None = None,
                 on_request: OnRequest | None = None, sleep: Sleep = asyncio.sleep,
                 clock: MonotonicClock = time.monotonic, wall_clock: WallClock = time.time,
                 jitter: Callable[[], float] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.host = options.host
        self._options = options
        self._metrics = metrics
        self._on_request = on_request
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._jitter = jitter if jitter is not None else random.Random().random
        self._base = options.base_url
        self._origin = httpx.URL(self._base)
        self._limiter = RateLimiter(max_concurrency=options.max_concurrency,
                                    requests_per_second=options.requests_per_second,
                                    clock=clock, sleep=sleep)
        self._created: dict[tuple[str, str | None], datetime | None] = {}
        self._client = httpx.AsyncClient(
            auth=RegistryAuth(registry=options.host, credentials=options.credentials,
                              clock=wall_clock),
            verify=_tls_verify(options), http1=True, http2=False,
            timeout=httpx.Timeout(options.timeout), follow_redirects=True,
            limits=httpx.Limits(max_connections=options.max_concurrency,
                                max_keepalive_connections=options.max_concurrency),
            event_hooks={"request": [self._request_hook]}, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OciRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the Registry protocol -----------------------------------------------------------

    async def ping(self) -> None:
        """Check that ``/v2/`` answers and the credentials are accepted."""
        response = await self._request("GET", f"{self._base}/v2/")
        async with _closing(response):
            if response.status_code != 200:
                await self._fail(response, repository="")

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
                    f"{_shown(next_url)}; the tag list of {repository} cannot be read.",
                    registry=self.host, url=_shown(next_url))
            seen.add(next_url)
            url = next_url
        raise RegistryError(
            f"The tag list of {repository} on {self.host} has more than {MAX_TAG_PAGES} pages; "
            "refusing to read further.", registry=self.host, url=_shown(url))

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        check_repository(repository)
        _check_reference(reference)
        url = self._manifest_url(repository, reference)
        response = await self._request("HEAD", url, headers={"Accept": ACCEPT_MANIFESTS})
        async with _closing(response):
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                await self._fail(response, repository=repository, reference=reference)
            digest = response.headers.get("Docker-Content-Digest")
            media_type = _media_type(response.headers.get("Content-Type", ""))
        if not digest:
            # Some registries omit the digest on HEAD; the body tells it for certain.
            manifest = await self.get_manifest(repository, reference)
            return manifest.digest, manifest.media_type
        digest = self._reported_digest(digest, url)
        if reference.startswith("sha256:") and digest != reference:
            raise self._mismatch(url, f"reports digest {digest} for manifest {reference}")
        return digest, media_type

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        check_repository(repository)
        _check_reference(reference)
        url = self._manifest_url(repository, reference)
        response = await self._request("GET", url, headers={"Accept": ACCEPT_MANIFESTS})
        async with _closing(response):
            if response.status_code == 404:
                await self._fail_manifest_unknown(response, repository, reference)
            if response.status_code != 200:
                await self._fail(response, repository=repository, reference=reference)
            body = await self._read_capped(response, MAX_MANIFEST_BYTES, what="manifest")
            reported = response.headers.get("Docker-Content-Digest")
            content_type = _media_type(response.headers.get("Content-Type", ""))
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise self._mismatch(url, f"served a manifest hashing to {digest}, not {reference}")
        if reported and reported.startswith("sha256:") and reported != digest:
            raise self._mismatch(url, f"reports digest {truncate(reported, 80)} for a manifest "
                                      f"hashing to {digest}")
        return Manifest(media_type=_manifest_media_type(content_type, body), digest=digest,
                        body=body)

    async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Store ``manifest`` under ``tag``; ``tag`` may also be the manifest's own digest
        (an index's children are stored by digest, untagged)."""
        check_repository(repository)
        if tag != manifest.digest:
            check_tag(tag)
        url = self._manifest_url(repository, tag)
        if sha256_digest(manifest.body) != manifest.digest:
            raise self._mismatch(url, f"would receive a manifest whose body does not hash to "
                                      f"{manifest.digest}; refusing to upload it")
        response = await self._request(
            "PUT", url, content=manifest.body, headers={"Content-Type": manifest.media_type},
            scopes=(repository_scope(repository, ("pull", "push")),))
        async with _closing(response):
            if response.status_code not in (200, 201):
                await self._fail_put_manifest(response, repository, tag)
            reported = response.headers.get("Docker-Content-Digest")
        if reported and reported != manifest.digest:
            raise self._mismatch(url, f"stored tag {tag} as {truncate(reported, 80)}, not "
                                      f"{manifest.digest}")
        return manifest.digest

    async def digests(self, repository: str, tags: Collection[str]) -> dict[str, str]:
        """One HEAD per tag, concurrently (bounded by ``max_concurrency``)."""
        check_repository(repository)
        wanted = [check_tag(t) for t in dict.fromkeys(tags)]
        # return_exceptions: every HEAD finishes before we raise, so no task is left behind.
        results = await asyncio.gather(*(self.head_manifest(repository, t) for t in wanted),
                                       return_exceptions=True)
        found: dict[str, str] = {}
        for tag, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                found[tag] = result[0]
        if wanted and not found:
            # HEAD answers carry no body: tell a missing repository from missing tags.
            await self._require_repository(repository)
        return found

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
        response = await self._request("HEAD", self._blob_url(repository, digest))
        async with _closing(response):
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            await self._fail(response, repository=repository, reference=digest)

    async def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository: True when it did."""
        check_repository(repository)
        check_repository(from_repository)
        check_digest(digest)
        url = f"{self._base}/v2/{repository}/blobs/uploads/"
        response = await self._request(
            "POST", url, params={"mount": digest, "from": from_repository}, content=b"",
            scopes=(repository_scope(repository, ("pull", "push")),
                    repository_scope(from_repository, ("pull",))))
        async with _closing(response):
            if response.status_code == 201:
                return True
            if response.status_code != 202:
                await self._fail(response, repository=repository, reference=digest)
            location = self._upload_location(response)
        # 202 means "declined, here is an ordinary upload instead": we do not want it.
        await self._cancel_upload(repository, location)
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
        retries = self._options.max_retries
        for attempt in range(retries + 1):
            try:
                await self._copy_blob_once(src, src_repository, dst_repository, digest, size)
                return
            except TransientRegistryError as exc:
                if attempt == retries:
                    raise
                delay = self._backoff(attempt)
                log.warning("copying blob %s to %s/%s failed (%s); attempt %d/%d, retrying in "
                            "%.1f s", digest, self.host, dst_repository, exc, attempt + 1,
                            retries + 1, delay)
                await self._sleep(delay)

    async def get_blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        """A small JSON blob (an image config), verified against its digest."""
        response = await self._open_blob(repository, digest)
        url = str(response.request.url)
        async with _closing(response):
            body = await self._read_capped(response, MAX_CONFIG_BYTES, what="config blob")
        if sha256_digest(body) != digest:
            raise self._mismatch(url, f"served blob {digest} with content hashing to "
                                      f"{sha256_digest(body)}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"Blob {digest} in {self.host}/{repository} is not JSON; it is "
                                "not an image config.", registry=self.host, url=_shown(url)
                                ) from exc
        if not isinstance(data, dict):
            raise RegistryError(f"Blob {digest} in {self.host}/{repository} is not a JSON "
                                "object; it is not an image config.", registry=self.host,
                                url=_shown(url))
        return data

    # -- request machinery -----------------------------------------------------------------

    async def _request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                       content: bytes | AsyncIterator[bytes] | None = None,
                       params: Mapping[str, str] | None = None,
                       scopes: tuple[str, ...] | None = None,
                       retries: int | None = None) -> httpx.Response:
        """Send with retries; the response is streamed: the caller reads and closes it."""
        extensions = {SCOPES_EXTENSION: scopes} if scopes else None
        if params:
            # httpx would replace an existing query (an upload's _state), so merge by hand.
            url = str(httpx.URL(url).copy_merge_params(params))
        request = self._client.build_request(method, url, headers=headers, content=content,
                                             extensions=extensions)
        retries = self._options.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                response = await self._send_once(request)
            except (httpx.TransportError, TransientRegistryError) as exc:
                if _certificate_rejected(exc):
                    raise self._untrusted(request, exc) from exc
                if _not_tls(exc):
                    raise self._plain_http(request) from exc
                reason = _transport_reason(exc)
                if attempt == retries:
                    raise self._unavailable(request, reason, attempt + 1) from exc
                delay = self._backoff(attempt)
            else:
                if not _retryable(response.status_code):
                    return response
                await response.aclose()
                reason = f"HTTP {response.status_code}"
                if attempt == retries:
                    raise self._unavailable(request, reason, attempt + 1)
                delay = self._retry_after(response) or self._backoff(attempt)
            log.info("%s %s failed (%s); attempt %d/%d, retrying in %.2f s", method,
                     _shown(str(request.url)), reason, attempt + 1, retries + 1, delay)
            await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _send_once(self, request: httpx.Request) -> httpx.Response:
        started = self._clock()
        status = "error"
        try:
            async with self._limiter.slot():
                response = await self._client.send(request, stream=True)
            status = str(response.status_code)
            return response
        except httpx.TransportError:
            raise
        except httpx.HTTPError as exc:
            # Redirect loops, bad URLs: no retry fixes these.
            raise RegistryError(
                f"{request.method} {_shown(str(request.url))} on registry {self.host} failed: "
                f"{type(exc).__name__}: {truncate(str(exc), 200)}.", registry=self.host,
                url=_shown(str(request.url))) from exc
        finally:
            self._observe(request.method, status, started)

    async def _request_hook(self, request: httpx.Request) -> None:
        if self._on_request is not None:
            self._on_request(request.method, str(request.url))

    def _observe(self, method: str, status: str, started: float) -> None:
        if self._metrics is None:
            return
        self._metrics.registry_requests.labels(registry=self.host, method=method,
                                               status=status).inc()
        self._metrics.registry_latency.labels(registry=self.host, method=method).observe(
            max(0.0, self._clock() - started))

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniformly random up to the exponential ceiling."""
        ceiling = min(self._options.backoff_max, self._options.backoff_base * 2 ** attempt)
        return self._jitter() * ceiling

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - self._wall_clock()
        return min(max(seconds, 0.0), self._options.retry_after_max)

    # -- helpers for the operations above --------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        return f"{self._base}/v2/{repository}/manifests/{reference}"

    def _blob_url(self, repository: str, digest: str) -> str:
        return f"{self._base}/v2/{repository}/blobs/{digest}"

    async def _tags_page(self, repository: str, url: str) -> tuple[list[str], str | None]:
        response = await self._request("GET", url)
        async with _closing(response):
            if response.status_code != 200:
                await self._fail(response, repository=repository)
            body = await self._read_capped(response, MAX_TAGS_PAGE_BYTES, what="tag list")
            link = response.headers.get("Link")
        try:
            raw = json.loads(body).get("tags") or []
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise RegistryError(
                f"Registry {self.host} answered the tag list of {repository} with something "
                f"that is not a JSON tag list: {truncate(body)!r}.", registry=self.host,
                url=_shown(url)) from exc
        return [t for t in raw if _valid_tag(t, repository, self.host)], link

    def _next_page(self, url: str, link: str | None) -> str | None:
        if not link:
            return None
        for match in _LINK_RE.finditer(link):
            rels = _REL_NEXT_RE.findall(match.group(2))
            if any("next" in rel.split() for rel in rels):
                return self._same_origin(httpx.URL(url).join(match.group(1)), "pagination Link")
        return None

    def _same_origin(self, target: httpx.URL, what: str) -> str:
        """Refuse URLs on another host: our credentials must not follow them there."""
        if (target.scheme, target.host, target.port) != (
                self._origin.scheme, self._origin.host, self._origin.port):
            raise RegistryError(
                f"Registry {self.host} sent a {what} to another host ({_shown(str(target))}); "
                "refusing to follow it. Check the registry's external URL settings.",
                registry=self.host, url=_shown(str(target)))
        return str(target)

    def _upload_location(self, response: httpx.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                f"Registry {self.host} started an upload without a Location header at "
                f"{_shown(str(response.request.url))}; it does not follow the OCI "
                "distribution spec.", registry=self.host, url=_shown(str(response.request.url)))
        return self._same_origin(response.request.url.join(location), "upload Location")

    async def _cancel_upload(self, repository: str, location: str) -> None:
        try:
            response = await self._request("DELETE", location, retries=0)
        except RegistryError as exc:
            # The registry purges abandoned uploads itself; this only tidies up early.
            log.info("cancelling an unused upload on %s failed: %s", self.host, exc)
            return
        await response.aclose()

    async def _open_blob(self, repository: str, digest: str, *,
                         retries: int | None = None) -> httpx.Response:
        check_repository(repository)
        check_digest(digest)
        # identity: the bytes must hash to the digest exactly as stored.
        response = await self._request("GET", self._blob_url(repository, digest),
                                       headers={"Accept-Encoding": "identity"}, retries=retries)
        if response.status_code != 200:
            async with _closing(response):
                await self._fail(response, repository=repository, reference=digest)
        return response

    async def _copy_blob_once(self, src: OciRegistry, src_repository: str, dst_repository: str,
                              digest: str, size: int) -> None:
        push = (repository_scope(dst_repository, ("pull", "push")),)
        started = await self._request("POST", f"{self._base}/v2/{dst_repository}/blobs/uploads/",
                                      content=b"", scopes=push, retries=0)
        async with _closing(started):
            if started.status_code != 202:
                await self._fail(started, repository=dst_repository, reference=digest)
            location = self._upload_location(started)
        source = await src._open_blob(src_repository, digest, retries=0)
        async with _closing(source):
            chunks = _verified_chunks(source, digest, size, src)
            put = await self._request(
                "PUT", location, params={"digest": digest}, content=chunks, scopes=push,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)}, retries=0)
        async with _closing(put):
            if put.status_code not in (201, 204):
                await self._fail(put, repository=dst_repository, reference=digest)

    async def _require_repository(self, repository: str) -> None:
        response = await self._request("GET", f"{self._base}/v2/{repository}/tags/list",
                                       params={"n": "1"})
        async with _closing(response):
            if response.status_code == 404:
                await self._fail(response, repository=repository)

    async def _fail_manifest_unknown(self, response: httpx.Response, repository: str,
                                     reference: str) -> NoReturn:
        body = await _read_error_body(response)
        if "NAME_UNKNOWN" not in _error_codes(body):
            # The CNCF registry says MANIFEST_UNKNOWN even when the whole repository is
            # missing; ask once more so the message points at the right fix.
            await self._require_repository(repository)
        await self._fail(response, repository=repository, reference=reference, body=body)

    async def _load_created(self, repository: str, digest: str,
                            platform: str | None) -> datetime | None:
        manifest = await self.get_manifest(repository, digest)
        if manifest.is_index:
            child = platform_child(manifest, platform, f"{self.host}/{repository}@{digest}",
                                   self.host)
            manifest = await self.get_manifest(repository, child)
        config = _json_object(manifest.body).get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str):
            return None  # not an image (an artifact or a schema-1 manifest): no creation time
        check_digest(config_digest, what=f"config digest in manifest {manifest.digest}")
        return _parse_created((await self.get_blob_json(repository, config_digest)).get(
            "created"))

    async def _read_capped(self, response: httpx.Response, limit: int, *, what: str) -> bytes:
        length = response.headers.get("Content-Length", "")
        body = bytearray()
        if not (length.isdigit() and int(length) > limit):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    break
        if len(body) > limit or (length.isdigit() and int(length) > limit):
            url = _shown(str(response.request.url))
            raise RegistryError(
                f"Registry {self.host} sent a {what} larger than {limit} bytes at {url}; "
                "refusing to read it.", registry=self.host, url=url)
        return bytes(body)

    def _reported_digest(self, digest: str, url: str) -> str:
        try:
            return check_digest(digest, what=f"Docker-Content-Digest from {_shown(url)}")
        except InvalidReferenceError as exc:
            raise RegistryError(f"Registry {self.host} answered {_shown(url)} with a malformed "
                                f"digest header: {exc}", registry=self.host, url=_shown(url)
                                ) from exc

    def _mismatch(self, url: str, what: str) -> DigestMismatchError:
        return DigestMismatchError(
            f"Registry {self.host} {what} (at {_shown(url)}); the content is corrupt or was "
            "tampered with, so it is not used.", registry=self.host, url=_shown(url))

    def _unavailable(self, request: httpx.Request, reason: str,
                     attempts: int) -> TransientRegistryError:
        url = _shown(str(request.url))
        return TransientRegistryError(
            f"Registry {self.host} did not answer {request.method} {url} successfully after "
            f"{attempts} attempt(s) ({reason}); it will be retried next cycle.",
            registry=self.host, url=url)

    def _plain_http(self, request: httpx.Request) -> RegistryError:
        url = _shown(str(request.url))
        return RegistryError(
            f"Registry {self.host} did not answer the TLS handshake at {url} with TLS: it "
            "probably serves plain HTTP. If that is intended (a local or test registry), allow "
            f"it in the settings file: registries: [{{host: '{self.host}', insecure: true}}]. "
            "Retrying cannot help, so this is not retried.", registry=self.host, url=url)

    def _untrusted(self, request: httpx.Request, exc: BaseException) -> RegistryError:
        url = _shown(str(request.url))
        bundle = self._options.ca_file or "certifi's public roots"
        return RegistryError(
            f"The TLS certificate of registry {self.host} could not be verified against "
            f"{bundle} ({truncate(str(exc), 160)}) at {url}; set ca_file to the CA bundle "
            "that signed it. Retrying cannot help, so this is not retried.",
            registry=self.host, url=url)

    async def _fail_put_manifest(self, response: httpx.Response, repository: str,
                                 tag: str) -> NoReturn:
        body = await _read_error_body(response)
        if response.status_code in (400, 403, 409, 412) and b"immutable" in body.lower():
            url = _shown(str(response.request.url))
            raise ImmutableTagError(
                f"Registry {self.host} refuses to move tag {tag} of {repository} because the "
                f"tag is immutable ({truncate(_error_detail(body))}); promote to a new tag or "
                "make the tag mutable.", registry=self.host, url=url)
        await self._fail(response, repository=repository, reference=tag, body=body)

    async def _fail(self, response: httpx.Response, *, repository: str,
                    reference: str | None = None, body: bytes | None = None) -> NoReturn:
        """Turn a non-success answer into the error that says what to do about it."""
        if body is None:
            body = await _read_error_body(response)
        status = response.status_code
        url = _shown(str(response.request.url))
        detail = truncate(_error_detail(body))
        said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        target = f"repository {repository}" if repository else "the registry API"
        if status in (401, 403):
            verb = "push to" if response.request.method not in ("GET", "HEAD") else "pull from"
            raise RegistryAuthError(
                f"Registry {self.host} refused access to {target} ({said}) "
                f"using {self._options.credentials.describe()}; check that these credentials "
                f"are valid and allowed to {verb} it.", registry=self.host, url=url)
        if status == 404:
            raise NotFoundError(self._not_found(repository, reference, _error_codes(body)),
                                registry=self.host, url=url)
        raise RegistryError(
            f"Registry {self.host} answered {response.request.method} {url} with {said}.",
            registry=self.host, url=url)

    def _not_found(self, repository: str, reference: str | None, codes: set[str]) -> str:
        where = f"{self.host}/{repository}"
        if "NAME_UNKNOWN" in codes or (reference is None and repository):
            return (f"Repository {repository} does not exist on {self.host}; check the image "
                    "name in the policy, or push the image first.")
        if reference is None:
            return f"Registry {self.host} does not serve the OCI distribution API at /v2/."
        if "BLOB_UNKNOWN" in codes:
            return f"Blob {reference} not found in {where}; the image is incomplete there."
        if reference.startswith("sha256:"):
            return f"Manifest {reference} not found in {where}; it may have been deleted."
        return f"Tag {reference} not found in {where}; push it or fix the policy's tag."


# -- module helpers (pure) -------------------------------------------------------------------


#: bodies up to this size are drained before closing, so the connection is reused
_DRAIN_LIMIT = 64 * 1024


class _closing:
    """``async with _closing(response)``: close a streamed response on every path.

    Closing a response whose body was not read makes httpcore drop the connection, so
    every HEAD would cost a new TCP (and TLS) handshake. Small bodies (HEADs, error
    documents) are drained first so the connection goes back to the pool.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aenter__(self) -> httpx.Response:
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        response = self._response
        try:
            if not response.is_stream_consumed and _small_body(response):
                await response.aread()
        except httpx.HTTPError:
            pass  # the connection is dropped instead; nothing else depends on it
        finally:
            await response.aclose()


def _small_body(response: httpx.Response) -> bool:
    if response.request.method == "HEAD" or response.status_code in (204, 304):
        return True
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= _DRAIN_LIMIT


def _tls_verify(options: RegistryOptions) -> ssl.SSLContext | bool:
    if options.insecure_skip_verify or options.insecure:
        return False  # plain HTTP: no certificate to verify, and loading roots costs ~15 ms
    cafile = str(options.ca_file) if options.ca_file is not None else certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"registry {options.host}: ca_file {cafile} cannot be loaded as a PEM certificate "
            f"bundle ({type(exc).__name__}); fix the path or the file."
        ) from exc


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status not in _NON_RETRYABLE_5XX)


def _certificate_rejected(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # the ssl error sits a few causes down (httpx ← httpcore ← ssl)
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _not_tls(exc: BaseException) -> bool:
    """True when the server's answer to our TLS hello was not TLS (a plain HTTP server)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and getattr(seen, "reason", "") in (
                "WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                "HTTP_REQUEST"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__}"
    if isinstance(exc, TransientRegistryError):
        return str(exc)
    return f"{type(exc).__name__}: {truncate(str(exc), 120)}"


def _shown(url: str) -> str:
    """A URL fit for messages: without its query (upload state, scopes) or user info."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def _check_reference(reference: str) -> str:
    if isinstance(reference, str) and reference.startswith("sha256:"):
        return check_digest(reference)
    return check_tag(reference)


def _valid_tag(tag: object, repository: str, host: str) -> bool:
    if isinstance(tag, str):
        try:
            check_tag(tag)
            return True
        except InvalidReferenceError:
            pass
    log.warning("ignoring invalid tag %s in %s/%s", repr(tag)[:90], host, repository)
    return False


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _manifest_media_type(content_type: str, body: bytes) -> str:
    if content_type in MANIFEST_ACCEPT:
        return content_type
    # Some registries answer "application/json"; the manifest names its own type then.
    try:
        declared = json.loads(body).get("mediaType")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) and declared else content_type


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    return data if isinstance(data, dict) else {}


def _parse_created(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # Go writes nanoseconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def _read_error_body(response: httpx.Response) -> bytes:
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY_BYTES:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the status alone still says what went wrong
    return bytes(body[:MAX_ERROR_BODY_BYTES])


def _error_codes(body: bytes) -> set[str]:
    errors = _json_object(body).get("errors")
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")}


def _error_detail(body: bytes) -> str:
    """``CODE: message`` for each OCI error, or the raw body when it is not one."""
    errors = _json_object(body).get("errors")
    if isinstance(errors, list) and errors:
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip()
                 for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
    return body.decode("utf-8", errors="replace")


async def _verified_chunks(source: httpx.Response, digest: str, size: int,
                           src: OciRegistry) -> AsyncIterator[bytes]:
    """Pass the source's raw bytes through while hashing them; a wrong size or digest raises
    before the upload is finished, so the destination never commits the blob."""
    hasher = hashlib.sha256()
    count = 0
    url = str(source.request.url)
    async for chunk in source.aiter_raw():
        count += len(chunk)
        if count > size:
            raise src._mismatch(url, f"sent more than the {size} bytes declared for {digest}")
        hasher.update(chunk)
        yield chunk
    actual = "sha256:" + hasher.hexdigest()
    if count != size or actual != digest:
        raise src._mismatch(url, f"sent {count} bytes hashing to {actual} for blob {digest} "
                                 f"({size} bytes expected)")
