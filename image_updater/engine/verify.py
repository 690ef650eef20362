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

Then the signature gate, for environments whose policy says ``verify``: the digest's cosign
signatures are fetched (``sha256-<hex>.sig`` and OCI 1.1 referrers) and one of the listed keys
must have signed exactly that digest with a claim naming the expected repository. A verdict
is kept for the process by (digest, key set, identity): the steady state asks the registry
nothing more. A refusal is asked again next cycle (a signature pushed just after its image is
found then), and, while it stays refused, after a doubling delay of at most
``REFUSAL_RECHECK_MAX``: a steady unsigned tag stops costing its signature requests every
cycle, and a late signature is still found within ten minutes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from image_updater.changes import Change, SignatureCheck, Verification, VerificationOutcome
from image_updater.clocks import MonotonicClock
from image_updater.errors import (
    DigestMismatchError,
    ImageUpdaterError,
    UnverifiedError,
    as_image_updater_error,
)
from image_updater.model import App, CosignVerify, Environment
from image_updater.registry.base import Registry, platform_child
from image_updater.registry.reference import parse_reference
from image_updater.registry.signatures import fetch_signatures
from image_updater.signatures import PublicKey, SignatureVerdict, verify_signatures

#: (registry host, repository, tag, platform or "", digest)
DigestKey = tuple[str, str, str, str, str]
#: (digest, key fingerprints, identity): what a signature verdict depends on
SignedKey = tuple[str, tuple[str, ...], str]
#: (registry host, repository) + SignedKey: what a refusal depends on, as the signatures
#: were looked for in that repository (another may hold them)
RefusalKey = tuple[str, str, str, tuple[str, ...], str]


@dataclass(frozen=True)
class Signed:
    """A signature verdict, and the registry requests fetching the signatures cost."""

    verdict: SignatureVerdict
    requests: int


#: (registry, repository, digest, identity, keys) -> the verdict: the gate's one seam
SignatureCheckFn = Callable[[Registry, str, str, str, tuple[PublicKey, ...]],
                            Coroutine[Any, Any, Signed]]


async def check_signatures(registry: Registry, repository: str, digest: str, identity: str,
                           keys: tuple[PublicKey, ...]) -> Signed:
    """Fetch ``digest``'s signatures from ``registry`` and verify them against ``keys``."""
    artifacts = await fetch_signatures(registry, repository, digest)
    verdict = verify_signatures(artifacts, digest=digest, docker_reference=identity, keys=keys)
    return Signed(verdict=verdict, requests=artifacts.requests)


#: A signature refusal is asked again next cycle (a signature pushed just after its image is
#: seen at once); while it stays refused, after 60 s, then 120 s, 240 s, 480 s, and every
#: 600 s at most: a steady unsigned tag does not cost the signature requests every cycle.
REFUSAL_RECHECK_FIRST = 60.0
REFUSAL_RECHECK_MAX = 600.0
#: refusals remembered at most (the oldest are forgotten: they are asked again)
REFUSALS_KEPT = 4096


@dataclass
class _Refusal:
    verdict: SignatureVerdict
    count: int      # consecutive refusals of this (digest, key set, identity)
    until: float    # monotonic time before which the registry is not asked again


class VerifiedDigests:
    """The digests verified so far in this process, and the signature refusals not to ask
    about again yet; shared by the worker threads."""

    def __init__(self, clock: MonotonicClock = time.monotonic) -> None:
        self._seen: set[Hashable] = set()  # DigestKey, and SignedKey for the signature gate
        self._refused: OrderedDict[RefusalKey, _Refusal] = OrderedDict()
        self._clock = clock
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: DigestKey | SignedKey) -> None:
        with self._lock:
            self._seen.add(key)

    def refusal(self, key: RefusalKey) -> SignatureVerdict | None:
        """The refusal of ``key`` while it is too recent to ask the registry again."""
        with self._lock:
            found = self._refused.get(key)
            return found.verdict if found is not None and self._clock() < found.until else None

    def refuse(self, key: RefusalKey, verdict: SignatureVerdict) -> None:
        """Remember a refusal (a verdict, never a failed fetch) and when to ask again."""
        with self._lock:
            previous = self._refused.pop(key, None)
            count = previous.count + 1 if previous is not None else 1
            delay = 0.0 if count == 1 else min(REFUSAL_RECHECK_MAX,
                                               REFUSAL_RECHECK_FIRST * 2 ** (count - 2))
            self._refused[key] = _Refusal(verdict, count, self._clock() + delay)
            while len(self._refused) > REFUSALS_KEPT:
                self._refused.popitem(last=False)


