"""Promotion by digest: ``retag`` one image to another tag, and ``promote`` an environment.

Why by digest: smoke tests run against what an environment *deployed*, which is a digest.
Meanwhile CI may push a new ``:dev``; "retag :dev to :staging" would then promote an image
nobody tested. ``retag`` therefore accepts the exact digest to promote (``digest``) and
refuses to move a destination that changed under it (``expect_current``), and ``promote``
takes the digest from the source environment's values file in git: the one Argo CD applied.

The CLI glue (printing, exit codes) lives in :mod:`image_updater.commands`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from image_updater.errors import (
    ConfigError,
    ConflictError,
    DigestMismatchError,
    HeldError,
    InvalidReferenceError,
    NotFoundError,
    ValuesError,
)
from image_updater.model import DEFAULT_FILE_BYTES, App, Environment
from image_updater.registry.base import Manifest, Registry, check_digest
from image_updater.registry.copy import copy_image, leading_error
from image_updater.registry.reference import ImageRef, parse_reference

RegistryFor = Callable[[str], Registry]
Status = Literal["promoted", "already"]
#: ``expect_current`` value meaning "the destination tag must not exist yet"
NONE = "none"
#: Seconds between a compare-and-swap PUT and reading the tag back. A concurrent writer
#: that read the old value before our PUT has put its own manifest by then, provided its
#: PUT reached the registry within this time of its read (docs/promotion.md).
CAS_SETTLE = 0.3
#: Seconds a compare-and-swap read stays fresh enough to PUT on; older (a slow source read,
#: retries, blob copies) and the destination is read again just before the PUT. Keeping it
#: well under CAS_SETTLE leaves CAS_SETTLE - CAS_READ_MAX_AGE for network transit.
CAS_READ_MAX_AGE = 0.1


@dataclass(frozen=True)
class RetagResult:
    """What one retag did. ``requests`` counts registry requests when the caller can count."""

    status: Status
    digest: str
    requests: int | None
    notes: tuple[str, ...] = ()     # what the caller should know: a moved source tag, …
    source: str = ""
    destination: str = ""
    previous: str | None = None     # what the destination tag pointed at before

    def line(self) -> str:
        """One line for people and job logs."""
        if self.status == "already":
            text = f"already promoted: {self.destination} is {self.digest}"
        else:
            was = self.previous or "nothing"
            text = f"promoted {self.source} to {self.destination}: {self.digest} (was {was})"
        return "; ".join((text, *self.notes))


@dataclass(frozen=True)
class _Request:
    """The validated arguments of one retag."""

    src: ImageRef
    dst: ImageRef
    pinned: str | None        # the digest to promote, if the caller named one
    expect: str | None        # a digest, NONE, or None for "no compare-and-swap"

    @property
    def dst_tag(self) -> str:
        assert self.dst.tag is not None
        return self.dst.tag


async def retag(src_ref: str, dst_ref: str, *, digest: str | None = None,
                expect_current: str | None = None, registry_for: RegistryFor,
                count_requests: Callable[[], int] | None = None,
                gate: Callable[[str], Awaitable[object]] | None = None) -> RetagResult:
    """Point ``dst_ref`` (which names a tag) at exactly the image ``src_ref`` names.

    ``src_ref`` is ``repo:tag`` or ``repo@sha256:…``. ``digest`` promotes that digest, which
    must exist in the source repository, even if the source tag has moved on since (the
    result's notes say so). ``expect_current`` (a digest, or ``"none"`` for "must not exist")
    refuses with ConflictError when the destination tag points elsewhere, before the PUT or,
    when a concurrent writer replaced ours, after it (:class:`_Swap`). A destination already
    at the digest is success (``status="already"``), whatever ``expect_current`` says, so a
    job that is retried after it promoted succeeds again. ``gate(digest)`` runs before
    anything is written and refuses by raising (the signature gate of a gated environment).
    """
    before = count_requests() if count_requests else 0
    req = _validate(src_ref, dst_ref, digest, expect_current)
    src_reg, dst_reg = registry_for(req.src.registry), registry_for(req.dst.registry)
    manifest, (previous, read_at), src_tag_now = await _read_all(src_reg, dst_reg, req)
    result = RetagResult(status="already", digest=manifest.digest, requests=None,
                         notes=_moved_notes(req, src_tag_now), source=str(req.src),
                         destination=str(req.dst), previous=previous)
    if previous != manifest.digest:
        _compare(req, previous, manifest.digest)
        if gate is not None:
            await gate(manifest.digest)
        swap = _Swap(req, dst_reg, manifest.digest, read_at) if req.expect is not None else None
        await copy_image(manifest, src=src_reg, src_repository=req.src.repository, dst=dst_reg,
                         dst_repository=req.dst.repository, tag=req.dst_tag,
                         before_put=swap.before_put if swap else None)
        if swap:
            await swap.confirm()
        result = replace(result, status="promoted")
    return replace(result, requests=count_requests() - before if count_requests else None)


def _validate(src_ref: str, dst_ref: str, digest: str | None, expect: str | None) -> _Request:
    src, dst = parse_reference(src_ref), parse_reference(dst_ref)
    if dst.tag is None or dst.digest is not None:
        raise InvalidReferenceError(
            f"Destination {dst_ref!r} must name a tag and no digest, e.g. "
            f"{dst.name}:staging; the tag is what retag moves.")
    if digest is not None:
        check_digest(digest, what="--digest")
        if src.digest is not None and src.digest != digest:
            raise InvalidReferenceError(
                f"Source {src_ref!r} names digest {src.digest} but --digest is {digest}; give "
                "one digest to promote.")
    pinned = digest or src.digest
    if src.tag is None and pinned is None:
        raise InvalidReferenceError(
            f"Source {src_ref!r} names neither a tag nor a digest; write {src.name}:TAG or "
            f"{src.name}@sha256:….")
    if expect is not None and expect != NONE:
        check_digest(expect, what="--expect-current")
    return _Request(src=src, dst=dst, pinned=pinned, expect=expect)


async def _read_all(src_reg: Registry, dst_reg: Registry, req: _Request
                    ) -> tuple[Manifest, tuple[str | None, float], str | None]:
    """The independent reads, at once: a promotion costs two round trips, "already" one.

    The first error cancels the other reads (no request outlives the command) and is
    raised as itself.
    """
    try:
        async with asyncio.TaskGroup() as group:
            source = group.create_task(_read_source(src_reg, req))
            destination = group.create_task(_read_destination(dst_reg, req))
            src_tag_now = group.create_task(_source_tag_now(src_reg, req))
        return source.result(), destination.result(), src_tag_now.result()
    except ExceptionGroup as errors:
        error = leading_error(errors)
    raise error  # outside the handler: the error keeps its own cause and context


async def _read_source(registry: Registry, req: _Request) -> Manifest:
    reference = req.pinned or req.src.tag
    assert reference is not None
    try:
        manifest = await registry.get_manifest(req.src.repository, reference)
    except NotFoundError as exc:
        what = f"Digest {reference}" if req.pinned else f"Tag {reference}"
        raise NotFoundError(
            f"{what} does not exist in {req.src.name}, so there is nothing to promote; check "
            f"the source image and digest ({exc})", registry=exc.registry, url=exc.url) from exc
    if req.pinned and manifest.digest != req.pinned:
        raise DigestMismatchError(f"{req.src.name} served a manifest hashing to "
                                  f"{manifest.digest} when asked for {req.pinned}; it is not "
                                  "trusted and nothing was promoted.", registry=registry.host)
    return manifest


async def _source_tag_now(registry: Registry, req: _Request) -> str | None:
    """Where the source tag points now, when a pinned digest is promoted from a tag.

    Returns the pinned digest itself when there is nothing to compare, and "" when the tag
    no longer exists.
    """
    if req.pinned is None or req.src.tag is None:
        return req.pinned
    now = await registry.head_manifest(req.src.repository, req.src.tag)
    return now[0] if now else ""


async def _read_destination(registry: Registry, req: _Request) -> tuple[str | None, float]:
    """The digest the destination tag names (None: no such tag), and when it was read."""
    seen = await registry.head_manifest(req.dst.repository, req.dst_tag)
    return (seen[0] if seen else None), time.monotonic()


def _moved_notes(req: _Request, now: str | None) -> tuple[str, ...]:
    if now == req.pinned:
        return ()
    where = f"{req.src.name}:{req.src.tag}"
    if not now:
        return (f"note: {where} no longer exists; promoted the given digest {req.pinned}",)
    return (f"note: {where} points at {now} now, not at the given digest; promoted "
            f"the given digest {req.pinned}, not what the tag points at",)


def _compare(req: _Request, previous: str | None, digest: str) -> None:
    """Compare-and-swap: the destination must still be what the caller saw."""
    if req.expect is None:
        return
    expected = None if req.expect == NONE else req.expect
    if previous != expected:
        raise ConflictError(
            f"{req.dst} points at {previous or 'nothing (the tag does not exist)'}, not at "
            f"{expected or 'nothing'} as --expect-current requires; {digest} was not "
            "promoted. Someone else moved the tag: check what runs there, then retry with "
            "the current value.")


@dataclass
class _Swap:
    """The compare-and-swap around one PUT of the destination tag.

    The distribution API (and ECR's PutImage) has no conditional PUT, so two writers that
    both read the expected value can both PUT. Two checks narrow that to a bounded window
    (docs/promotion.md states it): the read the PUT rests on is at most
    ``CAS_READ_MAX_AGE`` old, and ``CAS_SETTLE`` after the PUT the tag is read back: if
    another writer's manifest is there, that writer won and this one reports a conflict.
    """

    req: _Request
    registry: Registry
    digest: str
    read_at: float    # time.monotonic() when the destination was last read

    async def before_put(self) -> None:
        if time.monotonic() - self.read_at <= CAS_READ_MAX_AGE:
            return
        previous, self.read_at = await _read_destination(self.registry, self.req)
        if previous != self.digest:  # a concurrent writer of the same digest is no conflict
            _compare(self.req, previous, self.digest)

    async def confirm(self) -> None:
        await asyncio.sleep(CAS_SETTLE)
        now, _ = await _read_destination(self.registry, self.req)
        if now != self.digest:
            raise ConflictError(
                f"{self.req.dst} was set to {self.digest}, but a concurrent writer won: read "
                f"back {CAS_SETTLE:g} s later it points at {now or 'nothing'}. The registry "
                "has no conditional write, so both passed --expect-current; "
                f"{self.digest} is not promoted. Check what runs there before retrying.")


# -- the commands ----------------------------------------------------------------------------


async def promote(app: App, source: Environment, target: Environment, *,
                  digest: str | None, registry_for: RegistryFor,
                  read_file: Callable[[str], str | None],
                  count_requests: Callable[[], int] | None = None,
                  values_file_bytes: int = DEFAULT_FILE_BYTES,
                  force: bool = False, expect_current: str | None = None) -> RetagResult:
    """Retag the digest ``source``'s values file holds to ``target``'s tag.

    ``expect_current`` is the target tag's digest (or ``"none"``) as the caller saw it when
    it was asked to promote (the daemon's API, before it queued the request behind others
    for the same tag); None reads it now.

    ``read_file(path)`` returns the file at the deploy branch's head (after a sync); it is
    blocking (git) and runs in a worker thread. A held ``target`` refuses with HeldError
    unless ``force``; forced, the tag moves and the result's notes say so, and that git
    keeps what it holds until the hold is released (the daemon writes nothing there).
    """
    from image_updater.engine.plan import read_current

    tag = _target_tag(app, target)
    # Read the target tag before git: the compare-and-swap then also catches anyone moving
    # it while we fetch and read the deploy repository.
    seen = expect_current or await target_digest(app, target, registry_for)
    text = await asyncio.to_thread(read_file, source.file)
    if text is None:
        raise ValuesError(f"{source.file} does not exist in {app.git.url} (branch "
                          f"{app.git.branch}); app {app.name} has no {source.name} environment "
                          "deployed to promote from. Fix the policy's file path.")
    current = read_current(source, text, max_bytes=values_file_bytes)
    deployed = _deployed_digest(app, source, current.digest)
    forced = await _held_check(app, target, read_file, force)
    if digest is not None and check_digest(digest, what="--digest") != deployed:
        raise ConflictError(
            f"The job tested {digest}, but {source.file} in git says {app.name}/{source.name} "
            f"runs {deployed}; nothing was promoted. A newer sync replaced what was tested, "
            "and that sync's own PostSync job will test and promote its image.")
    await _signature_gate(app, target, deployed, registry_for)
    src_ref = (f"{app.image}:{source.strategy.tag}" if source.strategy.tag
               else f"{app.image}@{deployed}")
    result = await retag(src_ref, f"{app.image}:{tag}", digest=deployed,
                         expect_current=seen, registry_for=registry_for,
                         count_requests=count_requests)
    notes = list(result.notes)
    if source.strategy.platform:
        # The values file holds one platform's manifest, and that is what was tested; the
        # index it came from may hold other, untested, builds. Moving only the tested
        # manifest is the safe choice, but the destination tag loses its other platforms.
        notes.append(f"note: {source.name} pins platform {source.strategy.platform}, so only "
                     f"that platform's manifest was promoted; {tag} is now single-platform")
    if digest is None:
        # Git's head may already be past what a smoke test ran against; only the job that
        # tested a digest can vouch for it, so say what this promotion rests on.
        unpinned = (f"note: --from-git: this promoted what git says {source.name} runs now, "
                    "not a digest a test vouched for")
        notes.append(unpinned)
    if forced:
        notes.append(forced)
    return replace(result, notes=tuple(notes))


async def _held_check(app: App, target: Environment, read_file: Callable[[str], str | None],
                      force: bool) -> str:
    """HeldError when ``target`` is held and not ``force``; forced: the note that says so."""
    from image_updater.config.holds import HOLDS_FILE, parse_holds

    hold = parse_holds(await asyncio.to_thread(read_file, HOLDS_FILE)).get(app.name,
                                                                            target.name)
    if hold is None:
        return ""
    release = f"image-updater release {app.name} {target.name}"
    if not force:
        raise HeldError(f"{hold.describe()}; nothing was promoted. Release it first ({release}"
                        "), or pass --force to move the tag anyway.")
    return (f"FORCED past the hold: {hold.describe()}. The tag moved, but the daemon writes "
            f"nothing to {target.name} while it is held: git keeps what it holds until "
            f"{release}")




async def _signature_gate(app: App, target: Environment, digest: str,
                          registry_for: RegistryFor) -> None:
    """A target environment that requires signatures gets only a digest its keys signed
    (UnverifiedError otherwise; ``--force`` does not pass it)."""
    from image_updater.engine.verify import require_signed

    await require_signed(app, target, digest, registry_for)


def _target_tag(app: App, env: Environment) -> str:
    if env.strategy.kind != "digest" or not env.strategy.tag:
        raise ConfigError(
            f"Environment {env.name} of app {app.name} follows a {env.strategy.kind} policy, "
            "not a tag with 'strategy: digest'; promotion moves a tag, so give the target "
            "environment 'strategy: digest' and 'tag'.")
    return env.strategy.tag


async def target_digest(app: App, target: Environment, registry_for: RegistryFor) -> str:
    """The digest ``target``'s tag points at now, or ``"none"`` when the tag does not exist:
    the value a compare-and-swap of the promotion expects."""
    image = parse_reference(app.image)
    seen = await registry_for(image.registry).head_manifest(image.repository,
                                                            _target_tag(app, target))
    return seen[0] if seen else NONE


def _deployed_digest(app: App, env: Environment, value: str | None) -> str:
    if not value:
        raise ValuesError(f"{env.file} holds no image digest for {app.name}/{env.name}, so "
                          "nothing deployed there can be promoted yet; wait for image-updater "
                          "to write one.")
    return check_digest(value, what=f"the image digest in {env.file}")
