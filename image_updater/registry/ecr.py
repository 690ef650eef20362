"""Amazon ECR as a native registry provider, through the ECR API (boto3).

Why not just the OCI API with a token? ECR's ``DescribeImages`` lists every tag with its
digest and push time in pages of up to 1000 images, so one scan per repository and cycle
answers all apps and environments that share the repository, where the OCI API costs one
HEAD per tag (and ECR's per-account API quotas are low).

boto3 is imported only when an :class:`EcrRegistry` builds its client (in
:mod:`~image_updater.registry.ecr_session`): short-lived ``retag`` jobs for plain OCI
registries import this module (for :func:`parse_ecr_host`) but never pay for boto3.

Blocking boto3 calls run in worker threads (``asyncio.to_thread``), at most
``max_concurrency`` at a time and at most ``requests_per_second``. Each request is counted in
``registry_requests{registry, method=<ECR operation>, status}`` through botocore's event
hooks, so every page of a listing and every token fetch is counted; throttling counts as 429.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from image_updater.errors import (
    DigestMismatchError,
    ImmutableTagError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    TransientRegistryError,
)
from image_updater.observability.metrics import Metrics
from image_updater.registry.base import (
    MANIFEST_ACCEPT,
    Manifest,
    TagDigest,
    check_digest,
    check_tag,
    sha256_digest,
)
from image_updater.registry.ecr_errors import (
    THROTTLING_CODES,
    Target,
    error_code,
    is_aws_error,
    translate,
)
from image_updater.registry.ecr_host import EcrHost, parse_ecr_host
from image_updater.registry.ecr_session import EcrOptions, _location, _make_client
from image_updater.registry.ratelimit import RateLimiter

__all__ = ["EcrHost", "EcrRegistry", "parse_ecr_host"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# ECR's repository name grammar (lowercase path components), 2-256 characters.
_REPOSITORY_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
# Both answers mean "the tag already exists"; which one ECR (or moto) gives varies.
_TAG_EXISTS_CODES = frozenset({"ImageAlreadyExistsException", "ImageTagAlreadyExistsException"})
_STARTED = "image_updater_started"


@dataclass
class _Listing:
    """One repository's images as seen by one scan."""

    tags: dict[str, TagDigest] = field(default_factory=dict)
    pushed_at: dict[str, datetime | None] = field(default_factory=dict)  # by digest


