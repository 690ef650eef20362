"""Masterminds/semver v3 constraints over :class:`~image_updater.policy.version.Version`,
as Argo CD Image Updater and Flux use them. Pure: strings in, decisions out.

Constraints (``Constraint.parse``)
    Comparators ``=`` (or none), ``!=``, ``>``, ``<``, ``>=``/``=>``, ``<=``/``=<``, ``~``/``~>``,
    ``^``; AND by whitespace or a comma, OR by ``||``; hyphen ranges ``1.2 - 1.4.5`` (spaces
    required: ``1.2-1.4.5`` is version 1.2.0 with prerelease 1.4.5); wildcards ``x``, ``X``,
    ``*`` or a missing part. A prerelease version only satisfies an OR-alternative in which
    some comparator itself names a prerelease (``>=1.2.3-0`` admits them, ``>=1.2.3`` not).

    Partial versions keep Masterminds' meaning per operator: ``1.2`` and ``=1.2`` mean
    ``~1.2``; ``>1.2`` means ``>=1.3.0``; ``<=1.2`` means ``<1.3.0``; ``>=1.2`` and ``<1.2`` fill
    in zeros. Known quirks are kept for compatibility (``~0.0.0`` admits every release,
    ``<=*`` means ``<0.1.0``, ``!=*`` means ``!=0.0.0``), with one exception: Masterminds'
    code makes ``^*`` admit only 0.0.0 although its documentation says "any"; we follow the
    documentation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from image_updater.errors import ConfigError
from image_updater.policy.version import (
    IDENTS,
    MAX_NUMBER,
    Version,
    prerelease_problem,
    split_idents,
)

#: Longer input is refused before any parsing (Masterminds uses the same bounds).
MAX_CONSTRAINT_LEN = 512
MAX_ALTERNATIVES = 32

T = TypeVar("T")


class ConstraintError(ConfigError, ValueError):
    """A constraint does not parse. ``text`` and ``column`` (1-based) locate the problem."""

    def __init__(self, message: str, *, text: str, column: int) -> None:
        super().__init__(message)
        self.text = text
        self.column = column


# ------------------------------------------------------------------------ comparators

Op = Literal["=", "!=", ">", "<", ">=", "<=", "~", "^"]
#: Which part of the comparator's version was a wildcard or missing (Masterminds' "dirty").
Wild = Literal["", "major", "minor", "patch"]


@dataclass(frozen=True)
class Comparator:
    """One operator and version, e.g. ``>= 1.2`` -> op ">=", version 1.2.0, wild "patch"."""

    op: Op
    version: Version  # wildcards and missing parts filled with 0
    wild: Wild
    text: str  # as written, for messages

    @property
    def bound(self) -> str:
        """The version as written in the constraint, e.g. "1.x"."""
        return self.version.original or str(self.version)

    def test(self, v: Version) -> str | None:
        """None when ``v`` satisfies this comparator, else why not (prereleases aside)."""
        template = _OP_TESTS[self.op](self, v)
        return None if template is None else self.why(template, v)

    def why(self, template: str, v: Version) -> str:
        return template.format(v=v, bound=self.bound, text=self.text, con=self.version)


# The tests return None (pass) or a constant message template, like Masterminds' error ids:
# checking thousands of tags formats nothing, and explain() formats only what it shows.
_NOT_EQUAL = "{v} is not {bound}"
_IN_EXCLUDED = "{v} is within the excluded range {text}"
_EXCLUDED = "{v} is excluded by {text}"
_NOT_GT = "{v} is not greater than {bound}"
_NOT_LT = "{v} is not less than {bound}"
_LESS = "{v} is less than {bound}"
_GREATER = "{v} is greater than {bound}"
_OTHER_MAJOR = "{v} does not have the major version of {text}"
_OTHER_MINOR = "{v} does not have the major.minor version of {text}"
_NOT_0X = "{v} is not a 0.x version as {text} requires"
_OTHER_0_MINOR = "{v} does not have the minor version of {text}"
_NOT_00X = "{v} is not a 0.0.x version as {text} requires"
_NOT_ONLY = "{v} is not {con}, the only version {text} admits"


def _test_eq(c: Comparator, v: Version) -> str | None:
    if c.wild:  # "1.2", "=1.x", "*": a range, like tilde
        return _test_tilde(c, v)
    return None if v == c.version else _NOT_EQUAL


def _test_ne(c: Comparator, v: Version) -> str | None:
    con = c.version
    if c.wild and v.major != con.major:
        return None
    if c.wild == "minor":
        return _IN_EXCLUDED
    if c.wild and v.minor != con.minor:
        return None
    if c.wild == "patch":
        # Within the excluded major.minor only a differing prerelease escapes (Masterminds).
        differs = (v.prerelease or con.prerelease) and v.precedence[3:] != con.precedence[3:]
        return None if differs else _IN_EXCLUDED
    return None if v != con else _EXCLUDED


def _test_gt(c: Comparator, v: Version) -> str | None:
    con = c.version
    if c.wild in ("minor", "patch") and v.major != con.major:
        return None if v.major > con.major else _NOT_GT
    if c.wild == "minor":  # ">1" means ">=2.0.0"
        return _NOT_GT
    if c.wild == "patch":  # ">1.2" means ">=1.3.0"
        return None if v.minor > con.minor else _NOT_GT
    return None if v > con else _NOT_GT


def _test_lt(c: Comparator, v: Version) -> str | None:
    return None if v < c.version else _NOT_LT


def _test_ge(c: Comparator, v: Version) -> str | None:
    return None if v >= c.version else _LESS


def _test_le(c: Comparator, v: Version) -> str | None:
    con = c.version
    if not c.wild:
        return None if v <= con else _GREATER
    # "<=1.2" admits all of 1.2.x, "<=1" all of 1.x.x (no lower bound, like Masterminds).
    if v.major > con.major:
        return _GREATER
    too_high = v.major == con.major and v.minor > con.minor and c.wild != "minor"
    return _GREATER if too_high else None


def _test_tilde(c: Comparator, v: Version) -> str | None:
    con = c.version
    if v < con:
        return _LESS
    if c.wild in ("", "major") and (con.major, con.minor, con.patch) == (0, 0, 0):
        return None  # "~0.0.0" and "~*" admit everything (Masterminds' special case)
    if v.major != con.major:
        return _OTHER_MAJOR
    if v.minor != con.minor and c.wild != "minor":
        return _OTHER_MINOR
    return None


def _test_caret(c: Comparator, v: Version) -> str | None:
    con = c.version
    if v < con:
        return _LESS
    if c.wild == "major":
        return None  # "^*": any, as documented (see the module docstring)
    if con.major > 0 or c.wild == "minor":
        return None if v.major == con.major else _OTHER_MAJOR
    # Below 1.0.0 the minor version is the compatibility level, below 0.1.0 the patch.
    if v.major > 0:
        return _NOT_0X
    if con.minor > 0 or c.wild == "patch":
        return None if v.minor == con.minor else _OTHER_0_MINOR
    if v.minor > 0:
        return _NOT_00X
    return None if v.patch == con.patch else _NOT_ONLY


_OP_TESTS: dict[str, Callable[[Comparator, Version], str | None]] = {
    "=": _test_eq, "!=": _test_ne, ">": _test_gt, "<": _test_lt,
    ">=": _test_ge, "<=": _test_le, "~": _test_tilde, "^": _test_caret,
}


# ------------------------------------------------------------------------ constraints


@dataclass(frozen=True)
class Alternative:
    """Comparators joined by AND; one side of an ``||``."""

    comparators: tuple[Comparator, ...]
    text: str
    admits_prereleases: bool  # some comparator names a prerelease

    def admits(self, v: Version) -> bool:
        if v.prerelease and not self.admits_prereleases:
            return False
        return all(_OP_TESTS[c.op](c, v) is None for c in self.comparators)

    def failure(self, v: Version) -> str | None:
        """None when ``v`` satisfies every comparator, else the first reason it does not."""
        if v.is_prerelease and not self.admits_prereleases:
            return (f"{v} is a prerelease and {self.text.strip()!r} names none (add '-0' to a "
                    "bound, e.g. '>=1.2.3-0', to admit prereleases)")
        for comparator in self.comparators:
            why = comparator.test(v)
            if why is not None:
                return why
        return None


@dataclass(frozen=True)
class Constraint:
    """A parsed Masterminds constraint. Build it with :meth:`parse`; immutable afterwards."""

    text: str
    alternatives: tuple[Alternative, ...]

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse once; raise :class:`ConstraintError` naming the text and column at fault."""
        return _Parser(text).constraint()

    def check(self, version: Version) -> bool:
        return any(alt.admits(version) for alt in self.alternatives)

    def explain(self, version: Version) -> str:
        """A sentence saying whether ``version`` satisfies the constraint and, if not, why."""
        reasons = [alt.failure(version) for alt in self.alternatives]
        if any(r is None for r in reasons):
            return f"{version} satisfies {self.text!r}"
        if len(reasons) == 1:
            return f"{version} does not satisfy {self.text!r}: {reasons[0]}"
        each = "; ".join(f"{alt.text.strip()!r}: {r}" for alt, r in zip(
            self.alternatives, reasons, strict=True))
        return f"{version} does not satisfy {self.text!r}: {each}"

    def filter(self, items: Iterable[T], key: Callable[[T], Version]) -> Iterator[T]:
        """The items whose version (``key(item)``) satisfies the constraint, in input order."""
        return (item for item in items if self.check(key(item)))

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------- parser

