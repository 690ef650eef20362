"""Semantic versions as Masterminds/semver v3 reads them (the constraint side is in
:mod:`image_updater.policy.constraint`, as ``packaging`` splits ``version`` from ``specifiers``).
Pure: strings in, values out.

Versions (``Version.parse``)
    An optional lowercase ``v``, then ``MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD]``.
    Unless ``strict``, a missing minor or patch is coerced to 0 (``1.2`` -> ``1.2.0``) and
    leading zeros in the numbers are accepted (``01.2.3`` -> ``1.2.3``), as Masterminds'
    ``NewVersion`` does. ``strict`` demands all three numbers without leading zeros; it still
    accepts the ``v`` prefix, because ``v1.2.3`` is the most common way to tag an image.

Precedence (semver 2.0 section 11)
    ``<``, ``>``, ``==`` and ``compare`` order by (major, minor, patch, prerelease): a
    prerelease sorts before its release, identifiers compare one by one (numbers numerically,
    numbers before words, words in ASCII order, a shorter list first when all else is equal).
    Build metadata is ignored, so ``1.0.0+a == 1.0.0+b``. Sorting by ``Version.sort_key``
    breaks such ties by the original text, so any sort is deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from image_updater.errors import InvalidReferenceError

#: Longer input is refused before any parsing (Masterminds uses the same bounds).
MAX_VERSION_LEN = 256
MAX_NUMBER = 2**64 - 1  # versions are uint64 in Masterminds; larger numbers are not versions

IDENTS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION_RE = re.compile(
    rf"v?(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<patch>\d+))?"
    rf"(?:-(?P<pre>{IDENTS}))?(?:\+(?P<build>{IDENTS}))?",
    re.ASCII,  # "\d" must not match other scripts' digits
)

# One prerelease identifier as a sort key: numbers (0, n, "") sort before words (1, 0, w).
_IdentKey = tuple[int, int, str]
_PrecedenceKey = tuple[int, int, int, int, tuple[_IdentKey, ...]]


class InvalidVersionError(InvalidReferenceError, ValueError):
    """A text (usually an untrusted tag) is not a semantic version."""


# --------------------------------------------------------------------------- versions


def _ident_key(ident: str) -> _IdentKey:
    return (0, int(ident), "") if ident.isdigit() else (1, 0, ident)


def _precedence(numbers: tuple[int, int, int], pre: tuple[str, ...]) -> _PrecedenceKey:
    if not pre:
        return (*numbers, 1, ())
    return (*numbers, 0, tuple(_ident_key(i) for i in pre))


@dataclass(frozen=True, eq=False)
class Version:
    """A parsed version. Immutable; compares by semver precedence (build ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    original: str = ""  # the text it was parsed from, e.g. the tag "v1.2"

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> Version:
        """Parse ``text``; raise :class:`InvalidVersionError` saying why it is no version."""
        result = _parse_version(text, strict=strict)
        if isinstance(result, str):
            shown = repr(text)[:80] if isinstance(text, str) else repr(type(text))
            raise InvalidVersionError(f"{shown} is not a semantic version: {result}.")
        return result

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @cached_property
    def precedence(self) -> _PrecedenceKey:
        """The semver 2.0 precedence as a tuple: a release (1, ()) outranks any prerelease."""
        return _precedence((self.major, self.minor, self.patch), self.prerelease)

    @property
    def sort_key(self) -> tuple[_PrecedenceKey, str]:
        """Precedence, then the original text: a total order, so every sort is deterministic."""
        return (self.precedence, self.original or str(self))

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 by precedence, like Masterminds' ``Compare``."""
        a, b = self.precedence, other.precedence
        return (a > b) - (a < b)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence == other.precedence

    def __hash__(self) -> int:
        return hash(self.precedence)

    def __lt__(self, other: Version) -> bool:
        return self.precedence < other.precedence

    def __le__(self, other: Version) -> bool:
        return self.precedence <= other.precedence

    def __gt__(self, other: Version) -> bool:
        return self.precedence > other.precedence

    def __ge__(self, other: Version) -> bool:
        return self.precedence >= other.precedence

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def _parse_version(text: str, *, strict: bool) -> Version | str:
    """The version, or a short reason why ``text`` is not one (no exception: tags are many)."""
    if not isinstance(text, str) or not text:
        return "it is empty"
    if len(text) > MAX_VERSION_LEN:
        return f"it is longer than {MAX_VERSION_LEN} characters"
    m = _VERSION_RE.fullmatch(text)
    if m is None:
        return "expected [v]MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD] with numeric parts"
    major, minor, patch, pre, build = m.group("major", "minor", "patch", "pre", "build")
    if strict and (problem := _strict_problem(major, minor, patch)):
        return problem
    numbers = (int(major), int(minor) if minor else 0, int(patch) if patch else 0)
    if max(numbers) > MAX_NUMBER:
        return "a number is larger than 2^64-1"
    idents = tuple(pre.split(".")) if pre else ()
    if idents and (problem := prerelease_problem(idents)):
        return problem
    return _new_version(numbers, idents, tuple(build.split(".")) if build else (), text)


def _new_version(numbers: tuple[int, int, int], pre: tuple[str, ...], build: tuple[str, ...],
                 original: str) -> Version:
    """Build a Version without the frozen-dataclass __init__: parsing 10,000 tags is a hot
    path, and filling __dict__ at once (precedence included) is several times cheaper."""
    v = object.__new__(Version)
    major, minor, patch = numbers
    v.__dict__.update(major=major, minor=minor, patch=patch, prerelease=pre, build=build,
                      original=original, precedence=_precedence(numbers, pre))
    return v


def _strict_problem(major: str, minor: str | None, patch: str | None) -> str | None:
    if minor is None or patch is None:
        return "strict mode needs all of MAJOR.MINOR.PATCH (e.g. 1.2.0, not 1.2)"
    for n in (major, minor, patch):
        if len(n) > 1 and n[0] == "0":
            return f"strict mode forbids the leading zero in {n!r}"
    return None


def prerelease_problem(idents: tuple[str, ...]) -> str | None:
    # Semver forbids leading zeros in numeric prerelease identifiers; Masterminds rejects
    # them even when coercing, because "01" vs "1" would have no defined order.
    for ident in idents:
        if len(ident) > 1 and ident[0] == "0" and ident.isdigit():
            return f"the numeric prerelease identifier {ident!r} has a leading zero"
    return None


def split_idents(idents: str | None) -> tuple[str, ...]:
    return tuple(idents.split(".")) if idents else ()