class EcrRegistry:
    """The :class:`~image_updater.registry.base.Registry` protocol on top of the ECR API.

    Call :meth:`begin_cycle` at the start of every reconcile cycle: ``digests``,
    ``list_tags``, ``created`` and ``scan`` are answered from one ``DescribeImages`` listing
    per repository per cycle. ``head_manifest``, ``get_manifest`` and ``put_manifest`` always
    ask ECR.
    """

    one_listing_per_repository = True

    def __init__(self, host: str, *, options: EcrOptions | None = None,
                 metrics: Metrics | None = None, session: Any = None, client: Any = None,
                 timer: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """``session`` is a ``boto3.Session`` holding the source credentials (default: a new
        one on the default chain). ``client`` is a ready ECR client to use instead (then
        ``session``, ``role_arn`` and the endpoint options are not used). ``timer`` and
        ``sleep`` serve latency metrics and the rate cap."""
        self.host = host
        self.options = opts = options or EcrOptions()
        self._where = _location(host, opts)
        self._metrics = metrics
        self._timer = timer
        self._client = client if client is not None else _make_client(session, opts,
                                                                      self._where)
        self._install_hooks(self._client.meta.events)
        self._semaphore = asyncio.Semaphore(opts.max_concurrency)
        self._limiter = RateLimiter(requests_per_second=opts.requests_per_second, burst=1.0,
                                    clock=time.monotonic, sleep=sleep)
        self._scans: dict[str, _Listing] = {}
        self._scan_locks: dict[str, asyncio.Lock] = {}

    # -- the per-cycle scan ---------------------------------------------------------------

    def begin_cycle(self) -> None:
        """Forget the previous cycle's listings, so the next reads see ECR's current state."""
        self._scans.clear()

    async def scan(self, repository: str) -> dict[str, TagDigest]:
        """Every tag of ``repository`` with its digest and push time (``imagePushedAt``)."""
        return dict((await self._listing(repository)).tags)

    async def digests(self, repository: str, tags: Collection[str]) -> dict[str, str]:
        wanted = [check_tag(t) for t in tags]
        listing = await self._listing(repository)
        return {t: listing.tags[t].digest for t in wanted if t in listing.tags}

    async def list_tags(self, repository: str) -> list[str]:
        return sorted((await self._listing(repository)).tags)

    async def created(self, repository: str, digest: str) -> datetime | None:
        """When the image was pushed to ECR (``imagePushedAt``), not the config's ``created``:
        ECR reports the push time for free, the build time would cost a blob download."""
        check_digest(digest)
        return (await self._listing(repository)).pushed_at.get(digest)

    async def _listing(self, repository: str) -> _Listing:
        _check_repository(repository)
        # One lock per repository: 20 apps asking at once still cause one listing.
        lock = self._scan_locks.setdefault(repository, asyncio.Lock())
        async with lock:
            if repository not in self._scans:
                self._scans[repository] = await self._describe_all(repository)
            return self._scans[repository]

    async def _describe_all(self, repository: str) -> _Listing:
        target = self._target("DescribeImages", f"repository '{repository}'", repository)
        paginator = self._client.get_paginator("describe_images")
        # Pages are fetched one call at a time so each one waits for the semaphore and the
        # rate cap like any other request.
        pages = iter(paginator.paginate(**self._repo_args(repository)))
        listing = _Listing()
        while (page := await self._call(target, next, pages, None)) is not None:
            for detail in page.get("imageDetails") or []:
                _add_detail(listing, detail, repository)
        return listing

    # -- single images ----------------------------------------------------------------------

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str] | None:
        """``(digest, media_type)`` via ``DescribeImages`` with one image id.

        Not ``BatchGetImage``: DescribeImages transfers no manifest and is not an image pull,
        so ECR's pull-time statistics stay accurate. Not the cycle's cache either: retag
        compares against it, so it must be fresh.
        """
        _check_repository(repository)
        image_id = _image_id(reference)
        target = self._target("DescribeImages", _image_subject(repository, reference),
                              repository)
        detail = await self._call(target, self._describe_one, repository, image_id)
        if detail is None:
            return None
        digest = check_digest(detail.get("imageDigest", ""), what=f"digest of {reference!r}")
        media_type = detail.get("imageManifestMediaType")
        if not media_type:  # older images may lack it; the manifest itself says
            return digest, (await self.get_manifest(repository, digest)).media_type
        return digest, str(media_type)

    def _describe_one(self, repository: str, image_id: dict[str, str]) -> dict[str, Any] | None:
        try:
            response = self._client.describe_images(**self._repo_args(repository),
                                                    imageIds=[image_id])
        except self._client.exceptions.ImageNotFoundException:
            return None
        details = response.get("imageDetails") or []
        return details[0] if details else None

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        _check_repository(repository)
        image_id = _image_id(reference)
        subject = _image_subject(repository, reference)
        target = self._target("BatchGetImage", subject, repository)
        response = await self._call(
            target, partial(self._client.batch_get_image, **self._repo_args(repository),
                            imageIds=[image_id], acceptedMediaTypes=list(MANIFEST_ACCEPT)))
        images = response.get("images") or []
        if not images:
            raise self._failure_error(response.get("failures") or [], target)
        return self._manifest_of(images[0], reference, target)

    def _manifest_of(self, image: dict[str, Any], reference: str, t: Target) -> Manifest:
        body = str(image.get("imageManifest", "")).encode("utf-8")
        digest = check_digest(image.get("imageId", {}).get("imageDigest", ""),
                              what=f"digest ECR reported for {t.subject}")
        actual = sha256_digest(body)
        if actual != digest or (reference.startswith("sha256:") and reference != digest):
            raise DigestMismatchError(
                f"The manifest ECR returned for {t.subject} in registry {self.host} hashes to "
                f"{actual}, not {digest}; it was not used. Report this if it persists.",
                registry=self.host, url=t.resource_arn)
        media_type = image.get("imageManifestMediaType") or _media_type_in(body)
        if media_type not in MANIFEST_ACCEPT:
            raise RegistryError(
                f"ECR returned {t.subject} as {str(media_type)[:80]!r}, which image-updater "
                "does not handle; push it as an OCI or Docker v2 manifest or index.",
                registry=self.host, url=t.resource_arn)
        return Manifest(media_type=media_type, digest=digest, body=body)

    def _failure_error(self, failures: list[dict[str, Any]], t: Target) -> RegistryError:
        failure = failures[0] if failures else {}
        code = str(failure.get("failureCode", ""))
        if code in ("ImageNotFound", "ImageTagDoesNotMatchDigest", ""):
            return NotFoundError(
                f"{t.subject[:1].upper()}{t.subject[1:]} was not found in ECR registry "
                f"{self.host}; push it, or fix the tag or digest in the policy.",
                registry=self.host, url=t.resource_arn)
        reason = f"{code[:60]}: {str(failure.get('failureReason', ''))[:200]}"
        if code.startswith("Upstream") or code == "KmsError":
            return TransientRegistryError(
                f"ECR could not serve {t.subject} in registry {self.host} ({reason}); the next "
                "cycle will retry.", registry=self.host, url=t.resource_arn)
        return RegistryError(
            f"ECR refused to serve {t.subject} in registry {self.host} ({reason}); it will "
            "keep failing until the image or the request changes.",
            registry=self.host, url=t.resource_arn)

    async def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """``PutImage`` of ``manifest`` as ``tag``; the same digest under the tag is success."""
        _check_repository(repository)
        check_tag(tag)
        _check_outgoing(manifest)
        subject = f"image '{repository}:{tag}'"
        target = self._target("PutImage", subject, repository)
        try:
            digest = await self._call(target, self._put_image, repository, tag, manifest)
        finally:
            self._scans.pop(repository, None)  # this cycle must see the moved tag
        if digest is not None:
            return check_digest(digest, what=f"digest ECR reported for {subject}")
        return await self._confirm_existing(repository, tag, manifest, target)

    def _put_image(self, repository: str, tag: str, manifest: Manifest) -> str | None:
        try:
            response = self._client.put_image(
                **self._repo_args(repository), imageManifest=manifest.body.decode("utf-8"),
                imageManifestMediaType=manifest.media_type, imageTag=tag,
                imageDigest=manifest.digest)
        except Exception as exc:
            if error_code(exc) in _TAG_EXISTS_CODES:
                return None  # the caller checks where the tag points now
            raise
        return str(response["image"]["imageId"]["imageDigest"])

    async def _confirm_existing(self, repository: str, tag: str, manifest: Manifest,
                                t: Target) -> str:
        # ECR refuses both "same image, same tag again" and "tag is immutable"; only the
        # digest now behind the tag tells them apart.
        current = await self.head_manifest(repository, tag)
        if current is not None and current[0] == manifest.digest:
            return manifest.digest
        behind = current[0] if current else "no image"
        raise ImmutableTagError(
            f"ECR repository {t.resource_arn} refused to move tag '{tag}' to "
            f"{manifest.digest} because its tag immutability blocks moving existing tags (the "
            f"tag stays at {behind}). Set the repository's image tag mutability to MUTABLE, or "
            f"add an exclusion filter for '{tag}', or promote with a new, unique tag instead.",
            registry=self.host, url=t.resource_arn)

    # -- cosign signatures: not read through the ECR API (yet) ----------------------------

    async def find_manifest(self, repository: str, reference: str, *,
                            max_bytes: int = 0) -> Manifest | None:
        raise self._no_signatures(repository, reference)

    async def get_blob(self, repository: str, digest: str, max_bytes: int) -> bytes:
        raise self._no_signatures(repository, digest)

    async def referrers(self, repository: str, digest: str, *,
                        max_bytes: int = 0) -> Manifest | None:
        raise self._no_signatures(repository, digest)

    def _no_signatures(self, repository: str, reference: str) -> RegistryError:
        # moto cannot serve signature artefacts through the ECR API, so this path is not
        # built untested; signature gates on ECR images are refused instead.
        return RegistryError(
            f"Signature verification is not supported on ECR yet: the cosign signatures of "
            f"{self.host}/{repository} ({reference}) cannot be read. Remove 'verify' from the "
            "environments whose images are on ECR.", registry=self.host)

    async def aclose(self) -> None:
        self._client.close()

    # -- plumbing -------------------------------------------------------------------------

    def _repo_args(self, repository: str) -> dict[str, str]:
        args = {"repositoryName": repository}
        if self._where.account:
            args["registryId"] = self._where.account
        return args

    def _target(self, operation: str, subject: str, repository: str) -> Target:
        return Target(host=self.host, operation=operation, subject=subject,
                      resource_arn=self._where.repository_arn(repository),
                      max_attempts=self.options.max_attempts)

    async def _call(self, target: Target, fn: Callable[..., T], *args: Any) -> T:
        async with self._semaphore:
            await self._limiter.acquire()
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                if not is_aws_error(exc):
                    raise
                raise translate(exc, target) from exc

    def _install_hooks(self, events: Any) -> None:
        # Hooks see every HTTP call botocore makes: each page, each token fetch.
        events.register_first("before-call.ecr", self._before_call)
        events.register("after-call.ecr", self._after_call)
        events.register("after-call-error.ecr", self._after_call_error)

    def _before_call(self, context: dict[str, Any], **_: Any) -> None:
        context[_STARTED] = self._timer()

    def _after_call(self, http_response: Any, parsed: dict[str, Any], model: Any,
                    context: dict[str, Any], **_: Any) -> None:
        code = str(parsed.get("Error", {}).get("Code", "")) if parsed else ""
        status = "429" if code in THROTTLING_CODES else str(http_response.status_code)
        self._record(model.name, status, context)

    def _after_call_error(self, context: dict[str, Any], event_name: str = "",
                          **_: Any) -> None:
        self._record(event_name.rsplit(".", 1)[-1], "error", context)

    def _record(self, operation: str, status: str, context: dict[str, Any]) -> None:
        if self._metrics is None:
            return
        self._metrics.registry_requests.labels(self.host, operation, status).inc()
        started = context.get(_STARTED)
        if started is not None:
            self._metrics.registry_latency.labels(self.host, operation).observe(
                self._timer() - started)


