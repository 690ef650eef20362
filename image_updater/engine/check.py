"""``image-updater check``: what a policy would choose from a real repository, and why.

Like Argo CD Image Updater's ``test`` command: list the tags, show each verdict, show the
choice with its digest. Read-only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from image_updater.errors import ConfigError, InvalidReferenceError
from image_updater.model import DEFAULT_IGNORE, Strategy, TagFilter
from image_updater.policy.strategies import Selection, compile_strategy
from image_updater.registry.base import Registry
from image_updater.registry.reference import parse_reference

MAX_LISTED = 200  # a repository may hold thousands of tags; the choice is always shown


@dataclass(frozen=True)
class CheckReport:
    text: str
    found: bool


def strategy_from_args(args: argparse.Namespace) -> Strategy:
    ignore = DEFAULT_IGNORE + tuple(i for i in args.ignore if i not in DEFAULT_IGNORE)
    return Strategy(kind=args.strategy, tag=args.tag, constraint=args.constraint,
                    strict=args.strict, order=args.order, platform=args.platform,
                    filter=TagFilter(allow=args.allow, ignore=ignore, extract=args.extract))


async def check_image(registry_for: Callable[[str], Registry], args: argparse.Namespace
                      ) -> CheckReport:
    ref = parse_reference(args.image)
    if ref.tag or ref.digest:
        raise InvalidReferenceError(f"check takes a repository without tag or digest, not "
                                    f"{args.image!r}; use --tag for the digest strategy.")
    strategy = strategy_from_args(args)
    if strategy.kind == "digest" and not strategy.tag:
        raise ConfigError("the digest strategy follows one tag: pass --tag, e.g. --tag dev")
    compiled = compile_strategy(strategy)
    registry = registry_for(ref.registry)
    tags = await registry.list_tags(ref.repository)
    created = await _created(registry, ref.repository, tags, strategy)
    selection = compiled.select(tags, created=created)
    digest = None
    if selection.tag:
        digest = (await registry.digests(ref.repository, [selection.tag])).get(selection.tag)
    return CheckReport(text=render(f"{ref.registry}/{ref.repository}", tags, selection, digest),
                       found=digest is not None)


async def _created(registry: Registry, repository: str, tags: list[str],
                   strategy: Strategy) -> dict[str, datetime] | None:
    if strategy.kind != "newest-build":
        return None
    digests = await registry.digests(repository, tags)
    out = {}
    for tag, digest in digests.items():
        when = await registry.created(repository, digest)
        if when is not None:
            out[tag] = when
    return out


def render(where: str, tags: list[str], selection: Selection, digest: str | None) -> str:
    kept = [v for v in selection.considered if v.kept]
    dropped = [v for v in selection.considered if not v.kept]
    lines = [f"{where}: {len(tags)} tag(s), {len(kept)} candidate(s), {len(dropped)} dropped"]
    for verdict in (kept + dropped)[:MAX_LISTED]:
        mark = "keep" if verdict.kept else "drop"
        lines.append(f"  {mark}  {verdict.tag[:72]:<40} {verdict.why}")
    if len(selection.considered) > MAX_LISTED:
        lines.append(f"  … {len(selection.considered) - MAX_LISTED} more")
    if selection.tag:
        lines.append(f"choice: {selection.tag} @ {digest or '(tag vanished)'}")
    else:
        lines.append("choice: none")
    lines.append(f"reason: {selection.reason}")
    return "\n".join(lines)
