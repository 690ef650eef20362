"""The one branch-name rule, checked against a table and against git itself."""

from __future__ import annotations

import subprocess

import pytest

from image_updater.errors import ConfigError
from image_updater.forge.base import PullRequestRequest
from image_updater.gitrefs import MAX_BRANCH_LENGTH, branch_problem, check_branch

VALID = [
    "master", "main", "image-updater/application-x-prod", "release/1.2", "a.b", "v1.2.3",
    "feature_x", "deploy@prod", "x" * MAX_BRANCH_LENGTH, "a/b/c", "-".join("ab"), "über",
]

#: (name, part of the reason): each row breaks one rule of git check-ref-format --branch
INVALID = [
    ("", "empty"),
    ("x" * (MAX_BRANCH_LENGTH + 1), "longer than"),
    ("image updater/x", "' '"),
    ("tab\there", "'\\t'"),
    ("bell\x07", "'\\x07'"),
    ("del\x7f", "'\\x7f'"),
    ("a~1", "'~'"),
    ("a^2", "'^'"),
    ("a:b", "':'"),
    ("what?", "'?'"),
    ("glob*", "'*'"),
    ("class[1]", "'['"),
    ("back\\slash", "'\\\\'"),
    ("a..b", "'..'"),
    ("a@{1}", "'@{'"),
    ("a//b", "'//'"),
    ("-x", "starts with '-'"),
    ("/x", "starts or ends with '/'"),
    ("x/", "starts or ends with '/'"),
    ("x.", "ends with '.'"),
    ("@", "special meaning"),
    ("HEAD", "special meaning"),
    (".hidden", "starts with '.'"),
    ("team/.hidden", "starts with '.'"),
    ("x.lock", "ends with '.lock'"),
    ("x.lock/y", "ends with '.lock'"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_pass_unchanged(name: str) -> None:
    assert branch_problem(name) is None
    assert check_branch(name) == name


@pytest.mark.parametrize(("name", "reason"), INVALID)
def test_invalid_names_say_which_rule(name: str, reason: str) -> None:
    problem = branch_problem(name)
    assert problem is not None and reason in problem
    with pytest.raises(ConfigError, match="is not a valid git branch name") as info:
        check_branch(name, what="pull request branch")
    assert str(info.value).startswith("The pull request branch name ")


def test_a_non_string_is_refused() -> None:
    assert branch_problem(None) == "it is empty"


def test_the_forge_uses_the_same_rule() -> None:
    # The forge once accepted these while the git writer refused them.
    for name in (".hidden", "team/.x", "x.lock/y", "HEAD"):
        with pytest.raises(ConfigError, match="not a valid git branch name"):
            PullRequestRequest(head=name, base="master", title="t")


# The length limit is ours alone, and git expands '@' and 'HEAD' to the current branch
# instead of judging them; every other verdict must be git's own.
@pytest.mark.parametrize("name", [n for n in (*VALID, *(n for n, _ in INVALID))
                                  if n not in ("@", "HEAD") and 0 < len(n) <= MAX_BRANCH_LENGTH])
def test_agrees_with_git_check_ref_format(name: str) -> None:
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True,
                          check=False)
    git_accepts = proc.returncode == 0
    assert (branch_problem(name) is None) == git_accepts
