"""Trust what we write: a digest is derived again from manifest bytes before it reaches git.

The registry answered a HEAD (or a listing) with a digest for a tag; that header only tells
that the tag moved. Before the digest is committed or proposed, the manifest the tag names is
read from the configured registry host and its bytes are hashed (through the platform's child
of an index where the policy pins one, itself read by digest and hashed). The digest written
must be exactly that hash: a caching proxy or a redirect that lied in the header is caught,
whether its digest exists nowhere or names another image.

Each (registry, repository, tag, platform, digest) is verified once per process: a steady tag
whose digest git already holds is never verified, and a pending pull request is not verified
every cycle. The tag is part of the key, so a digest verified through one tag is not taken on
trust when another tag's header claims it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from image_updater.changes import Change, Verification, VerificationOutcome
from image_updater.errors import DigestMismatchError, ImageUpdaterError, as_image_updater_error
from image_updater.model import App, Environment
from image_updater.registry.base import Registry, platform_child
from image_updater.registry.reference import parse_reference

#: (registry host, repository, tag, platform or "", digest)
DigestKey = tuple[str, str, str, str, str]


class VerifiedDigests:
    """The digests verified so far in this process; shared by the worker threads."""

    def __init__(self) -> None:
        self._seen: set[DigestKey] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: DigestKey) -> None:
        with self._lock:
            self._seen.add(key)


class Verifier:
    """One cycle's verifications, called from the worker threads of the deploy repositories.

    The registry clients belong to the event loop, so each fetch runs there and the worker
    thread waits for it. A digest that failed this cycle is not fetched again by a re-plan
    after a push race: the same error is raised again. :meth:`prefetch` fetches many at
    once, concurrently, before a plan checks them one by one (a cycle moving 1,000
    environments would otherwise wait for 1,000 fetches in a row).
    """

    def __init__(self, registry_for: Callable[[str], Registry], verified: VerifiedDigests,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._registry_for = registry_for
        self._verified = verified
        self._loop = loop
        self._failed: dict[DigestKey, ImageUpdaterError] = {}
        #: fetched by prefetch, not yet checked: None when the digest held, else the error
        self._fetched: dict[DigestKey, Exception | None] = {}
        self._lock = threading.Lock()

    def prefetch(self, wanted: list[tuple[App, Environment, str, str]]) -> None:
        """Fetch, concurrently, the verifications ``check`` is about to need: ``(app, env,
        tag, digest)`` each. Outcomes are recorded by ``check``, as if it had fetched them."""
        jobs: dict[DigestKey, tuple[Registry, str]] = {}
        for app, env, tag, digest in wanted:
            ref = parse_reference(app.image)
            key = (ref.registry, ref.repository, tag, env.strategy.platform or "", digest)
            with self._lock:
                known = key in self._failed or key in self._fetched
            if known or key in self._verified or key in jobs:
                continue
            try:
                jobs[key] = (self._registry_for(ref.registry), ref.repository)
            except Exception:  # check() meets the same fault and records it
                continue
        if not jobs:
            return
        outcomes = asyncio.run_coroutine_threadsafe(_gather(jobs), self._loop).result()
        with self._lock:
            self._fetched.update(outcomes)

    def check(self, app: App, env: Environment, change: Change,
              record: list[Verification]) -> None:
        """Raise when ``change``'s digest is not what its tag's manifest bytes hash to."""
        ref = parse_reference(app.image)
        tag, platform = change.tag or "", env.strategy.platform or ""
        key = (ref.registry, ref.repository, tag, platform, change.digest)
        with self._lock:
            failed = self._failed.get(key)
        if failed is not None:
            raise failed
        if key in self._verified:
            return
        outcome: VerificationOutcome = "ok"
        with self._lock:
            fetched = self._fetched.pop(key, _NOT_FETCHED)
        try:
            if isinstance(fetched, Exception):
                raise fetched
            if fetched is _NOT_FETCHED:
                registry = self._registry_for(ref.registry)
                asyncio.run_coroutine_threadsafe(
                    verify_digest(registry, ref.repository, tag, platform, change.digest),
                    self._loop).result()
        except Exception as exc:
            outcome = "mismatch" if isinstance(exc, DigestMismatchError) else "failed"
            error = as_image_updater_error(exc, f"verifying {ref.registry}/{ref.repository}:"
                                                f"{tag} ({change.digest})")
            with self._lock:
                self._failed[key] = error
            if error is exc:
                raise
            raise error from exc
        finally:
            record.append(Verification(registry=ref.registry, repository=ref.repository,
                                       digest=change.digest, result=outcome))
        self._verified.add(key)


_NOT_FETCHED = object()


async def _gather(jobs: dict[DigestKey, tuple[Registry, str]]
                  ) -> dict[DigestKey, Exception | None]:
    """Every verification at once (the registry client caps its own concurrency)."""
    results = await asyncio.gather(
        *(verify_digest(registry, repository, tag, platform, digest)
          for (_, _, tag, platform, digest), (registry, repository) in jobs.items()),
        return_exceptions=True)
    outcomes: dict[DigestKey, Exception | None] = {}
    for key, result in zip(jobs, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancellation and the like are not a verdict on the digest
        outcomes[key] = result
    return outcomes


async def verify_digest(registry: Registry, repository: str, tag: str, platform: str,
                        claimed: str) -> None:
    """Derive the digest ``tag`` names from manifest bytes and compare it with ``claimed``.

    ``get_manifest`` hashes the body it reads (and refuses a body that disagrees with its own
    digest header), so the derived digest is a fact about bytes, not about headers. Without a
    tag (a digest pinned by hand) the manifest is read by ``claimed`` itself.
    """
    where = f"{registry.host}/{repository}"
    manifest = await registry.get_manifest(repository, tag or claimed)
    derived = manifest.digest
    if platform and manifest.is_index:  # a plain manifest is its own platform's image
        child = platform_child(manifest, platform, f"{where}:{tag}", registry.host)
        derived = (await registry.get_manifest(repository, child)).digest
    if derived != claimed:
        shown = f"{where}:{tag}" + (f" ({platform})" if platform else "")
        raise DigestMismatchError(
            f"registry {registry.host} reported {claimed} for {shown}, but the manifest it "
            f"serves hashes to {derived}: a wrong Docker-Content-Digest from the registry or "
            "a proxy or redirect in front of it, or the tag moved while it was read. Nothing "
            "was written; it is checked again next cycle.", registry=registry.host)