def _check_repository(repository: str) -> str:
    if not (isinstance(repository, str) and 2 <= len(repository) <= 256
            and _REPOSITORY_RE.fullmatch(repository)):
        raise InvalidReferenceError(
            f"ECR repository name {repository!r:.90} is not valid; names are 2-256 lowercase "
            "characters, path components of [a-z0-9] separated by '.', '_', '-' or '/'.")
    return repository


def _image_id(reference: str) -> dict[str, str]:
    if isinstance(reference, str) and reference.startswith("sha256:"):
        return {"imageDigest": check_digest(reference)}
    return {"imageTag": check_tag(reference)}


def _image_subject(repository: str, reference: str) -> str:
    sep = "@" if reference.startswith("sha256:") else ":"
    return f"image '{repository}{sep}{reference}'"


def _check_outgoing(manifest: Manifest) -> None:
    check_digest(manifest.digest)
    if sha256_digest(manifest.body) != manifest.digest:
        raise DigestMismatchError(
            f"The manifest to push does not hash to its digest {manifest.digest}; nothing was "
            "pushed. Fetch it again with get_manifest.")
    if manifest.media_type not in MANIFEST_ACCEPT:
        raise InvalidReferenceError(
            f"Manifest {manifest.digest} has media type {manifest.media_type!r:.80}, which "
            "ECR promotion does not handle; use an OCI or Docker v2 manifest or index.")


def _media_type_in(body: bytes) -> str:
    try:
        value = json.loads(body).get("mediaType", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _add_detail(listing: _Listing, detail: dict[str, Any], repository: str) -> None:
    """Record one ``imageDetails`` entry; entries with malformed digests or tags are skipped,
    since registry data is untrusted and one bad entry must not hide the others."""
    try:
        digest = check_digest(detail.get("imageDigest", ""), what="digest")
    except InvalidReferenceError:
        log.warning("Skipping an image of ECR repository %s with a malformed digest.",
                    repository)
        return
    pushed = detail.get("imagePushedAt")
    pushed_at = pushed if isinstance(pushed, datetime) else None
    listing.pushed_at[digest] = pushed_at
    for tag in detail.get("imageTags") or []:
        try:
            check_tag(tag)
        except InvalidReferenceError:
            log.warning("Skipping a malformed tag in ECR repository %s.", repository)
            continue
        listing.tags[tag] = TagDigest(tag=tag, digest=digest, created=pushed_at)
