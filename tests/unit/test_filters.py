"""Tag filters: validity, ignore (globs and /regexes/), allow, extract, and compile errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError
from image_updater.model import TagFilter
from image_updater.policy.filters import FilterError, TagVerdict, compile_filter

SIG = "sha256-" + "ab" * 32 + ".sig"

#: (filter, tag, kept, why contains, sort key)
CASES: list[tuple[TagFilter, str, bool, str, str]] = [
    # defaults: every valid tag but cosign's signatures, attestations and SBOMs
    (TagFilter(), "v1.2.3", True, "passes", "v1.2.3"),
    (TagFilter(), "latest", True, "passes", "latest"),
    (TagFilter(), SIG, False, "ignored by '*.sig'", ""),
    (TagFilter(), "sha256-" + "ab" * 32 + ".att", False, "ignored by '*.att'", ""),
    (TagFilter(), "sha256-" + "ab" * 32 + ".sbom", False, "ignored by '*.sbom'", ""),
    (TagFilter(), "signature", True, "passes", "signature"),  # globs match the whole tag
    # untrusted input that is no tag at all
    (TagFilter(), "..", False, "not a valid tag", ""),
    (TagFilter(), "-rc", False, "not a valid tag", ""),
    (TagFilter(), "", False, "not a valid tag", ""),
    (TagFilter(), "a b", False, "not a valid tag", ""),
    (TagFilter(), "a" * 129, False, "not a valid tag", ""),
    (TagFilter(), "a" * 128, True, "passes", "a" * 128),
    # ignore: globs and /regexes/ (found anywhere unless anchored)
    (TagFilter(ignore=("*-debug",)), "1.2.3-debug", False, "ignored by '*-debug'", ""),
    (TagFilter(ignore=("*-debug",)), SIG, True, "passes", SIG),  # replaces the defaults
    (TagFilter(ignore=("/-rc/",)), "1.2.3-rc.1", False, "ignored by '/-rc/'", ""),
    (TagFilter(ignore=("/^dev$/",)), "dev-1", True, "passes", "dev-1"),
    (TagFilter(ignore=("/^dev$/",)), "dev", False, "ignored by '/^dev$/'", ""),
    (TagFilter(ignore=("/(?i)LATEST/",)), "latest", False, "ignored", ""),
    (TagFilter(ignore=("/(a)\\1/", "*.sig")), "xaax", False, "ignored by '/(a)\\\\1/'", ""),
    (TagFilter(ignore=("/(a)\\1/", "*.sig")), "xabx", True, "passes", "xabx"),
    (TagFilter(ignore=("release-?",)), "release-1", False, "ignored", ""),
    (TagFilter(ignore=()), SIG, True, "passes", SIG),
    # allow: the whole tag must match
    (TagFilter(allow=r"v\d+\.\d+\.\d+"), "v1.2.3", True, "passes", "v1.2.3"),
    (TagFilter(allow=r"v\d+\.\d+\.\d+"), "v1.2.3-rc.1", False, "does not match allow", ""),
    (TagFilter(allow=r"v\d+"), "xv1", False, "does not match allow", ""),
    (TagFilter(allow=r"\d+"), "\u0661\u0662", False, "not a valid tag", ""),
    (TagFilter(allow=r"main-.*", ignore=("*-dirty",)), "main-1-dirty", False, "ignored", ""),
    # extract: the named group is what strategies sort on
    (TagFilter(extract=r"^main-(?P<value>\d+)-[0-9a-f]{7}$"), "main-42-abcdef1", True,
     "sorts on '42'", "42"),
    (TagFilter(extract=r"^main-(?P<value>\d+)-[0-9a-f]{7}$"), "pr-42-abcdef1", False,
     "does not match extract", ""),
    (TagFilter(extract=r"-(?P<ts>\d{14})$"), "build-20240131120000", True, "sorts on",
     "20240131120000"),
    (TagFilter(extract=r"^v(?P<value>\d*)$"), "v", False, "matched nothing", ""),
    (TagFilter(extract=r"(?P<value>[0-9.]+)$", allow=r"app-.*"), "app-1.2.3", True,
     "sorts on '1.2.3'", "1.2.3"),
]


@pytest.mark.parametrize(("spec", "tag", "kept", "why", "sort_key"), CASES)
def test_verdict(spec: TagFilter, tag: str, kept: bool, why: str, sort_key: str) -> None:
    compiled = compile_filter(spec)
    verdict = compiled.verdict(tag)
    assert verdict.kept is kept
    assert why in verdict.why
    assert verdict.sort_key == sort_key
    assert compiled.keeps(tag) is kept


def test_long_garbage_is_shown_shortened() -> None:
    verdict = compile_filter(TagFilter()).verdict("x" * 5000)
    assert not verdict.kept and len(verdict.tag) <= 81
    weird = compile_filter(TagFilter()).verdict("bad\ntag")
    assert not weird.kept and "\n" not in weird.tag


def test_apply_keeps_input_order() -> None:
    verdicts = compile_filter(TagFilter()).apply(["b", SIG, "a"])
    assert [v.tag for v in verdicts] == ["b", SIG, "a"]
    assert [v.kept for v in verdicts] == [True, False, True]
    assert verdicts[0] == TagVerdict("b", True, "passes the tag filter", "b")


#: (filter, field, text the message must contain)
INVALID: list[tuple[TagFilter, str, str]] = [
    (TagFilter(allow="v(1"), "allow", "missing ), unterminated subpattern at position 1"),
    (TagFilter(allow=""), "allow", "empty regex"),
    (TagFilter(ignore=("/[a-/",)), "ignore", "unterminated character set at position 0"),
    (TagFilter(ignore=("//",)), "ignore", "empty regex"),
    (TagFilter(ignore=("",)), "ignore", "empty entry"),
    (TagFilter(extract="(?P<value"), "extract", "missing >, unterminated name"),
    (TagFilter(extract=r"v(\d+)"), "extract", "needs one named group (?P<value>...)"),
    (TagFilter(extract=r"(?P<a>\d+)-(?P<b>\d+)"), "extract", "it has a, b"),
]


@pytest.mark.parametrize(("spec", "field", "message"), INVALID)
def test_invalid_filter(spec: TagFilter, field: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(spec)
    assert info.value.field == field
    assert message in str(info.value)
    assert f"'{field}'" in str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_compiled_filter_is_immutable() -> None:
    compiled = compile_filter(TagFilter())
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.allow = None  # type: ignore[misc]


_tag_chars = st.text(alphabet="abcdsigtx0129.-_", min_size=1, max_size=20)
_RULES = ("*.sig", "/-rc/", "a?c*", "/^x[0-9]+$/", "*[0-9].att", "/t.{2}/")


@given(_tag_chars)
def test_joined_ignore_regex_agrees_with_rules_one_by_one(tag: str) -> None:
    joined = compile_filter(TagFilter(ignore=_RULES))
    assert joined.any_ignored is not None  # the fast path is really exercised
    one_by_one = dataclasses.replace(joined, any_ignored=None)
    assert joined.verdict(tag) == one_by_one.verdict(tag)
