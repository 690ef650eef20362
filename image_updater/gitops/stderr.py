"""What went wrong, from git's stderr: the one place that turns git's words into our errors.

git reports failures as text (``LC_ALL=C``, set by GitPython); the markers below decide
which of ``GitError``, ``GitAuthError``, ``GitUnavailableError`` a failure becomes, and
whether a refused push was a race (somebody else pushed first) to be answered by
re-planning. The text is quoted redacted and truncated by the caller.
"""

from __future__ import annotations

import re
from pathlib import Path

from git.exc import GitCommandError

from image_updater.errors import GitAuthError, GitError, GitUnavailableError

AUTH_MARKERS = (
    "authentication failed", "could not read username", "could not read password",
    "terminal prompts disabled", "permission denied (publickey", "host key verification failed",
    "access denied", "returned error: 401", "returned error: 403", "invalid credentials",
)
UNAVAILABLE_MARKERS = (
    "unable to connect", "could not resolve host", "connection refused", "connection timed out",
    "timed out", "timeout:", "could not read from remote repository", "early eof",
    "remote end hung up", "returned error: 5", "failed to connect", "network is unreachable",
)
RACE_MARKERS = (
    "(fetch first)", "(non-fast-forward)", "cannot lock ref", "failed to update ref",
    "incorrect old value", "stale info",
)
NO_REPOSITORY_MARKERS = (
    "does not appear to be a git repository", "repository not found", "no such repository",
    "returned error: 404",
)
MISSING_REF_MARKER = "couldn't find remote ref"
CORRUPT_MARKERS = (
    "not a git repository", "bad object", "corrupt", "unable to read", "index file",
    "loose object", "broken link", "invalid object", "did not send all necessary objects",
)


def has(text: str, markers: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(m in lowered for m in markers)


def is_push_race(text: str) -> bool:
    """The remote branch moved under our push; a hook's refusal is never a race."""
    return has(text, RACE_MARKERS) and not has(text, ("hook declined",))


def is_missing_ref(text: str) -> bool:
    return MISSING_REF_MARKER in text.lower()


def is_corrupt_cache(exc: GitError) -> bool:
    """A plain ``GitError`` whose text says the local clone, not the remote, is broken."""
    return type(exc) is GitError and has(str(exc), CORRUPT_MARKERS)


def classify(action: str, text: str, *, url: str, auth_hint: str, cache: Path) -> GitError:
    """The error for git failing while ``action`` on ``url`` (shown redacted) with ``text``."""
    if has(text, AUTH_MARKERS):
        return GitAuthError(
            f"git could not authenticate to {url} while {action} ({text}); check {auth_hint}."
        )
    if has(text, NO_REPOSITORY_MARKERS):
        return GitError(
            f"The deploy repository {url} does not exist or is not readable "
            f"({text}); check the git URL in the policy and {auth_hint}."
        )
    if has(text, UNAVAILABLE_MARKERS):
        return GitUnavailableError(
            f"The deploy repository {url} could not be reached while {action} "
            f"({text}); the update will be retried next cycle."
        )
    return GitError(f"git failed while {action} for {url} ({text}); "
                    f"check the repository and the cache directory {cache}.")


def output_of(exc: GitCommandError) -> str:
    """git's stderr and stdout without GitPython's "stderr: '…'" decoration."""
    parts = []
    for raw in (exc.stderr, exc.stdout):
        text = str(raw or "")
        match = re.match(r"\s*std(?:err|out): '(.*)'\s*$", text, re.DOTALL)
        parts.append(match.group(1) if match else text)
    return " ".join(p.strip() for p in parts if p.strip())
