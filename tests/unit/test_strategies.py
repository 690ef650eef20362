"""Selection strategies over a realistic, messy tag list; determinism under any tag order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError
from image_updater.model import STRATEGIES, Strategy, TagFilter
from image_updater.policy.strategies import (
    Selection,
    StrategyError,
    compile_strategy,
    needs_tag_list,
    select,
)

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
SIG = "sha256-" + "0f" * 32 + ".sig"
LONG = "build-" + "9" * 122  # 128 characters: the longest valid tag

#: What a real repository lists: releases, prereleases, v prefixes, mutable tags,
#: cosign artefacts, CI tags, and junk a hostile or broken registry might return.
TAGS: list[str] = [
    "1.0.0", "v1.2.0", "1.2.3", "v1.4.0", "1.4.0-rc.1", "1.5.0-rc.1", "1.5.0-rc.10",
    "1.5.0-rc.9", "2.0.0", "2.1.0-beta", "0.9.1", "1.3", "latest", "dev", "staging",
    "main-101-abc1234", "main-99-def5678", "pr-7-aaaaaaa", "20240131", "42", "7", "3.5",
    SIG, "sha256-" + "0f" * 32 + ".att", "..", "-x", "a" * 200, LONG, "1.2.3.4", "01.2.3",
]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CREATED = {
    "1.0.0": T0, "v1.4.0": T0 + timedelta(days=3), "dev": T0 + timedelta(days=9),
    "main-101-abc1234": T0 + timedelta(days=8), "staging": T0 + timedelta(days=8),
    SIG: T0 + timedelta(days=30),  # a newer signature is still no image
    "latest": datetime(2024, 5, 5, 12, 0),  # naive: treated as UTC
    "2.0.0": "yesterday",  # not a timestamp: dropped, no crash
}

#: (strategy, current, expected tag, text the reason contains)
CASES: list[tuple[Strategy, str | None, str | None, str]] = [
    # semver: highest satisfying version; junk, prereleases and other majors dropped
    (Strategy(kind="semver", constraint="^1.2"), None, "v1.4.0",
     "the highest version matching ^1.2 is v1.4.0 (30 tags considered, 25 ignored)"),
    (Strategy(kind="semver", constraint="~1.2"), None, "1.2.3", "matching ~1.2 is 1.2.3"),
    (Strategy(kind="semver", constraint=">=1.5.0-0 <2"), None, "1.5.0-rc.10", "1.5.0-rc.10"),
    (Strategy(kind="semver", constraint="^2.1.0-0"), None, "2.1.0-beta", "2.1.0-beta"),
    (Strategy(kind="semver"), None, "20240131", "matching * is 20240131"),  # a date is 20240131.0.0
    (Strategy(kind="semver", constraint="<2", strict=True), None, "v1.4.0", "v1.4.0"),
    (Strategy(kind="semver", constraint="1.3"), None, "1.3", "matching 1.3 is 1.3"),
    (Strategy(kind="semver", constraint="1.3", strict=True), None, None, "no tag qualifies"),
    (Strategy(kind="semver", constraint="^3"), None, "3.5", "matching ^3 is 3.5"),  # 3.5.0
    (Strategy(kind="semver", constraint="^4"), None, None,
     "no tag qualifies as the highest version matching ^4 (30 tags considered, 30 ignored)"),
    (Strategy(kind="semver", constraint="^0.9"), None, "0.9.1", "0.9.1"),
    (Strategy(kind="semver", constraint=">=1 <3",
              filter=TagFilter(extract=r"^main-(?P<value>\d+)-")), None, None, "no tag"),
    (Strategy(kind="semver", constraint=">=100",
              filter=TagFilter(extract=r"^main-(?P<value>\d+)-")), None, "main-101-abc1234",
     "main-101-abc1234"),
    # never backwards: a higher current version is kept, a lower one is left
    (Strategy(kind="semver", constraint="^1.2"), "2.0.0", "2.0.0",
     "keeps 2.0.0: it is higher than v1.4.0, the highest version matching ^1.2"),
    (Strategy(kind="semver", constraint="^1.2"), "v1.9.0", "v1.9.0",
     "never moves an environment backwards"),
    # ... reading the current tag through extract, as candidates are read
    (Strategy(kind="semver", filter=TagFilter(extract=r"^main-(?P<value>\d+)-")),
     "main-200-fff0000", "main-200-fff0000", "keeps main-200-fff0000: it is higher than "
     "main-101-abc1234"),
    (Strategy(kind="semver", filter=TagFilter(extract=r"^main-(?P<value>\d+)-")),
     "main-100-fff0000", "main-101-abc1234", "is main-101-abc1234"),
    (Strategy(kind="semver", constraint="^1.2"), "1.2.3", "v1.4.0", "is v1.4.0"),
    (Strategy(kind="semver", constraint="^1.2"), "1.4.0-rc.1", "v1.4.0", "is v1.4.0"),
    (Strategy(kind="semver", constraint="^1.2"), "latest", "v1.4.0", "is v1.4.0"),
    (Strategy(kind="semver", constraint="^1.2"), "v1.4.0", "v1.4.0", "is v1.4.0"),
    (Strategy(kind="semver", constraint="^4"), "9.9.9", None, "no tag qualifies"),
    # alphabetical: byte order; asc picks the last, desc the first
    (Strategy(kind="alphabetical"), None, "v1.4.0",
     "the alphabetically last tag is v1.4.0 (30 tags considered, 5 ignored)"),
    (Strategy(kind="alphabetical", order="desc"), None, "0.9.1", "alphabetically first"),
    (Strategy(kind="alphabetical", filter=TagFilter(allow=r"main-.*")), None,
     "main-99-def5678", "main-99-def5678"),  # "9" > "1": alphabetical is not numerical
    (Strategy(kind="alphabetical", filter=TagFilter(allow=r"nothing")), None, None,
     "no tag qualifies as the alphabetically last tag"),
    # numerical: numbers only; extract turns CI tags into numbers
    (Strategy(kind="numerical"), None, "20240131", "the highest number is 20240131"),
    (Strategy(kind="numerical", order="desc"), None, "1.3", "the lowest number is 1.3"),
    (Strategy(kind="numerical", filter=TagFilter(extract=r"^main-(?P<value>\d+)-")), None,
     "main-101-abc1234", "main-101-abc1234"),
    (Strategy(kind="numerical", order="desc",
              filter=TagFilter(extract=r"^main-(?P<value>\d+)-")), None, "main-99-def5678",
     "lowest number"),
    # newest-build: creation times decide; missing or bogus times drop the tag
    (Strategy(kind="newest-build"), None, "dev",
     "the newest build is dev, created 2024-05-10T12:00:00+00:00 (30 tags considered, 24 "
     "ignored)"),
    (Strategy(kind="newest-build", filter=TagFilter(ignore=("dev", "*.sig"))), None,
     "staging", "staging"),  # ties with main-101-abc1234: the later name wins
    (Strategy(kind="newest-build", filter=TagFilter(ignore=("dev",))), None, SIG,
     "newest build is sha256-"),  # ignore replaces the defaults, signatures included
    (Strategy(kind="newest-build", filter=TagFilter(allow=r"\d.*")), None, "1.0.0",
     "1.0.0"),  # 2.0.0 has a bogus time, v1.4.0 is not allowed
    # digest: the followed tag, if listed
    (Strategy(kind="digest", tag="dev"), None, "dev", "follows tag dev"),
    (Strategy(kind="digest", tag="prod"), None, None, "tag prod is not among the 30 listed"),
]


@pytest.mark.parametrize(("strategy", "current", "expected", "reason"), CASES)
def test_select(strategy: Strategy, current: str | None, expected: str | None,
                reason: str) -> None:
    selection = select(strategy, TAGS, created=CREATED, current=current)
    assert selection.tag == expected, selection.reason
    assert reason in selection.reason


@pytest.mark.parametrize(("strategy", "current", "expected", "reason"), CASES)
def test_considered_accounts_for_every_tag(strategy: Strategy, current: str | None,
                                          expected: str | None, reason: str) -> None:
    selection = select(strategy, TAGS + TAGS[:5], created=CREATED, current=current)
    assert len(selection.considered) == len(set(TAGS))  # duplicates merged
    assert all(v.why for v in selection.considered)
    kept = [v.kept for v in selection.considered]
    assert kept == sorted(kept, reverse=True)  # candidates first
    if selection.tag is not None and selection.tag != current:
        assert selection.considered[0].tag == selection.tag


def test_verdicts_say_why() -> None:
    selection = select(Strategy(kind="semver", constraint="^1.2"), TAGS)
    why = {v.tag: v for v in selection.considered}
    assert why["v1.4.0"].kept and why["v1.4.0"].sort_key == "1.4.0"
    assert why["1.5.0-rc.1"].why == "1.5.0-rc.1 does not satisfy ^1.2"
    assert why["latest"].why.startswith("'latest' is not a semantic version")
    assert why[SIG].why == "ignored by '*.sig'"
    assert why[".."].why.startswith("not a valid tag")
    assert why["2.0.0"].why == "2.0.0 does not satisfy ^1.2"
    assert why["a" * 80 + "…"].why.startswith("not a valid tag")  # long junk shown short


def test_numerical_ties_and_exactness() -> None:
    tags = ["1.10", "1.1", "10", "9", "18446744073709551617", "18446744073709551616"]
    assert select(Strategy(kind="numerical"), tags).tag == "18446744073709551617"
    low = select(Strategy(kind="numerical", order="desc"), ["1.10", "1.1", "2"])
    assert low.tag == "1.1"  # 1.10 == 1.1: the tie goes to the first name for desc
    high = select(Strategy(kind="numerical"), ["1.10", "1.1"])
    assert high.tag == "1.10"  # and to the last name for asc


def test_newest_build_without_times() -> None:
    selection = select(Strategy(kind="newest-build"), ["a", "b"])
    assert selection.tag is None
    assert {v.why for v in selection.considered} == {"its creation time is unknown"}


def test_newest_build_compares_across_time_zones() -> None:
    east = timezone(timedelta(hours=9))
    created = {"tokyo": datetime(2024, 5, 2, 8, 0, tzinfo=east),  # 2024-05-01T23:00Z
               "utc": datetime(2024, 5, 1, 22, 0, tzinfo=UTC)}
    assert select(Strategy(kind="newest-build"), ["tokyo", "utc"], created=created).tag == (
        "tokyo")


def test_needs_tag_list() -> None:
    assert needs_tag_list(Strategy(kind="digest", tag="dev")) is False
    for kind in ("semver", "alphabetical", "numerical", "newest-build"):
        assert needs_tag_list(Strategy(kind=kind)) is True  # type: ignore[arg-type]


#: Strategies that cannot work, the policy field at fault, and what the error must say.
BAD: list[tuple[Strategy, str, str]] = [
    (Strategy(kind="digest"), "tag", "needs 'tag'"),
    (Strategy(kind="digest", tag="-bad"), "tag", "is not a valid tag"),
    (Strategy(kind="semver", constraint=">= one"), "constraint", "'>= one' is invalid at column 4"),
    (Strategy(kind="alphabetical", filter=TagFilter(allow="(")), "allow", "regex '\\(' does"),
    (Strategy(kind="numerical", filter=TagFilter(ignore=("",))), "ignore", "empty entry"),
    (Strategy(kind="numerical", filter=TagFilter(extract="(x)")), "extract", "named group"),
    (Strategy(kind="numerical", order="up"), "order",  # type: ignore[arg-type]
     "unknown order 'up'"),
    (Strategy(kind="random"), "strategy", "unknown strategy"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("strategy", "field", "message"), BAD)
def test_bad_strategy(strategy: Strategy, field: str, message: str) -> None:
    """One compile reports the field at fault and quotes the offending text."""
    with pytest.raises(StrategyError, match=message) as info:
        compile_strategy(strategy)
    assert isinstance(info.value, ConfigError)
    assert info.value.problems[0][0] == field == info.value.field


def test_compile_reports_every_part_that_fails_at_once() -> None:
    bad = Strategy(kind="semver", constraint="^1.x.y", order="sideways",  # type: ignore[arg-type]
                   filter=TagFilter(allow="("))
    with pytest.raises(StrategyError) as info:
        compile_strategy(bad)
    assert [field for field, _ in info.value.problems] == ["order", "constraint", "allow"]
    assert "'^1.x.y'" in str(info.value) and "'sideways'" in str(info.value)


def test_every_strategy_name_has_a_picker_and_docs() -> None:
    """model.STRATEGIES is the one list: the compiler, the CLI and the docs follow it."""
    from image_updater.cli import build_parser
    from image_updater.policy import strategies

    for kind in STRATEGIES:
        compile_strategy(Strategy(kind=kind, tag="dev"))  # type: ignore[arg-type]
        assert f"\n{kind} " in strategies.__doc__ or "", kind
        assert f"`{kind}`" in README, kind
    check = build_parser()._subparsers._group_actions[0].choices["check"]  # type: ignore[union-attr]
    choices = next(a.choices for a in check._actions if a.dest == "strategy")
    assert tuple(choices) == STRATEGIES


def test_compiled_strategy_is_reusable() -> None:
    compiled = compile_strategy(Strategy(kind="semver", constraint="^1"))
    assert compiled.select(["1.0.0", "1.1.0"]).tag == "1.1.0"
    assert compiled.select(["1.0.0"]).tag == "1.0.0"


_STRATEGIES = [case[0] for case in CASES]


@given(st.sampled_from(_STRATEGIES), st.permutations(TAGS), st.lists(st.sampled_from(TAGS)),
       st.sampled_from([None, "2.0.0", "1.2.3", "latest"]))
def test_any_tag_order_gives_the_same_selection(strategy: Strategy, shuffled: list[str],
                                                extra: list[str], current: str | None) -> None:
    expected = select(strategy, TAGS, created=CREATED, current=current)
    got = select(strategy, shuffled + extra, created=CREATED, current=current)
    assert isinstance(got, Selection)
    assert got == expected
