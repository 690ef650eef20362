"""Case tables for Masterminds/semver v3 constraint semantics, and the tests they drive.

Facts come from the Masterminds README (every example is here) and from the behaviour its
own test suite pins down; the tables are written for this project.
"""

from __future__ import annotations

import pytest

from image_updater.policy.constraint import Constraint, ConstraintError
from image_updater.policy.version import Version

T, F = True, False

# ---------------------------------------------------------------- README examples

#: Every example of the Masterminds v3 README, probed at and around its bounds.
README_CASES: list[tuple[str, str, bool]] = [
    # "Checking Version Constraints": NewConstraint(">= 1.2.3") admits NewVersion("1.3")
    (">= 1.2.3", "1.3", T),
    # "Basic Comparisons": ">= 1.2 < 3.0.0 || >= 4.2.3" (and the older comma form)
    (">= 1.2 < 3.0.0 || >= 4.2.3", "1.1.9", F),
    (">= 1.2 < 3.0.0 || >= 4.2.3", "1.2.0", T),
    (">= 1.2 < 3.0.0 || >= 4.2.3", "2.9.9", T),
    (">= 1.2 < 3.0.0 || >= 4.2.3", "3.0.0", F),
    (">= 1.2 < 3.0.0 || >= 4.2.3", "4.2.2", F),
    (">= 1.2 < 3.0.0 || >= 4.2.3", "4.2.3", T),
    (">= 1.2, < 3.0.0 || >= 4.2.3", "5.0.0", T),
    (">= 1.2, < 3.0.0 || >= 4.2.3", "3.5.0", F),
    # "Working With Prerelease Versions"
    (">=1.2.3", "1.2.4-beta.1", F),
    (">=1.2.3-0", "1.2.4-beta.1", T),
    (">=1.2.3-0", "1.2.3-alpha", T),
    (">=1.2.3-0", "1.2.3", T),
    (">=1.2.3-BETA", "1.2.3-alpha", T),  # ASCII: "BETA" < "alpha"
    (">=1.2.3-beta", "1.2.3-alpha", F),
    # "Hyphen Range Comparisons"
    ("1.2 - 1.4.5", "1.1.9", F),
    ("1.2 - 1.4.5", "1.2.0", T),
    ("1.2 - 1.4.5", "1.4.5", T),
    ("1.2 - 1.4.5", "1.4.6", F),
    ("2.3.4 - 4.5", "2.3.3", F),
    ("2.3.4 - 4.5", "2.3.4", T),
    ("2.3.4 - 4.5", "4.5.9", T),  # a partial upper bound covers all of 4.5.x
    ("2.3.4 - 4.5", "4.6.0", F),
    ("1.2-1.4.5", "1.2.0-1.4.5", T),  # no spaces: version 1.2.0 with prerelease 1.4.5
    ("1.2-1.4.5", "1.3.0", F),
    ("1.2-1.4.5", "1.4.5", F),
    # "Wildcards In Comparisons"
    ("1.2.x", "1.1.9", F),
    ("1.2.x", "1.2.0", T),
    ("1.2.x", "1.2.99", T),
    ("1.2.x", "1.3.0", F),
    (">= 1.2.x", "1.1.9", F),
    (">= 1.2.x", "1.2.0", T),
    (">= 1.2.x", "9.0.0", T),
    ("<= 2.x", "0.1.0", T),
    ("<= 2.x", "2.99.0", T),
    ("<= 2.x", "3.0.0", F),
    ("*", "0.0.0", T),
    ("*", "99.1.2", T),
    ("*", "1.0.0-rc.1", F),
    # "Tilde Range Comparisons (Patch)"
    ("~1.2.3", "1.2.2", F),
    ("~1.2.3", "1.2.3", T),
    ("~1.2.3", "1.2.9", T),
    ("~1.2.3", "1.3.0", F),
    ("~1", "0.9.9", F),
    ("~1", "1.0.0", T),
    ("~1", "1.9.9", T),
    ("~1", "2.0.0", F),
    ("~2.3", "2.2.9", F),
    ("~2.3", "2.3.0", T),
    ("~2.3", "2.3.9", T),
    ("~2.3", "2.4.0", F),
    ("~1.2.x", "1.2.0", T),
    ("~1.2.x", "1.3.0", F),
    ("~1.x", "1.0.0", T),
    ("~1.x", "1.9.0", T),
    ("~1.x", "2.0.0", F),
    # "Caret Range Comparisons (Major)"
    ("^1.2.3", "1.2.2", F),
    ("^1.2.3", "1.2.3", T),
    ("^1.2.3", "1.9.9", T),
    ("^1.2.3", "2.0.0", F),
    ("^1.2.x", "1.1.9", F),
    ("^1.2.x", "1.2.0", T),
    ("^1.2.x", "1.99.0", T),
    ("^1.2.x", "2.0.0", F),
    ("^2.3", "2.2.9", F),
    ("^2.3", "2.3.0", T),
    ("^2.3", "2.9.0", T),
    ("^2.3", "3.0.0", F),
    ("^2.x", "1.9.9", F),
    ("^2.x", "2.0.0", T),
    ("^2.x", "3.0.0", F),
    ("^0.2.3", "0.2.2", F),
    ("^0.2.3", "0.2.3", T),
    ("^0.2.3", "0.2.9", T),
    ("^0.2.3", "0.3.0", F),
    ("^0.2", "0.1.9", F),
    ("^0.2", "0.2.0", T),
    ("^0.2", "0.2.9", T),
    ("^0.2", "0.3.0", F),
    ("^0.0.3", "0.0.2", F),
    ("^0.0.3", "0.0.3", T),
    ("^0.0.3", "0.0.4", F),
    ("^0.0", "0.0.0", T),
    ("^0.0", "0.0.9", T),
    ("^0.0", "0.1.0", F),
    ("^0", "0.0.0", T),
    ("^0", "0.9.9", T),
    ("^0", "1.0.0", F),
    # "Validation": "<= 1.2.3, >= 1.4" rejects 1.3
    ("<= 1.2.3, >= 1.4", "1.3", F),
]

