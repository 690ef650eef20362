"""Stage 1 of a cycle: ask the registries which image each app environment should run.

Lookups are grouped by (registry, repository) so that every environment sharing a
repository shares its requests: one HEAD per distinct tracked tag on OCI registries,
one paginated listing per repository on ECR. Groups run concurrently; a failure is
recorded against the environments it concerns and never stops the other groups.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from image_updater.config.model import App, Environment
from image_updater.errors import ImageUpdaterError, NotFoundError
from image_updater.policy.strategies import Selection, select
from image_updater.registry.base import Manifest, Registry, check_digest, check_tag
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
    groups = group_by_repository(apps)
    await asyncio.gather(*(_resolve_group(g, registry_for, result) for g in groups))
    return result


async def _resolve_group(group: _Group, registry_for: Callable[[str], Registry],
                         out: Resolution) -> None:
    try:
        registry = registry_for(group.host)
        await _resolve_members(group, registry, out)
    except ImageUpdaterError as exc:
        for app, env in group.members:
            out.errors.setdefault((app.name, env.name), exc)


async def _resolve_members(group: _Group, registry: Registry, out: Resolution) -> None:
    follow = [(a, e) for a, e in group.members if e.strategy.kind == "digest"]
    choose = [(a, e) for a, e in group.members if e.strategy.kind != "digest"]
    wanted = {e.strategy.tag for _, e in follow if e.strategy.tag}
    tags: list[str] = []
    if choose:
        tags = _valid_tags(await registry.list_tags(group.repository))
    selections = {}
    for app, env in choose:
        created = await _created_times(registry, group.repository, env, tags)
        selections[(app.name, env.name)] = select(env.strategy, tags, created=created)
    wanted |= {s.tag for s in selections.values() if s.tag}
    digests = await registry.digests(group.repository, sorted(wanted))
    for app, env in group.members:
        key = (app.name, env.name)
        try:
            out.resolved[key] = await _one(group, registry, env, digests, selections.get(key))
        except ImageUpdaterError as exc:
            out.errors[key] = exc


async def _one(group: _Group, registry: Registry, env: Environment, digests: dict[str, str],
               selection: Selection | None) -> Resolved:
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
    if tag not in digests:
        raise NotFoundError(
            f"tag {tag} not found in {where}; push it or fix the policy's tag for environment "
            f"{env.name}. Nothing is written until it exists.", registry=group.host)
    digest = check_digest(digests[tag], what=f"digest of {where}:{tag}")
    if env.strategy.platform:
        digest = await _platform_digest(registry, group.repository, digest, env.strategy.platform)
    return Resolved(tag=tag, digest=digest, reason=reason.replace("{digest}", digest[:19] + "…"))


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
    digests = await registry.digests(repository, candidates)
    created: dict[str, datetime] = {}
    for tag, digest in digests.items():
        when = await registry.created(repository, digest)
        if when is not None:
            created[tag] = when
    return created


async def _platform_digest(registry: Registry, repository: str, digest: str,
                           platform: str) -> str:
    manifest: Manifest = await registry.get_manifest(repository, digest)
    if not manifest.is_index:
        return digest
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    for child in json.loads(manifest.body).get("manifests", []):
        p = child.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch and (
                not variant or p.get("variant") == variant):
            return check_digest(child.get("digest", ""), what="platform child digest")
    raise NotFoundError(
        f"image index {digest[:19]}… in {registry.host}/{repository} has no {platform} child; "
        "remove 'platform' from the policy or push that platform.", registry=registry.host)
