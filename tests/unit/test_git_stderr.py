"""git's stderr → our errors: one row per kind of failure, as git (LC_ALL=C) words it."""

from __future__ import annotations

from pathlib import Path

import pytest
from git.exc import GitCommandError

from image_updater.errors import GitAuthError, GitError, GitUnavailableError
from image_updater.gitops.stderr import (
    classify,
    is_corrupt_cache,
    is_missing_ref,
    is_push_race,
    output_of,
)

URL = "https://git.example.com/org/deploys.git"
CACHE = Path("/cache/repos/deploys-0123")

CASES = [
    ("fatal: Authentication failed for 'https://git.example.com/org/deploys.git/'",
     GitAuthError, "could not authenticate"),
    ("git@github.com: Permission denied (publickey).", GitAuthError, "could not authenticate"),
    ("fatal: could not read Username for 'https://git.example.com': terminal prompts disabled",
     GitAuthError, "could not authenticate"),
    ("remote: Repository not found.", GitError, "does not exist or is not readable"),
    ("fatal: '/srv/x.git' does not appear to be a git repository", GitError,
     "does not exist or is not readable"),
    ("fatal: unable to access '…': Could not resolve host: git.example.com",
     GitUnavailableError, "could not be reached"),
    ("fatal: the remote end hung up unexpectedly", GitUnavailableError, "could not be reached"),
    ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502",
     GitUnavailableError, "could not be reached"),
    ("fatal: something nobody foresaw", GitError, "check the repository and the cache"),
]


@pytest.mark.parametrize(("text", "kind", "says"), CASES)
def test_classify(text: str, kind: type[GitError], says: str) -> None:
    error = classify("fetching branch master", text, url=URL, auth_hint="the token file",
                     cache=CACHE)
    assert type(error) is kind
    message = str(error)
    assert says in message and URL in message and text in message
    if kind is GitAuthError:
        assert message.endswith("check the token file.")
    assert error.temporary == (kind is GitUnavailableError)


@pytest.mark.parametrize(("text", "race"), [
    (" ! [rejected] HEAD -> master (fetch first)", True),
    (" ! [rejected] HEAD -> master (non-fast-forward)", True),
    ("error: cannot lock ref 'refs/heads/master': is at 1 but expected 2", True),
    (" ! [remote rejected] HEAD -> master (pre-receive hook declined) failed to update ref",
     False),
    ("fatal: Authentication failed", False),
])
def test_is_push_race(text: str, race: bool) -> None:
    assert is_push_race(text) is race


def test_missing_ref_and_corrupt_cache() -> None:
    assert is_missing_ref("fatal: Couldn't find remote ref refs/heads/main")
    assert not is_missing_ref("fatal: the remote end hung up")
    assert is_corrupt_cache(GitError("fatal: bad object HEAD"))
    # only a plain GitError: an unreachable remote is not a broken clone
    assert not is_corrupt_cache(GitUnavailableError("early EOF; index file corrupt"))
    assert not is_corrupt_cache(GitError("fatal: something else"))


def test_output_of_strips_gitpythons_decoration() -> None:
    exc = GitCommandError(["git", "fetch"], 128, stderr=b"fatal: no\n", stdout=b"")
    assert output_of(exc) == "fatal: no"