#: The README's "is equivalent to" pairs, compared over VERSION_GRID.
README_EQUIVALENCES: list[tuple[str, str]] = [
    ("1.2 - 1.4.5", ">= 1.2 <= 1.4.5"),
    ("2.3.4 - 4.5", ">= 2.3.4 <= 4.5"),
    ("1.2.x", ">= 1.2.0, < 1.3.0"),
    (">= 1.2.x", ">= 1.2.0"),
    ("<= 2.x", "< 3"),
    ("*", ">= 0.0.0"),
    ("~1.2.3", ">= 1.2.3, < 1.3.0"),
    ("~1", ">= 1, < 2"),
    ("~2.3", ">= 2.3, < 2.4"),
    ("~1.2.x", ">= 1.2.0, < 1.3.0"),
    ("~1.x", ">= 1, < 2"),
    ("^1.2.3", ">= 1.2.3, < 2.0.0"),
    ("^1.2.x", ">= 1.2.0, < 2.0.0"),
    ("^2.3", ">= 2.3, < 3"),
    ("^2.x", ">= 2.0.0, < 3"),
    ("^0.2.3", ">=0.2.3 <0.3.0"),
    ("^0.2", ">=0.2.0 <0.3.0"),
    ("^0.0.3", ">=0.0.3 <0.0.4"),
    ("^0.0", ">=0.0.0 <0.1.0"),
    ("^0", ">=0.0.0 <1.0.0"),
]

VERSION_GRID: list[str] = [
    f"{major}.{minor}.{patch}"
    for major in (0, 1, 2, 3, 4, 5)
    for minor in (0, 1, 2, 3, 4, 5, 6)
    for patch in (0, 1, 2, 3, 4, 5, 6)
] + ["1.2.3-alpha", "1.3.0-rc.1", "2.0.0-0", "0.0.1-beta"]

# ---------------------------------------------------- operators, quirks, prereleases

