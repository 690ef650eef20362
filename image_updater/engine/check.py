"""``image-updater check``: what a policy would choose from a real repository, and why.

Like Argo CD Image Updater's ``test`` command: list the tags, show each verdict, show the
choice with its digest. With public keys (``--key``), each kept candidate (the first
:data:`MAX_SIGNED`) also shows whether it is signed, and by which key. Read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from image_updater.engine.verify import check_signatures
from image_updater.errors import ConfigError, InvalidReferenceError
from image_updater.model import DEFAULT_IGNORE, Strategy, StrategyKind, TagFilter
from image_updater.policy.strategies import Selection, compile_strategy
from image_updater.registry.base import Registry
from image_updater.registry.reference import parse_reference
from image_updater.signatures import PublicKey

MAX_LISTED = 200  # a repository may hold thousands of tags; the choice is always shown
#: kept candidates whose signatures are checked (a few registry requests each)
MAX_SIGNED = 20


@dataclass(frozen=True)
class CheckReport:
    text: str
    found: bool


def check_strategy(*, kind: StrategyKind, tag: str | None = None,
                   constraint: str | None = None, strict: bool = False,
                   order: Literal["asc", "desc"] = "asc", platform: str | None = None,
                   allow: str | None = None, ignore: Sequence[str] = (),
                   extract: str | None = None) -> Strategy:
    """The policy ``check`` tries: as a policy file would give it, the default ignores
    (signatures, attestations, SBOMs) included."""
    ignored = DEFAULT_IGNORE + tuple(i for i in ignore if i not in DEFAULT_IGNORE)
    return Strategy(kind=kind, tag=tag, constraint=constraint, strict=strict, order=order,
                    platform=platform,
                    filter=TagFilter(allow=allow, ignore=ignored, extract=extract))


async def check_image(registry_for: Callable[[str], Registry], image: str,
                      strategy: Strategy, *, keys: tuple[PublicKey, ...] = (),
                      identity: str | None = None) -> CheckReport:
    """What ``strategy`` chooses among the tags of repository ``image``, and why; with
    ``keys``, whether each kept candidate is signed by one of them (claims naming
    ``identity``, default ``image``)."""
    ref = parse_reference(image)
    if ref.tag or ref.digest:
        raise InvalidReferenceError(f"check takes a repository without tag or digest, not "
                                    f"{image!r}; use --tag for the digest strategy.")
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
    signed = None
    if keys:
        kept = [v.tag for v in selection.considered if v.kept][:MAX_SIGNED]
        signed = await _signed(registry, ref.repository, kept, identity or image, keys)
    return CheckReport(text=render(f"{ref.registry}/{ref.repository}", tags, selection, digest,
                                   signed), found=digest is not None)


async def _signed(registry: Registry, repository: str, tags: list[str], identity: str,
                  keys: tuple[PublicKey, ...]) -> dict[str, str]:
    """tag -> "signed by KEY" or "NOT signed (reason): message", each digest asked once."""
    digests = await registry.digests(repository, tags)
    by_digest: dict[str, str] = {}
    for digest in dict.fromkeys(digests.values()):
        verdict = (await check_signatures(registry, repository, digest, identity, keys)).verdict
        by_digest[digest] = (f"signed by {verdict.key}" if verdict.ok else
                             f"NOT signed ({verdict.reason}): {verdict.message}")
    return {tag: by_digest[d] for tag, d in digests.items()}


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


def render(where: str, tags: list[str], selection: Selection, digest: str | None,
           signed: dict[str, str] | None = None) -> str:
    kept = [v for v in selection.considered if v.kept]
    dropped = [v for v in selection.considered if not v.kept]
    lines = [f"{where}: {len(tags)} tag(s), {len(kept)} candidate(s), {len(dropped)} dropped"]
    for verdict in (kept + dropped)[:MAX_LISTED]:
        mark = "keep" if verdict.kept else "drop"
        lines.append(f"  {mark}  {verdict.tag[:72]:<40} {verdict.why}")
        if signed is not None and verdict.kept:
            lines.append(f"        {signed.get(verdict.tag, 'signature not checked')}")
    if len(selection.considered) > MAX_LISTED:
        lines.append(f"  … {len(selection.considered) - MAX_LISTED} more")
    if selection.tag:
        lines.append(f"choice: {selection.tag} @ {digest or '(tag vanished)'}")
    else:
        lines.append("choice: none")
    lines.append(f"reason: {selection.reason}")
    return "\n".join(lines)
