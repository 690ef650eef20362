"""Selection strategies over a realistic, messy tag list; determinism under any tag order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError
from image_updater.model import Strategy, TagFilter
from image_updater.policy.filters import FilterError
from image_updater.policy.semver import ConstraintError
from image_updater.policy.strategies import (
    Selection,
    StrategyError,
    compile_strategy,
    needs_tag_list,
    select,
)

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
    (Strategy(kind="semver", constraint="^1.2"), "v1.9.0", "v1.9.0", "never moves backwards"),
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


#: Strategies that cannot work, and what the error must say.
BAD: list[tuple[Strategy, type[Exception], str]] = [
    (Strategy(kind="digest"), StrategyError, "needs 'tag'"),
    (Strategy(kind="digest", tag="-bad"), StrategyError, "is not a valid tag"),
    (Strategy(kind="semver", constraint=">= one"), ConstraintError, "column 4"),
    (Strategy(kind="alphabetical", filter=TagFilter(allow="(")), FilterError, "allow"),
    (Strategy(kind="numerical", order="up"), StrategyError,  # type: ignore[arg-type]
     "unknown order 'up'"),
    (Strategy(kind="random"), StrategyError, "unknown strategy"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("strategy", "error", "message"), BAD)
def test_bad_strategy(strategy: Strategy, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        compile_strategy(strategy)
    assert isinstance(info.value, ConfigError)


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