#: Behaviour of every operator and form, as Masterminds v3 behaves.
OPERATOR_CASES: list[tuple[str, str, bool]] = [
    # = (and no operator): exact unless a part is wild or missing, then a tilde range
    ("=2.0.0", "2.0.0", T),
    ("=2.0.0", "2.0.1", F),
    ("=2.0.0", "2.0.0+build.7", T),  # build metadata is not part of precedence
    ("2.0.0", "v2.0.0", T),
    ("=2.0", "2.0.1", T),
    ("=2.0", "2.1.0", F),
    ("4.1", "4.1.0", T),
    ("=0", "1", F),
    ("2", "2.1.1", T),
    ("2", "3.4.5", F),
    ("2.*", "2.1.1", T),
    ("2.1.*", "2.2.1", F),
    ("1.X", "1.4", T),
    ("x", "7.0.0", T),
    ("x.x.x", "0.1.0", T),
    ("1.x.3", "1.9.0", T),  # a wild minor makes the patch irrelevant
    # !=
    ("!=4.1.0", "4.1.0", F),
    ("!=4.1.0", "4.1.1", T),
    ("!=4.1", "4.1.0", F),
    ("!=4.1", "4.1.9", F),
    ("!=4.1", "5.1.0", T),
    ("!=4.x", "4.1.0", F),
    ("!=4.x", "5.1.0", T),
    ("!=4.1.x", "4.2.0", T),
    ("!=4.2.x", "4.2.3", F),
    ("!=4.1-alpha", "4.1.0", T),
    ("!=4.1-alpha", "4.1.0-alpha", F),
    ("!=4.1-alpha", "4.1.1-alpha", F),
    ("!=4.1-alpha", "4.1.1-beta", T),
    ("!=4.1.0", "5.1.0-alpha.1", F),  # prereleases excluded: no comparator names one
    # >
    (">1.1", "1.1.0", F),
    (">1.1", "1.1.9", F),  # ">1.1" means ">=1.2.0"
    (">1.1", "1.2.0", T),
    (">11", "11.1.0", F),  # ">11" means ">=12.0.0"
    (">11", "12.0.0", T),
    (">0", "0.0.0", F),
    (">0", "1.0.0", T),
    (">1.2.3", "1.2.4", T),
    (">1.2.3", "1.2.3", F),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", T),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", T),
    ("> 1.2.3", "1.2.3-beta.1", F),
    (">*", "0.0.1", T),
    (">*", "0.0.0", F),
    # <
    ("<1.1", "0.1.0", T),
    ("<1.1", "1.1.0", F),
    ("<11", "10.9.9", T),
    ("<11", "11.1.0", F),
    ("<1.x", "0.9.9", T),
    ("<1.x", "1.1.1", F),  # "<1.x" means "<1.0.0"
    ("<1.1.x", "1.1.500", F),
    ("<1.2.x", "1.1.1", T),
    ("<0-z", "0.0.0-alpha", T),
    ("<0", "0.0.0-alpha", F),
    ("<*", "0.0.0", F),
    # >= and its alias =>
    (">=1.1", "1.1.0", T),
    (">=1.1", "0.0.9", F),
    ("=>1.1", "1.1.0", T),
    ("=> 1.1", "1.0.9", F),
    (">=11.1", "11.0.2", F),
    (">=0", "0.0.0", T),
    (">=0", "0.0.0-alpha", F),
    (">=0-0", "0.0.0-alpha", T),
    (">=0.0.0-0", "3.4.5-beta.1", T),
    # <= and its alias =<
    ("<=1.1", "1.1.1", T),  # "<=1.1" covers all of 1.1.x
    ("<=1.1", "1.2.0", F),
    ("=<1.1", "1.1.9", T),
    ("=< 1.1", "1.2.3", F),
    ("<=11", "11.2.3", T),
    ("<=11", "12.2.3", F),
    ("<=1.2.3", "1.2.3", T),
    ("<=1.2.3", "1.2.4", F),
    ("<=1.1-a", "0.1.0-alpha", T),
    ("<=1.1", "0.1.0-alpha", F),
    # ~ and its alias ~>
    ("~>1.2.3", "1.2.8", T),
    ("~>1.2.3", "1.3.0", F),
    ("~0.2.3", "0.2.5", T),
    ("~0.2.3", "0.3.5", F),
    ("~1.2.3-beta.2", "1.2.3-beta.4", T),
    ("~1.2.3-beta.2", "1.2.4-beta.2", T),  # unlike npm, not scoped to 1.2.3 prereleases
    ("~1.2.3-beta.2", "1.3.4-beta.2", F),
    ("~1.1", "1.1.1-alpha", F),
    ("~1.1-alpha", "1.1.1-beta", T),
    ("~1.1.1-beta", "1.1.1-alpha", F),
    ("~1.1.1-beta", "1.1.1", T),
    ("~*", "2.1.1", T),
    ("~0", "0.9.0", T),
    ("~0", "1.0.0", F),
    ("~0.0", "0.0.9", T),
    ("~0.0", "0.1.0", F),
    # ^
    ("^1.2.0", "1.2.1-alpha.1", F),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", T),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", F),
    ("^1.1.2-alpha", "1.2.1-beta1", T),
    ("^1.2.x-alpha", "1.1.1-beta1", F),
    ("^1.x", "1.1.1-beta1", F),
    ("^0.2.3-beta.2", "0.2.4-beta.2", T),
    ("^0.2.3-beta.2", "0.3.4-beta.2", F),
    ("^0.0.1", "0.0.1", T),
    ("^0.0.1", "0.3.1", F),
    ("^0.0.0", "0.0.0", T),
    ("^0.0.0", "0.0.1", F),
    ("^v1.2", "v1.5.0", T),
    # AND by comma or whitespace, OR by ||
    (">1.1, <2", "1.1.1", F),
    (">1.1, <2", "1.2.1", T),
    (">1.1 <2", "1.2.1", T),
    (">1.1    <3", "4.3.2", F),
    (">1.1 , <2", "1.5.0", T),
    (">=1.1, <2, !=1.2.3", "1.2.3", F),
    (">=1.1 <2 !=1.2.3", "1.2.4", T),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", T),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", F),  # "> 3" means ">=4.0.0"
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", T),
    (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", F),
    ("> 1.1, <     2", "1.1.1", F),
    ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", T),
    ("1.0.0 - 2.0.0, <=2.0.0", "2.0.1", F),
    ("1.1-3", "4.3.2", F),
    ("1.1 - 2", "2.9.0", T),
    # prereleases are admitted per OR-alternative, if any comparator in it names one
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", T),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1", T),
    (">= 1.0.0  <= 2.0.0-beta", "3.0.0", F),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", F),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3", "1.0.1-beta", F),
    (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", T),
    (">=0.0.0-0", "0.0.0-alpha", T),
    ("*-0", "1.2.3-alpha.1", T),
    (">=1.0.0-0 <2 || >=3", "3.1.0-rc.1", F),
    ("^1.2.3-0", "1.9.0-rc.10", T),
    # Masterminds quirks kept for compatibility
    ("~0.0.0", "1.2.3", T),
    ("<=*", "0.0.9", T),
    ("<=*", "0.1.0", F),
    ("!=*", "0.0.0", F),
    ("!=*", "1.2.3", T),
    # documented intent instead of Masterminds' code: "^*" admits any release
    ("^*", "1.2.3", T),
    ("^*", "1.2.3-beta", F),
]

