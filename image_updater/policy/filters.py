"""Tag filters shared by every listing strategy: which tags are candidates, and what to sort on.

A :class:`~image_updater.model.TagFilter` is compiled once (:func:`compile_filter`)
into a :class:`CompiledFilter`, which then gives each tag a :class:`TagVerdict`. A tag is
dropped, in this order, when it

1. is not a valid tag (registry listings are untrusted: 1-128 of ``[A-Za-z0-9_.-]``);
2. matches an ``ignore`` entry: a glob (``*.sig``, matched against the whole tag) or a
   regex written between slashes (``/-rc\\.?\\d*$/``, found anywhere in the tag, like grep;
   anchor it with ``^``/``$`` to match the whole tag). The default ignores cosign's
   ``*.sig``, ``*.att`` and ``*.sbom`` tags, which are never images to deploy;
3. does not match ``allow``, a regex that must match the *whole* tag;
4. does not match ``extract``, a regex searched in the tag whose named group (``value``, or
   the only named group) supplies the text the strategy sorts on, like Flux's
   ``filterTags.pattern`` + ``extract``. The verdict maps that text back to its tag.

Pure: no I/O, clock or logging.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from image_updater.errors import ConfigError, ImageUpdaterError
from image_updater.model import TagFilter
from image_updater.registry.base import check_tag

DEFAULT_GROUP = "value"


class FilterError(ConfigError, ValueError):
    """A tag filter does not compile. ``field`` is "allow", "ignore" or "extract"."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class TagVerdict(NamedTuple):
    """What a policy made of one tag: kept or dropped, why, and the text it sorts on.

    A NamedTuple rather than a frozen dataclass: one is built per tag, and a listing can
    hold ten thousand tags.
    """

    tag: str
    kept: bool
    why: str
    sort_key: str = ""  # the extracted (or whole) tag for a filter; the strategy refines it


@dataclass(frozen=True)
class IgnoreRule:
    text: str  # as written in the policy
    pattern: re.Pattern[str]
    is_regex: bool

    def matches(self, tag: str) -> bool:
        if self.is_regex:
            return self.pattern.search(tag) is not None
        return self.pattern.match(tag) is not None  # fnmatch.translate anchors at the end


@dataclass(frozen=True)
class CompiledFilter:
    """A validated, compiled :class:`TagFilter`. Build it with :func:`compile_filter`."""

    spec: TagFilter
    allow: re.Pattern[str] | None
    ignore: tuple[IgnoreRule, ...]
    extract: re.Pattern[str] | None
    group: str = DEFAULT_GROUP
    any_ignored: re.Pattern[str] | None = None  # all ignore rules in one regex: one test per tag

    def verdict(self, tag: str) -> TagVerdict:
        problem = _invalid_tag(tag)
        if problem:
            return TagVerdict(shown(tag), False, problem)
        if self.any_ignored is None or self.any_ignored.search(tag):
            for rule in self.ignore:
                if rule.matches(tag):
                    return TagVerdict(tag, False, f"ignored by {rule.text!r}")
        if self.allow is not None and self.allow.fullmatch(tag) is None:
            return TagVerdict(tag, False, f"does not match allow {self.allow.pattern!r}")
        return self._extract(tag)

    def keeps(self, tag: str) -> bool:
        return self.verdict(tag).kept

    def apply(self, tags: Iterable[str]) -> tuple[TagVerdict, ...]:
        return tuple(self.verdict(tag) for tag in tags)

    def _extract(self, tag: str) -> TagVerdict:
        if self.extract is None:
            return TagVerdict(tag, True, "passes the tag filter", tag)
        m = self.extract.search(tag)
        if m is None:
            return TagVerdict(tag, False, f"does not match extract {self.extract.pattern!r}")
        value = m.group(self.group)
        if not value:
            return TagVerdict(tag, False, f"extract group {self.group!r} matched nothing")
        return TagVerdict(tag, True, f"passes the tag filter; sorts on {value!r}", value)


@functools.lru_cache(maxsize=4096)
def compile_filter(spec: TagFilter) -> CompiledFilter:
    """Compile ``spec`` once; raise :class:`FilterError` quoting the regex error.

    Cached by the (frozen) spec: 10,000 policies mostly share a few filters (the default
    ignore list), and compiling globs was a fifth of loading them. A spec that raises is
    not cached, so every policy that has it gets its own located error."""
    extract = _compile("extract", spec.extract) if spec.extract is not None else None
    ignore = tuple(_ignore_rule(text) for text in spec.ignore)
    return CompiledFilter(
        spec=spec,
        allow=_compile("allow", spec.allow) if spec.allow is not None else None,
        ignore=ignore,
        extract=extract,
        group=_extract_group(extract) if extract is not None else DEFAULT_GROUP,
        any_ignored=_union(ignore),
    )


def _union(rules: tuple[IgnoreRule, ...]) -> re.Pattern[str] | None:
    """One regex that finds a tag any rule ignores, or None to test the rules one by one.

    Globs are anchored at the start because search() is used. Rules with groups (whose
    backreferences would be renumbered) or global inline flags (which must come first)
    cannot be joined; then the rules are simply tested in turn.
    """
    if not rules or any(r.pattern.groups for r in rules):
        return None
    parts = [r.pattern.pattern if r.is_regex else r"\A" + r.pattern.pattern for r in rules]
    try:
        return re.compile("|".join(f"(?:{p})" for p in parts), re.ASCII)
    except re.error:
        return None


def _compile(field: str, pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise FilterError(f"tag filter '{field}' is an empty regex, which matches every tag; "
                          f"remove '{field}' or write a pattern.", field=field)
    try:
        # ASCII: tags are ASCII, and \d or \w must not admit other scripts by surprise.
        return re.compile(pattern, re.ASCII)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise FilterError(f"tag filter '{field}' regex {pattern!r} does not compile: "
                          f"{exc.msg}{where}; fix the regex (Python re syntax).",
                          field=field) from exc


def _ignore_rule(text: str) -> IgnoreRule:
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return IgnoreRule(text, _compile("ignore", text[1:-1]), is_regex=True)
    if not text:
        raise FilterError("tag filter 'ignore' has an empty entry; write a glob such as "
                          "'*-debug' or a regex between slashes such as '/^sha-/'.",
                          field="ignore")
    return IgnoreRule(text, re.compile(fnmatch.translate(text)), is_regex=False)


def _extract_group(pattern: re.Pattern[str]) -> str:
    names = list(pattern.groupindex)
    if DEFAULT_GROUP in names:
        return DEFAULT_GROUP
    if len(names) == 1:
        return names[0]
    found = f"it has {', '.join(names)}" if names else "it has none"
    raise FilterError(f"tag filter 'extract' regex {pattern.pattern!r} needs one named group "
                      f"(?P<{DEFAULT_GROUP}>...) marking the text to sort on; {found}.",
                      field="extract")


def _invalid_tag(tag: str) -> str | None:
    try:
        check_tag(tag)
    except ImageUpdaterError:
        return "not a valid tag (1-128 characters of [A-Za-z0-9_.-], not starting with . or -)"
    return None


def shown(tag: object) -> str:
    """How an untrusted tag appears in verdicts and messages: short and printable."""
    text = tag if isinstance(tag, str) else repr(tag)
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= 80 else text[:80] + "…"
