"""Tag selection strategies: one pure function per strategy behind one interface.

``select(strategy, tags, created=..., current=...)`` returns a :class:`Selection`: the chosen
tag (or None), a reason readable in logs and commit messages, and a verdict for every tag.

=============  =========================================================================
digest         the tag named by ``strategy.tag``, if listed (the engine usually skips the
               listing: see :func:`needs_tag_list`)
semver         the highest version satisfying ``strategy.constraint`` (default ``*``);
               tags that are not versions are dropped. Never moves backwards: a higher
               ``current`` version is kept.
alphabetical   ``order: asc`` picks the last tag in byte order, ``desc`` the first
numerical      the same over numbers; tags that are not numbers are dropped
newest-build   the most recently created image; tags without a creation time are dropped
=============  =========================================================================

The filter (:mod:`image_updater.policy.filters`) runs first for every strategy but digest,
and its ``extract`` value is what semver, alphabetical and numerical sort on. Ties (equal
sort values from different tags) go to the tag that sorts last by name (first for
``desc``), and duplicates are merged, so the result never depends on the input order.
Pure: no I/O, clock or logging; ``created`` times are passed in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from image_updater.errors import ConfigError, ImageUpdaterError
from image_updater.model import STRATEGIES, Strategy
from image_updater.policy.constraint import Constraint
from image_updater.policy.filters import (
    CompiledFilter,
    FilterError,
    TagVerdict,
    compile_filter,
    shown,
)
from image_updater.policy.version import InvalidVersionError, Version
from image_updater.registry.base import check_tag

_T = TypeVar("_T")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)


class StrategyError(ConfigError, ValueError):
    """A strategy does not compile: incomplete, inconsistent or with a part that does not parse.

    ``problems`` holds one ``(field, message)`` per policy field at fault ("strategy", "tag",
    "order", "constraint", "allow", "ignore", "extract"), so a loader can point at each.
    """

    def __init__(self, message: str, *, field: str = "strategy",
                 problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.problems = problems or ((field, message),)


@dataclass(frozen=True)
class Selection:
    """The outcome of one strategy over one tag list. Equal inputs give equal selections."""

    tag: str | None
    reason: str
    considered: tuple[TagVerdict, ...]  # candidates best first, then dropped tags by name


@dataclass(frozen=True)
class CompiledStrategy:
    """A strategy with its filter and constraint parsed once; select() as often as needed."""

    strategy: Strategy
    filter: CompiledFilter
    constraint: Constraint | None = None

    def select(self, tags: Sequence[str], *, created: Mapping[str, datetime] | None = None,
               current: str | None = None) -> Selection:
        unique = sorted({t for t in tags if isinstance(t, str)})
        return _PICKERS[self.strategy.kind](self, _Input(unique, created, current))

    def held_back(self, current: str | None, best: str) -> str | None:
        """Why an environment keeps ``current`` (the tag git holds) instead of ``best``.

        The one "never backwards" rule: a semver policy keeps a current tag whose version
        is higher than the best candidate's. Both are read the way candidates are, through
        the filter's ``extract``. None when ``best`` may be written.
        """
        if self.strategy.kind != "semver" or not current or current == best:
            return None
        held, chosen = self._version(current), self._version(best)
        if held is None or chosen is None or held.precedence <= chosen.precedence:
            return None
        return (f"keeps {current}: it is higher than {best}, the highest version matching "
                f"{self.constraint}, and a semver policy never moves an environment backwards")

    def _version(self, tag: str) -> Version | None:
        verdict = self.filter.verdict(tag)
        try:
            return Version.parse(verdict.sort_key if verdict.kept else tag,
                                 strict=self.strategy.strict)
        except InvalidVersionError:
            return None


def needs_tag_list(strategy: Strategy) -> bool:
    """Whether the engine must list the repository's tags (digest follows one known tag)."""
    return strategy.kind != "digest"


