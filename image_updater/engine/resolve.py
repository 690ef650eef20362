"""Stage 1 of a cycle: ask the registries which image each app environment should run.

Lookups are grouped by (registry, repository) so that every environment sharing a
repository shares its requests: one HEAD per distinct tracked tag on OCI registries,
one paginated listing per repository on ECR. Groups run concurrently; a failure is
recorded against the environments it concerns and never stops the other groups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from image_updater.errors import (
    ImageUpdaterError,
    NotFoundError,
    RegistryAuthError,
    as_image_updater_error,
)
from image_updater.model import App, Environment
from image_updater.policy.strategies import Selection, select
from image_updater.registry.base import (
    Manifest,
    Registry,
    check_digest,
    check_tag,
    platform_child,
)
from image_updater.registry.reference import parse_reference

log = logging.getLogger("image_updater.resolve")


@dataclass(frozen=True)
class Resolved:
    """The image an environment should run, and why."""

    tag: str
    digest: str
    reason: str


@dataclass
class Resolution:
    resolved: dict[tuple[str, str], Resolved] = field(default_factory=dict)
    errors: dict[tuple[str, str], ImageUpdaterError] = field(default_factory=dict)
    #: environments whose followed tag does not exist yet (nothing promoted there so far):
    #: the normal state of a new app's later environments, not a failure. Value: the tag.
    waiting: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class _Group:
    host: str
    repository: str
    members: list[tuple[App, Environment]] = field(default_factory=list)


def group_by_repository(apps: Iterable[App]) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for app in apps:
        ref = parse_reference(app.image)
        key = (ref.registry, ref.repository)
        group = groups.setdefault(key, _Group(ref.registry, ref.repository))
        group.members.extend((app, env) for env in app.environments)
    return list(groups.values())


async def resolve(apps: Sequence[App], registry_for: Callable[[str], Registry]) -> Resolution:
    """Resolve every environment of ``apps``; errors are collected, not raised."""
    result = Resolution()
    async with asyncio.TaskGroup() as tasks:  # each group records its own failures
        for group in group_by_repository(apps):
            tasks.create_task(_resolve_group(group, registry_for, result))
    return result


async def _resolve_group(group: _Group, registry_for: Callable[[str], Registry],
                         out: Resolution) -> None:
    try:
        registry = registry_for(group.host)
        await _resolve_members(group, registry, out)
    except Exception as exc:  # one repository's fault never stops the others
        error = _as_error(exc, f"{group.host}/{group.repository}")
        for app, env in group.members:
            out.errors.setdefault((app.name, env.name), error)


async def _resolve_members(group: _Group, registry: Registry, out: Resolution) -> None:
    """Requests are shared by the group; a failure is charged only to the members it concerns."""
    where = f"{group.host}/{group.repository}"
    follow = [(a, e) for a, e in group.members if e.strategy.kind == "digest"]
    choose = [(a, e) for a, e in group.members if e.strategy.kind != "digest"]
    wanted = {e.strategy.tag for _, e in follow if e.strategy.tag}
    selections = await _select_tags(group, registry, choose, out) if choose else {}
    wanted |= {s.tag for s in selections.values() if s.tag}
    digests, failed = await _digests_by_tag(registry, group.repository, wanted)
    for app, env in group.members:
        key = (app.name, env.name)
        if key in out.errors:
            continue
        absent = _absent_tag(env, digests, failed)
        if absent is not None:
            out.waiting[key] = absent
            continue
        try:
            out.resolved[key] = await _one(group, registry, env, digests, failed,
                                           selections.get(key))
        except Exception as exc:
            out.errors[key] = _as_error(exc, where)


async def _digests_by_tag(registry: Registry, repository: str, tags: Iterable[str]
                          ) -> tuple[dict[str, str], dict[str, Exception]]:
    """Digests of ``tags`` in one batch; when the batch fails, tag by tag, so that one tag's
    failure (a 5xx, a malformed header) is charged to the environments using that tag only."""
    wanted = sorted(set(tags))
    try:
        return await registry.digests(repository, wanted), {}
    except Exception as exc:
        # Only an OCI registry's failure can concern one tag (one HEAD each); auth, a
        # missing repository or ECR's one listing concern them all, and asking again per
        # tag would only multiply the load on a registry that is already failing.
        if len(wanted) < 2 or isinstance(exc, RegistryAuthError | NotFoundError) or \
                registry.one_listing_per_repository:
            return {}, {t: exc for t in wanted}
    results = await asyncio.gather(*(registry.digests(repository, [t]) for t in wanted),
                                   return_exceptions=True)
    found: dict[str, str] = {}
    failed: dict[str, Exception] = {}
    for tag, result in zip(wanted, results, strict=True):
        if isinstance(result, Exception):
            failed[tag] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            found.update(result)
    return found, failed


async def _select_tags(group: _Group, registry: Registry, members: list[tuple[App, Environment]],
                       out: Resolution) -> dict[tuple[str, str], Selection]:
    """Tag strategies share one tag listing; each member chooses from it on its own."""
    where = f"{group.host}/{group.repository}"
    selections: dict[tuple[str, str], Selection] = {}
    try:
        tags = _valid_tags(await registry.list_tags(group.repository))
    except Exception as exc:  # fails the tag strategies, not `digest` ones
        error = _as_error(exc, where)
        for app, env in members:
            out.errors[(app.name, env.name)] = error
        return selections
    for app, env in members:
        try:
            created = await _created_times(registry, group.repository, env, tags)
            selections[(app.name, env.name)] = select(env.strategy, tags, created=created)
        except Exception as exc:
            out.errors[(app.name, env.name)] = _as_error(exc, where)
    return selections


async def _one(group: _Group, registry: Registry, env: Environment, digests: dict[str, str],
               failed: dict[str, Exception], selection: Selection | None) -> Resolved:
    where = f"{group.host}/{group.repository}"
    if selection is None:  # digest strategy: follow one mutable tag
        tag = env.strategy.tag or env.name
        reason = f"tag {tag} points at {{digest}}"
    else:
        if not selection.tag:
            raise NotFoundError(
                f"no tag in {where} satisfies the {env.strategy.kind} policy of environment "
                f"{env.name}: {selection.reason}; push a matching tag or relax the policy "
                "(try `image-updater check`).", registry=group.host)
        tag, reason = selection.tag, selection.reason
    if tag in failed:
        raise failed[tag]
    if tag not in digests:
        raise NotFoundError(
            f"tag {tag} not found in {where}; push it or fix the policy's tag for environment "
            f"{env.name}. Nothing is written until it exists.", registry=group.host)
    digest = check_digest(digests[tag], what=f"digest of {where}:{tag}")
    if env.strategy.platform:
        digest = await _platform_digest(registry, group.repository, digest, env.strategy.platform)
    return Resolved(tag=tag, digest=digest, reason=reason.replace("{digest}", digest[:19] + "…"))


def _absent_tag(env: Environment, digests: dict[str, str], failed: dict[str, Exception]
                ) -> str | None:
    """The tag a ``digest`` environment follows, when the registry answered that it does not
    exist (a missing repository or an auth failure raise instead, and count as failures)."""
    if env.strategy.kind != "digest":
        return None
    tag = env.strategy.tag or env.name
    return tag if tag not in digests and tag not in failed else None


def _as_error(exc: Exception, where: str) -> ImageUpdaterError:
    if not isinstance(exc, ImageUpdaterError):  # a bug or unforeseen input: keep the trace
        log.error("unexpected fault while resolving %s", where, exc_info=exc)
    return as_image_updater_error(exc, where)


def _valid_tags(tags: Iterable[str]) -> list[str]:
    """Registry tag lists are untrusted: keep only well-formed tags."""
    valid = []
    for tag in tags:
        try:
            valid.append(check_tag(tag))
        except ImageUpdaterError:
            log.debug("ignoring malformed tag %r", tag[:80] if isinstance(tag, str) else tag)
    return valid


async def _created_times(registry: Registry, repository: str, env: Environment,
                         tags: list[str]) -> dict[str, datetime] | None:
    """newest-build needs creation times: one manifest + config per *new* digest (cached)."""
    if env.strategy.kind != "newest-build":
        return None
    from image_updater.policy.filters import compile_filter

    candidates = [t for t in tags if compile_filter(env.strategy.filter).keeps(t)]
    digests, failed = await _digests_by_tag(registry, repository, candidates)
    _raise_passing_faults(failed)
    created: dict[str, datetime] = {}
    for tag, digest in digests.items():
        try:
            when = await registry.created(repository, digest)
        except ImageUpdaterError as exc:
            failed[tag] = exc
            continue
        if when is not None:
            created[tag] = when
    _raise_passing_faults(failed)
    if failed and not created:
        raise next(iter(failed.values()))
    for tag, why in failed.items():
        # Anyone who can push a matching tag could otherwise block the environment: a tag
        # whose image cannot be read is not a candidate, and the choice says so in the log.
        log.warning("newest-build: leaving out tag %s of %s: %s", tag, repository, why)
    return created


def _raise_passing_faults(failed: dict[str, Exception]) -> None:
    """A passing fault (a 503, a timeout) on the newest tag would make an older build the
    choice, and commit it: only a tag that is itself unreadable may be left out; anything
    temporary fails the environment until the next cycle."""
    for fault in failed.values():
        if getattr(fault, "temporary", False) or not isinstance(fault, ImageUpdaterError):
            raise fault


async def _platform_digest(registry: Registry, repository: str, digest: str,
                           platform: str) -> str:
    manifest: Manifest = await registry.get_manifest(repository, digest)
    if not manifest.is_index:
        return digest
    return platform_child(manifest, platform, f"{registry.host}/{repository}@{digest}",
                          registry.host)