# ------------------------------------------------------------------ invalid input

#: Constraints that must not parse, and the 1-based column the error points at.
INVALID_CONSTRAINTS: list[tuple[str, int]] = [
    ("", 1),
    ("   ", 4),
    ("foo", 1),
    (">= bar", 4),
    ("BAR >= 1.2.3", 1),
    ("12.3.4.1234", 7),  # four parts
    ("12.3.34~ 1.2.3", 8),
    (">=", 3),
    (">==1.2", 3),
    ("1.2.3 ||", 9),
    ("|| 1.2.3", 1),
    ("1.2.3 ||| 2", 9),
    (">=1.0,", 7),
    (">=1.0,, <2", 7),
    ("1.2.3 -", 7),
    ("1.2.3 - ", 7),
    (">=1.0.0 - 2.0.0", 9),  # hyphen ranges take bare versions only
    ("1.2.3 - 2.0.0 - 3.0.0", 15),
    ("1.2.3-01", 7),  # numeric prerelease identifiers have no leading zero
    ("1.2.3-", 6),
    ("1.2.3+", 6),
    ("1.2.3 >", 8),
    ("1.2.x.x.x", 6),
    ("xx", 2),
    ("1.2.3abc", 6),
    ("^1.2 ~", 7),
    ("99999999999999999999999", 1),  # larger than uint64
    ("1 | 2", 3),
    ("v", 1),
    ("V1.2.3", 1),
    ("1.2.3\x00", 6),
    ("\u0661.\u0662.\u0663", 1),  # non-ASCII digits are not digits here
]


@pytest.mark.parametrize(("constraint", "version", "expected"), README_CASES + OPERATOR_CASES)
def test_check(constraint: str, version: str, expected: bool) -> None:
    c = Constraint.parse(constraint)
    v = Version.parse(version)
    assert c.check(v) is expected, c.explain(v)


@pytest.mark.parametrize(("constraint", "version", "expected"), README_CASES + OPERATOR_CASES)
def test_explain_agrees_with_check(constraint: str, version: str, expected: bool) -> None:
    explanation = Constraint.parse(constraint).explain(Version.parse(version))
    assert explanation.startswith(str(Version.parse(version)))
    assert ("does not satisfy" not in explanation) is expected
    assert repr(constraint) in explanation


@pytest.mark.parametrize(("constraint", "equivalent"), README_EQUIVALENCES)
def test_readme_equivalences(constraint: str, equivalent: str) -> None:
    a, b = Constraint.parse(constraint), Constraint.parse(equivalent)
    differ = [v for v in VERSION_GRID if a.check(Version.parse(v)) != b.check(Version.parse(v))]
    assert differ == []
    assert any(a.check(Version.parse(v)) for v in VERSION_GRID)  # not vacuously equal


@pytest.mark.parametrize(("text", "column"), INVALID_CONSTRAINTS)
def test_invalid_constraint(text: str, column: int) -> None:
    with pytest.raises(ConstraintError) as info:
        Constraint.parse(text)
    assert isinstance(info.value, ValueError)
    assert info.value.column == column
    assert info.value.text == text
    assert f"column {column}" in str(info.value)
    assert repr(text) in str(info.value)


def test_table_sizes() -> None:
    # The brief asks for at least 150 checked cases; keep the tables from shrinking.
    assert len(README_CASES) + len(OPERATOR_CASES) >= 150
    assert len(INVALID_CONSTRAINTS) >= 25