# Longest operators first so ">=" is not read as ">" followed by "=1.2".
_OP_RE = re.compile(r"!=|>=|=>|<=|=<|~>|[=<>~^]")
_OP_ALIASES: dict[str, Op] = {"=>": ">=", "=<": "<=", "~>": "~"}
_PART = r"\d+|[xX*]"
_RANGE_VERSION_RE = re.compile(
    rf"v?(?P<major>{_PART})(?:\.(?P<minor>{_PART}))?(?:\.(?P<patch>{_PART}))?"
    rf"(?:-(?P<pre>{IDENTS}))?(?:\+(?P<build>{IDENTS}))?",
    re.ASCII,
)
_HYPHEN_RE = re.compile(r"\s+-\s+", re.ASCII)
_WS_RE = re.compile(r"\s*", re.ASCII)
_HINT = "write comparators such as '^1.2', '~1.4.0', '>=1.0.0 <2.0.0', '1.x' or '1.2 - 1.4'"


class _Parser:
    """A small hand-written scanner so errors can point at the exact column."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, pos: int, problem: str) -> ConstraintError:
        shown = self.text if len(self.text) <= 120 else self.text[:120] + "…"
        near = self.text[pos:pos + 12]
        at = f" at column {pos + 1} ({near!r})" if near else f" at column {pos + 1} (the end)"
        return ConstraintError(f"semver constraint {shown!r} is invalid{at}: {problem}; {_HINT}.",
                               text=self.text, column=pos + 1)

    def constraint(self) -> Constraint:
        if not isinstance(self.text, str):
            raise ConstraintError(f"a semver constraint must be text, not {type(self.text)}; "
                                  f"{_HINT}.", text=repr(self.text)[:80], column=1)
        if len(self.text) > MAX_CONSTRAINT_LEN:
            raise self.fail(MAX_CONSTRAINT_LEN, f"it is longer than {MAX_CONSTRAINT_LEN} "
                            "characters")
        bounds, start = [], 0
        for m in re.finditer(r"\|\|", self.text):
            bounds.append((start, m.start()))
            start = m.end()
        bounds.append((start, len(self.text)))
        if len(bounds) > MAX_ALTERNATIVES:
            raise self.fail(0, f"it has more than {MAX_ALTERNATIVES} '||' alternatives")
        return Constraint(self.text, tuple(self.alternative(a, b) for a, b in bounds))

    def alternative(self, start: int, end: int) -> Alternative:
        comparators: list[Comparator] = []
        pos = self.skip_ws(start, end)
        if pos == end:
            what = "an empty constraint" if (start, end) == (0, len(self.text)) else (
                "an empty alternative next to '||'")
            raise self.fail(pos, f"{what}; use '*' to accept any release")
        while True:
            pos = self.comparators(pos, end, comparators)
            gap = self.skip_ws(pos, end)
            if gap == end:
                break
            if self.text[gap] == ",":
                pos = self.skip_ws(gap + 1, end)
                if pos == end:
                    raise self.fail(pos, "expected a comparator after ','")
            elif gap == pos:
                raise self.fail(pos, "expected whitespace, ',' or '||' after a comparator")
            else:
                pos = gap
        has_pre = any(c.version.is_prerelease for c in comparators)
        return Alternative(tuple(comparators), self.text[start:end], has_pre)

    def comparators(self, pos: int, end: int, out: list[Comparator]) -> int:
        """Read one comparator, or the two of a hyphen range; return the position after."""
        op_match = _OP_RE.match(self.text, pos, end)
        op = op_match.group() if op_match else ""
        vpos = self.skip_ws(op_match.end(), end) if op_match else pos
        low, after = self.version(vpos, end)
        hyphen = _HYPHEN_RE.match(self.text, after, end)
        if hyphen and not op and _RANGE_VERSION_RE.match(self.text, hyphen.end(), end):
            high, after_high = self.version(hyphen.end(), end)
            out.append(self.comparator(">=", low, ">=" + low.group()))
            out.append(self.comparator("<=", high, "<=" + high.group()))
            return after_high
        out.append(self.comparator(op, low, self.text[pos:after]))
        return after

    def version(self, pos: int, end: int) -> tuple[re.Match[str], int]:
        m = _RANGE_VERSION_RE.match(self.text, pos, end)
        if m is None:
            raise self.fail(pos, "expected a version such as 1.2.3, 1.2, 1.x or *")
        if m["pre"] and (problem := prerelease_problem(tuple(m["pre"].split(".")))):
            raise self.fail(m.start("pre"), problem)
        for name in ("major", "minor", "patch"):
            part = m[name]
            if part is not None and part.isdigit() and int(part) > MAX_NUMBER:
                raise self.fail(m.start(name), f"the number {part[:30]} is larger than 2^64-1")
        return m, m.end()

    def comparator(self, op: str, m: re.Match[str], text: str) -> Comparator:
        wild, numbers = _wildcard(m)
        # A wildcard drops the build metadata but keeps the prerelease ("1.2.x-0" admits them).
        version = Version(*numbers, prerelease=split_idents(m["pre"]),
                          build=() if wild else split_idents(m["build"]), original=m.group())
        canonical: Op = _OP_ALIASES.get(op) or op or "="  # type: ignore[assignment]
        return Comparator(canonical, version, wild, text.strip())

    def skip_ws(self, pos: int, end: int) -> int:
        m = _WS_RE.match(self.text, pos, end)
        return m.end() if m else pos


def _wildcard(m: re.Match[str]) -> tuple[Wild, tuple[int, int, int]]:
    """Which part is wild (Masterminds: the first of major/minor/patch that is x or missing)."""
    major, minor, patch = m["major"], m["minor"], m["patch"]
    if not major.isdigit():
        return "major", (0, 0, 0)
    if minor is None or not minor.isdigit():
        return "minor", (int(major), 0, 0)
    if patch is None or not patch.isdigit():
        return "patch", (int(major), int(minor), 0)
    return "", (int(major), int(minor), int(patch))