class Verifier:
    """One cycle's verifications, called from the worker threads of the deploy repositories.

    The registry clients belong to the event loop, so each fetch runs there and the worker
    thread waits for it. A digest that failed this cycle is not fetched again by a re-plan
    after a push race: the same error is raised again. :meth:`prefetch` fetches many at
    once, concurrently, before a plan checks them one by one (a cycle moving 1,000
    environments would otherwise wait for 1,000 fetches in a row).
    """

    def __init__(self, registry_for: Callable[[str], Registry], verified: VerifiedDigests,
                 loop: asyncio.AbstractEventLoop,
                 signatures: SignatureCheckFn = check_signatures) -> None:
        self._registry_for = registry_for
        self._verified = verified
        self._loop = loop
        self._signatures = signatures
        self._failed: dict[DigestKey, ImageUpdaterError] = {}
        #: fetched by prefetch, not yet checked: None when the digest held, else the error
        self._fetched: dict[DigestKey, Exception | None] = {}
        #: this cycle's signature answers that were not a pass: the verdict (each app and
        #: environment gets its own message) or the error that stopped the fetch
        self._refused: dict[RefusalKey, SignatureVerdict | ImageUpdaterError] = {}
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

    def check(self, app: App, env: Environment, change: Change, record: list[Verification],
              signed: list[SignatureCheck]) -> None:
        """Raise when ``change``'s digest is not what its tag's manifest bytes hash to, or
        (UnverifiedError) when ``env`` requires signatures and the digest has no valid one.
        """
        self._check_digest(app, env, change, record)
        if env.verify is not None:
            self._check_signed(app, env, env.verify, change.digest, signed)

    def _check_digest(self, app: App, env: Environment, change: Change,
                      record: list[Verification]) -> None:
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

    def _check_signed(self, app: App, env: Environment, spec: CosignVerify, digest: str,
                      record: list[SignatureCheck]) -> None:
        ref = parse_reference(app.image)
        fingerprints, identity = spec.cache_key(app.image)
        key: SignedKey = (digest, fingerprints, identity)
        asked: RefusalKey = (ref.registry, ref.repository, *key)
        with self._lock:
            failed = self._refused.get(asked)
        if failed is None and key not in self._verified:
            failed = self._verified.refusal(asked)  # refused recently: no request
        if isinstance(failed, ImageUpdaterError):  # a re-plan after a push race asks no more
            raise failed
        if failed is not None:
            with self._lock:
                self._refused[asked] = failed
            raise unverified_error(app, env, digest, failed, _RECHECK)
        if key in self._verified:
            return
        try:
            outcome = asyncio.run_coroutine_threadsafe(self._signatures(
                self._registry_for(ref.registry), ref.repository, digest, identity, spec.keys),
                self._loop).result()
        except Exception as exc:  # the signatures could not be fetched: not a verdict
            error = as_image_updater_error(exc, f"fetching the signatures of {app.image}@"
                                                f"{digest}")
            with self._lock:
                self._refused[asked] = error
            if error is exc:
                raise
            raise error from exc
        verdict = outcome.verdict
        reason = str(verdict.reason) if verdict.reason is not None else None
        record.append(SignatureCheck(app=app.name, env=env.name, digest=digest, ok=verdict.ok,
                                     key=verdict.key, reason=reason, requests=outcome.requests))
        if not verdict.ok:
            with self._lock:
                self._refused[asked] = verdict
            self._verified.refuse(asked, verdict)
            raise unverified_error(app, env, digest, verdict, _RECHECK)
        self._verified.add(key)


_RECHECK = (f"its signatures are read again next cycle, then less often while it stays "
            f"refused (at least every {REFUSAL_RECHECK_MAX:.0f} s)")


def unverified_error(app: App, env: Environment, digest: str, verdict: SignatureVerdict,
                     recheck: str = "the digest is checked again when it comes up next"
                     ) -> UnverifiedError:
    """The refusal for ``digest`` in ``env``: which check failed, and what to do."""
    reason = str(verdict.reason or "unsigned")
    where = f"{app.source}:{env.line}" if app.source else "its policy"
    return UnverifiedError(
        f"{app.name}/{env.name} requires a cosign signature (verify in {where}) and refuses "
        f"{digest} ({reason}): {verdict.message.rstrip('.')}.{_platform_hint(env, reason)} "
        f"Nothing was written for {env.name}; {recheck}.", verdict=reason)


def _platform_hint(env: Environment, reason: str) -> str:
    """A pinned platform writes the platform's own manifest digest, and that digest must be
    signed: a signature over the index is not one over exactly the digest written (nor what
    an admission controller checks). 'cosign sign' signs only the index by default."""
    if not env.strategy.platform or reason != "unsigned":
        return ""
    return (f" {env.name} pins platform {env.strategy.platform}, so the digest is that "
            "platform's manifest, not the index: sign it too ('cosign sign --recursive' "
            "signs the index and every platform's manifest).")


async def require_signed(app: App, env: Environment, digest: str,
                         registry_for: Callable[[str], Registry],
                         signatures: SignatureCheckFn = check_signatures,
                         verified: VerifiedDigests | None = None) -> Signed | None:
    """For a person's command (promote, retag, rollback) and the status: UnverifiedError
    unless ``digest`` passes ``env``'s signature gate; None when ``env`` requires no signature
    or ``verified`` (the daemon's verdicts, by digest, key set and identity, so a key removed
    from the policy since still counts) already holds a pass. A command's own process has
    none: it asks the registry."""
    if env.verify is None:
        return None
    fingerprints, identity = env.verify.cache_key(app.image)
    key: SignedKey = (digest, fingerprints, identity)
    if verified is not None and key in verified:
        return None
    ref = parse_reference(app.image)
    outcome = await signatures(registry_for(ref.registry), ref.repository, digest,
                               identity, env.verify.keys)
    if not outcome.verdict.ok:
        raise unverified_error(app, env, digest, outcome.verdict)
    if verified is not None:
        verified.add(key)
    return outcome


def retag_gate(apps: Sequence[App], dst: str, registry_for: Callable[[str], Registry]
               ) -> Callable[[str], Awaitable[object]] | None:
    """``retag``'s gate: every environment (of ``apps``) that follows ``dst``'s tag of its
    repository with ``verify`` must accept the digest; None when none does."""
    ref = parse_reference(dst)
    gated = [(app, env) for app in apps for env in app.environments
             if env.verify is not None and env.strategy.kind == "digest"
             and env.strategy.tag == ref.tag and _same_repository(app.image, dst)]
    if not gated:
        return None

    async def gate(digest: str) -> None:
        for app, env in gated:
            await require_signed(app, env, digest, registry_for)

    return gate


def _same_repository(image: str, reference: str) -> bool:
    a, b = parse_reference(image), parse_reference(reference)
    return (a.registry, a.repository) == (b.registry, b.repository)


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