def compile_strategy(strategy: Strategy) -> CompiledStrategy:
    """Validate and compile ``strategy`` once, like Flux's policer factory.

    Every part is compiled (kind, followed tag, order, constraint, filter) and every part
    that fails is reported in one :class:`StrategyError`, each message quoting the
    offending text; the policy loader turns them into file:line:column problems.
    """
    problems: list[tuple[str, str]] = []

    def attempt(field: str, build: Callable[[], _T]) -> _T | None:
        try:
            return build()
        except StrategyError as exc:
            problems.extend(exc.problems)
        except FilterError as exc:
            problems.append((exc.field, str(exc)))
        except ConfigError as exc:  # ConstraintError
            problems.append((field, str(exc)))
        return None

    attempt("strategy", lambda: _check_kind(strategy))
    if strategy.kind == "digest":
        attempt("tag", lambda: _check_followed_tag(strategy.tag))
    attempt("order", lambda: _check_order(strategy))
    constraint = None
    if strategy.kind == "semver":
        constraint = attempt("constraint", lambda: Constraint.parse(strategy.constraint or "*"))
    compiled_filter = attempt("filter", lambda: compile_filter(strategy.filter))
    if problems or compiled_filter is None:
        raise StrategyError(" ".join(message for _, message in problems),
                            field=problems[0][0], problems=tuple(problems))
    return CompiledStrategy(strategy, compiled_filter, constraint)


@functools.lru_cache(maxsize=1 << 16)  # one per distinct strategy; 30,000 envs may hold many
def compiled(strategy: Strategy) -> CompiledStrategy:
    """:func:`compile_strategy`, remembered: the same few policies are compiled every cycle."""
    return compile_strategy(strategy)


def select(strategy: Strategy, tags: Sequence[str], *,
           created: Mapping[str, datetime] | None = None,
           current: str | None = None) -> Selection:
    """Choose a tag from ``tags`` (untrusted registry output) as ``strategy`` says."""
    return compiled(strategy).select(tags, created=created, current=current)


# ------------------------------------------------------------------------ internals


@dataclass(frozen=True)
class _Input:
    tags: list[str]  # unique, sorted
    created: Mapping[str, Any] | None
    current: str | None


class _Candidate(NamedTuple):
    rank: Any  # what the strategy orders by: Version precedence, Decimal, datetime, str
    tag: str
    why: str
    sort_key: str


#: A strategy's opinion of one filtered tag: a candidate, or why it is dropped.
_Judge = Callable[[TagVerdict], "_Candidate | str"]


def _check_kind(strategy: Strategy) -> None:
    if strategy.kind not in _PICKERS:
        raise StrategyError(f"unknown strategy {strategy.kind!r}; use one of "
                            f"{', '.join(STRATEGIES)}.", field="strategy")


def _check_order(strategy: Strategy) -> None:
    if strategy.order not in ("asc", "desc"):
        raise StrategyError(f"unknown order {strategy.order!r}; use 'asc' (pick the highest) "
                            "or 'desc' (pick the lowest).", field="order")


def _check_followed_tag(tag: str | None) -> None:
    if not tag:
        raise StrategyError("the digest strategy needs 'tag', the mutable tag to follow "
                            "(e.g. tag: dev).", field="tag")
    try:
        check_tag(tag, what="the digest strategy's tag")
    except ImageUpdaterError as exc:
        raise StrategyError(str(exc), field="tag") from exc


def _rank(cs: CompiledStrategy, inp: _Input, judge: _Judge, *, highest: bool
          ) -> tuple[list[_Candidate], list[TagVerdict]]:
    """Filter and judge every tag; candidates best first, dropped verdicts by tag."""
    candidates: list[_Candidate] = []
    dropped: list[TagVerdict] = []
    for verdict in cs.filter.apply(inp.tags):
        outcome = judge(verdict) if verdict.kept else verdict.why
        if isinstance(outcome, _Candidate):
            candidates.append(outcome)
        else:
            dropped.append(TagVerdict(verdict.tag, False, outcome, verdict.sort_key))
    candidates.sort(key=lambda c: (c.rank, c.tag), reverse=highest)
    return candidates, dropped


def _considered(candidates: list[_Candidate], dropped: list[TagVerdict]
                ) -> tuple[TagVerdict, ...]:
    kept = [TagVerdict(c.tag, True, c.why, c.sort_key) for c in candidates]
    return tuple(kept) + tuple(dropped)


def _counts(total: int, kept: int) -> str:
    noun = "tag" if total == 1 else "tags"
    return f"({total} {noun} considered, {total - kept} ignored)"


