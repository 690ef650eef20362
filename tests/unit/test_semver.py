"""Versions: parsing, coercion, precedence and the ordering laws (Hypothesis)."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError, InvalidReferenceError
from image_updater.policy.constraint import Constraint, ConstraintError
from image_updater.policy.version import InvalidVersionError, Version

#: (text, strict, canonical form)
VALID_VERSIONS: list[tuple[str, bool, str]] = [
    ("1.2.3", False, "1.2.3"),
    ("1.2.3", True, "1.2.3"),
    ("v1.2.3", False, "1.2.3"),
    ("v1.2.3", True, "1.2.3"),  # the v prefix is fine even in strict mode
    ("1", False, "1.0.0"),
    ("1.2", False, "1.2.0"),
    ("v2", False, "2.0.0"),
    ("01.02.03", False, "1.2.3"),  # leading zeros are coerced away, like Masterminds
    ("1.2.3-beta.1+build345", False, "1.2.3-beta.1+build345"),
    ("1.2.3-beta.1+build345", True, "1.2.3-beta.1+build345"),
    ("1.2-rc.1", False, "1.2.0-rc.1"),
    ("1.0.0-x-y-z.--", True, "1.0.0-x-y-z.--"),
    ("1.0.0+21AF26D3----117B344092BD", True, "1.0.0+21AF26D3----117B344092BD"),
    ("1.2.3+build.01", True, "1.2.3+build.01"),  # leading zeros are fine in build metadata
    ("1.2.3-0a", True, "1.2.3-0a"),  # alphanumeric, so not a numeric identifier
    ("20240131", False, "20240131.0.0"),
    ("18446744073709551615.0.0", True, "18446744073709551615.0.0"),
]

#: (text, strict)
INVALID_VERSIONS: list[tuple[str, bool]] = [
    ("", False),
    ("latest", False),
    ("dev", False),
    ("..", False),
    ("1.2.3.4", False),
    ("1.2.", False),
    (".1.2", False),
    ("V1.2.3", False),
    ("vv1.2.3", False),
    ("1.2.3-", False),
    ("1.2.3+", False),
    ("1.2.3-01", False),  # numeric prerelease identifiers have no leading zero
    ("1.2.3-beta..1", False),
    ("1.2.3_build", False),
    ("1.x", False),
    ("-1.2.3", False),
    ("1.2", True),
    ("1", True),
    ("01.2.3", True),
    ("1.02.3", True),
    ("18446744073709551616.0.0", False),  # beyond uint64
    ("sha256-" + "a" * 64 + ".sig", False),
    ("1" * 300, False),
    ("\u0661.\u0662.\u0663", False),  # Arabic-Indic digits
]

#: Strictly increasing precedence (semver 2.0 section 11 and the README sort example).
ASCENDING: list[list[str]] = [
    ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
     "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"],
    ["1.0.0", "2.0.0", "2.1.0", "2.1.1"],
    ["1.0.0-rc.9", "1.0.0-rc.10", "1.0.0-rc.100"],
    ["0.4.2", "1.0", "1.2.3", "1.3", "2"],
    ["1.2.3-1", "1.2.3-2", "1.2.3-10", "1.2.3-a", "1.2.3-a.1", "1.2.3"],
    ["1.2.3-BETA", "1.2.3-alpha"],  # ASCII order: upper case first
    ["1.2.3-rc.1", "1.2.3-rc.1.0"],  # more fields sort after fewer
]


@pytest.mark.parametrize(("text", "strict", "canonical"), VALID_VERSIONS)
def test_parse_valid(text: str, strict: bool, canonical: str) -> None:
    v = Version.parse(text, strict=strict)
    assert str(v) == canonical
    assert v.original == text


@pytest.mark.parametrize(("text", "strict"), INVALID_VERSIONS)
def test_parse_invalid(text: str, strict: bool) -> None:
    with pytest.raises(InvalidVersionError) as info:
        Version.parse(text, strict=strict)
    message = str(info.value)
    assert "is not a semantic version" in message
    assert len(message) < 300  # a very long tag is not echoed in full
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidReferenceError)


def test_strict_message_says_what_to_write() -> None:
    with pytest.raises(InvalidVersionError, match=r"strict mode needs all of MAJOR.MINOR.PATCH"):
        Version.parse("1.2", strict=True)


@pytest.mark.parametrize("chain", ASCENDING)
def test_precedence(chain: list[str]) -> None:
    versions = [Version.parse(t) for t in chain]
    for lower, higher in itertools.pairwise(versions):
        assert lower < higher and higher > lower
        assert lower.compare(higher) == -1 and higher.compare(lower) == 1
    shuffled = versions[:]
    random.Random(7).shuffle(shuffled)
    assert [v.original for v in sorted(shuffled, key=lambda v: v.sort_key)] == chain


def test_build_metadata_ignored_but_sorting_is_deterministic() -> None:
    a, b, c = Version.parse("1.0.0+b"), Version.parse("1.0.0+a"), Version.parse("v1.0.0")
    assert a == b == c and hash(a) == hash(b) and a.compare(b) == 0
    ordered = [v.original for v in sorted([a, b, c], key=lambda v: v.sort_key)]
    assert ordered == ["1.0.0+a", "1.0.0+b", "v1.0.0"]  # ties broken by the original text


def test_version_is_immutable() -> None:
    v = Version.parse("1.2.3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.major = 2  # type: ignore[misc]


def test_constraint_is_immutable_and_keeps_text() -> None:
    c = Constraint.parse(" ^1.2 ")
    assert str(c) == " ^1.2 "
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.text = "*"  # type: ignore[misc]


def test_constraint_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Constraint.parse(">= nope")


def test_overlong_constraint_is_refused_without_echoing_it() -> None:
    text = ">=1.0.0 " * 100
    with pytest.raises(ConstraintError, match="longer than 512") as info:
        Constraint.parse(text)
    assert len(str(info.value)) < 400


def test_too_many_alternatives() -> None:
    with pytest.raises(ConstraintError, match="more than 32"):
        Constraint.parse(" || ".join(["1"] * 33))


def test_explain_names_every_alternative_and_the_prerelease_rule() -> None:
    c = Constraint.parse(">=1.1, <2 || > 3")
    why = c.explain(Version.parse("3.0.0"))
    assert why == ("3.0.0 does not satisfy '>=1.1, <2 || > 3': '>=1.1, <2': 3.0.0 is not less "
                   "than 2; '> 3': 3.0.0 is not greater than 3")
    pre = Constraint.parse(">=1.2").explain(Version.parse("1.3.0-beta"))
    assert "is a prerelease" in pre and "'-0'" in pre
    assert Constraint.parse("^1.2").explain(Version.parse("1.4.0")) == "1.4.0 satisfies '^1.2'"


def test_filter_keeps_input_order() -> None:
    tags = ["1.5.0", "0.9.0", "1.2.0", "2.0.0", "1.4.9"]
    kept = Constraint.parse("^1.2").filter(tags, key=Version.parse)
    assert list(kept) == ["1.5.0", "1.2.0", "1.4.9"]


# --------------------------------------------------------------------- Hypothesis

_numbers = st.integers(min_value=0, max_value=50)
_ident = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    st.text(alphabet="abcXYZ-", min_size=1, max_size=4),
    st.text(alphabet="0123456789abz-", min_size=1, max_size=4).filter(
        lambda s: not (s.isdigit() and len(s) > 1 and s[0] == "0")),
)
_idents = st.lists(_ident, min_size=1, max_size=3).map(".".join)


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    text = ".".join(str(draw(_numbers)) for _ in range(3))
    if draw(st.booleans()):
        text = "v" + text
    if draw(st.booleans()):
        text += "-" + draw(_idents)
    if draw(st.booleans()):
        text += "+" + draw(_idents)
    return text


versions = version_texts().map(Version.parse)


@given(versions, versions)
def test_antisymmetry_and_totality(a: Version, b: Version) -> None:
    assert (a <= b) or (b <= a)
    if a <= b and b <= a:
        assert a == b and a.compare(b) == 0
    assert a.compare(b) == -b.compare(a)
    if a.sort_key == b.sort_key:
        assert a.original == b.original


@given(versions, versions, versions)
def test_transitivity(a: Version, b: Version, c: Version) -> None:
    x, y, z = sorted([a, b, c], key=lambda v: v.sort_key)
    assert x <= y <= z and x <= z
    if a < b and b < c:
        assert a < c


@given(versions)
def test_prerelease_sorts_before_its_release(v: Version) -> None:
    release = Version(v.major, v.minor, v.patch)
    if v.is_prerelease:
        assert v < release
    else:
        assert v == release


@given(version_texts(), _idents)
def test_build_metadata_is_ignored(text: str, build: str) -> None:
    plain = Version.parse(text.split("+")[0])
    built = Version.parse(text.split("+")[0] + "+" + build)
    assert plain == built and plain.compare(built) == 0
    c = Constraint.parse(f"={plain}")
    assert c.check(plain) == c.check(built)


@given(versions)
def test_round_trip(v: Version) -> None:
    again = Version.parse(str(v))
    assert again == v
    assert str(again) == str(v)
    assert again.build == v.build and again.prerelease == v.prerelease


@given(versions)
def test_strict_accepts_every_full_version(v: Version) -> None:
    assert Version.parse(str(v), strict=True) == v