def _outcome(what: str, candidates: list[_Candidate], dropped: list[TagVerdict],
             describe: Callable[[_Candidate], str]) -> Selection:
    counts = _counts(len(candidates) + len(dropped), len(candidates))
    considered = _considered(candidates, dropped)
    if not candidates:
        return Selection(None, f"no tag qualifies as {what} {counts}", considered)
    best = candidates[0]
    return Selection(best.tag, f"{what} is {describe(best)} {counts}", considered)


# ---------------------------------------------------------------------- strategies


def _digest(cs: CompiledStrategy, inp: _Input) -> Selection:
    followed = cs.strategy.tag or ""
    others = tuple(TagVerdict(shown(t), False, f"not the followed tag {followed}")
                   for t in inp.tags if t != followed)
    verdicts = (TagVerdict(followed, True, "the followed tag", followed), *others)
    if len(others) < len(inp.tags):
        return Selection(followed, f"follows tag {followed}", verdicts)
    return Selection(None, f"tag {followed} is not among the {len(inp.tags)} listed tags",
                     others)


def _semver(cs: CompiledStrategy, inp: _Input) -> Selection:
    constraint = cs.constraint or Constraint.parse("*")  # compile_strategy always sets it
    strict = cs.strategy.strict

    def judge(verdict: TagVerdict) -> _Candidate | str:
        try:
            version = Version.parse(verdict.sort_key, strict=strict)
        except InvalidVersionError as exc:
            return str(exc).removesuffix(".")
        if not constraint.check(version):
            return f"{version} does not satisfy {constraint}"
        return _Candidate(version.precedence, verdict.tag, f"{version} satisfies {constraint}",
                          str(version))

    candidates, dropped = _rank(cs, inp, judge, highest=True)
    what = f"the highest version matching {constraint}"
    chosen = _outcome(what, candidates, dropped, lambda c: c.tag)
    held = cs.held_back(inp.current, chosen.tag) if chosen.tag else None
    if held is None:
        return chosen
    counts = _counts(len(chosen.considered), len(candidates))
    return Selection(inp.current, f"{held} {counts}", chosen.considered)


def _alphabetical(cs: CompiledStrategy, inp: _Input) -> Selection:
    def judge(verdict: TagVerdict) -> _Candidate:
        return _Candidate(verdict.sort_key, verdict.tag, verdict.why, verdict.sort_key)

    candidates, dropped = _rank(cs, inp, judge, highest=cs.strategy.order == "asc")
    which = "last" if cs.strategy.order == "asc" else "first"
    return _outcome(f"the alphabetically {which} tag", candidates, dropped, lambda c: c.tag)


def _numerical(cs: CompiledStrategy, inp: _Input) -> Selection:
    def judge(verdict: TagVerdict) -> _Candidate | str:
        text = verdict.sort_key
        if len(text) > 64 or _NUMBER_RE.fullmatch(text) is None:
            return f"{text!r} is not a number"
        number = Decimal(text)  # exact: 1.10 and 1.1 are equal, big build numbers stay exact
        return _Candidate(number, verdict.tag, f"is the number {text}", text)

    candidates, dropped = _rank(cs, inp, judge, highest=cs.strategy.order == "asc")
    which = "highest" if cs.strategy.order == "asc" else "lowest"
    return _outcome(f"the {which} number", candidates, dropped, lambda c: c.tag)


def _newest_build(cs: CompiledStrategy, inp: _Input) -> Selection:
    created = inp.created or {}

    def judge(verdict: TagVerdict) -> _Candidate | str:
        when = created.get(verdict.tag)
        if when is None:
            return "its creation time is unknown"
        if not isinstance(when, datetime):
            return f"its creation time is not a timestamp ({type(when).__name__})"
        if when.tzinfo is None:  # registries report UTC; a naive time must not crash sorting
            when = when.replace(tzinfo=UTC)
        stamp = when.astimezone(UTC).isoformat()
        return _Candidate(when, verdict.tag, f"created {stamp}", stamp)

    candidates, dropped = _rank(cs, inp, judge, highest=True)  # "order" does not apply
    return _outcome("the newest build", candidates, dropped,
                    lambda c: f"{c.tag}, created {c.sort_key}")


_PICKERS: dict[str, Callable[[CompiledStrategy, _Input], Selection]] = {
    "digest": _digest,
    "semver": _semver,
    "alphabetical": _alphabetical,
    "numerical": _numerical,
    "newest-build": _newest_build,
}
