"""The seam between the engine and a forge (GitHub, GitLab, Gitea/Forgejo).

The engine only sees :class:`Forge`, :class:`PullRequest` and :class:`PullRequestRequest`;
each adapter turns its forge's JSON into these values and its failures into the
``ForgeError`` family of :mod:`image_updater.errors`. "Pull request" is used for GitLab
merge requests too; ``number`` is the per-repository number (GitLab's ``iid``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from image_updater.errors import ConfigError

# One branch-name rule for git and the forges; adapters import it from here.
from image_updater.gitrefs import check_branch

PullRequestState = Literal["open", "closed", "merged"]
ForgeKind = Literal["github", "gitlab", "gitea"]
FORGE_KINDS: tuple[str, ...] = ("github", "gitlab", "gitea")

_OWNER_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_GITLAB_PROJECT = re.compile(r"[0-9]+|[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request as the forge reported it. ``updated_at`` is the forge's string."""

    number: int
    url: str
    state: PullRequestState
    head_branch: str
    base_branch: str
    title: str
    body: str
    updated_at: str


def newest_for_branch(found: list[PullRequest], head_branch: str) -> list[PullRequest]:
    """The pull requests of ``head_branch``, newest first: numbers grow with creation time,
    so this holds whatever order (or filter) the forge applied."""
    mine = [pr for pr in found if pr.head_branch == head_branch]
    return sorted(mine, key=lambda pr: pr.number, reverse=True)


@dataclass(frozen=True, kw_only=True)
class PullRequestRequest:
    """What to open. Labels, reviewers and assignees are names (usernames, label names)."""

    head: str
    base: str
    title: str
    body: str = ""
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()  # "org/team" requests a team where the forge has teams
    assignees: tuple[str, ...] = ()
    draft: bool = False

    def __post_init__(self) -> None:
        check_branch(self.head, what="pull request head branch")
        check_branch(self.base, what="pull request base branch")
        if not self.title.strip() or _CONTROL.search(self.title):
            raise ConfigError(
                f"pull request title {self.title[:90]!r} is empty or contains control "
                "characters; give a one-line title."
            )
        for label in self.labels:
            # GitLab receives labels comma-joined, so a comma would split one label in two.
            if not label.strip() or "," in label or _CONTROL.search(label) or len(label) > 50:
                raise ConfigError(
                    f"label {label[:90]!r} is not usable; labels are 1-50 characters without "
                    "commas or control characters."
                )
        for name in (*self.reviewers, *self.assignees):
            if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", name):
                raise ConfigError(
                    f"user or team name {name[:90]!r} is not valid; use a username such as "
                    "'alice' or a team as 'org/team'."
                )


class Forge(Protocol):
    """One repository on one forge. Calls block; the engine calls them from a worker thread."""

    def find(self, head_branch: str) -> list[PullRequest]:
        """All pull requests from ``head_branch``, in every state, newest first."""
        ...

    def create(self, req: PullRequestRequest) -> PullRequest:
        """Open a pull request; labels, reviewers and assignees are applied where possible."""
        ...

    def update(self, pr: PullRequest, *, title: str, body: str) -> PullRequest:
        """Replace title and body of ``pr`` (same number); a draft stays a draft."""
        ...

    def close(self, pr: PullRequest, *, comment: str) -> PullRequest:
        """Comment on ``pr`` (saying why), then close it without merging."""
        ...

    def comment(self, pr: PullRequest, text: str) -> None:
        """Add a comment to ``pr``."""
        ...

    def disconnect(self) -> None:
        """Release HTTP connections; the object must not be used afterwards."""
        ...


@dataclass(frozen=True, kw_only=True)
class ForgeOptions:
    """How to reach one repository on one forge. Exactly one token source must be set."""

    kind: ForgeKind
    #: API root: GitHub ``https://api.github.com`` or ``https://ghe.example.com/api/v3``,
    #: GitLab ``https://gitlab.example.com/api/v4``, Gitea ``https://gitea.example.com/api/v1``.
    api_url: str
    #: "org/deploys"; on GitLab a full project path ("group/sub/deploys") or a numeric id.
    repository: str
    #: name of an environment variable holding the token; read at every use (rotation).
    token_env: str | None = None
    #: path of a file holding the token (e.g. a mounted Secret); read at every use.
    token_file: str | None = None
    #: GitHub App authentication instead of a token: all three must be set together.
    app_id: str | None = None
    app_private_key_file: str | None = None
    app_installation_id: str | None = None
    #: seconds for connect/read of one HTTP request.
    timeout: float = 30.0
    #: retries after the first attempt, for connection errors, 5xx and rate limits.
    max_retries: int = 3
    #: longest rate-limit wait (seconds) done in-process; longer ones raise
    #: ForgeRateLimitedError at once so a worker thread is not blocked for an hour.
    max_wait: float = 60.0
    #: first backoff delay (seconds) after a connection error or 5xx; doubles each retry.
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FORGE_KINDS:
            raise ConfigError(
                f"forge kind {self.kind!r} is not supported; use one of {', '.join(FORGE_KINDS)}."
            )
        self._check_api_url()
        self._check_repository()
        self._check_auth()
        if self.timeout <= 0 or self.max_retries < 0 or self.max_wait < 0 or self.backoff < 0:
            raise ConfigError(
                f"forge settings for {self.repository}: timeout must be positive and "
                "max_retries, max_wait and backoff must not be negative."
            )

    def _check_api_url(self) -> None:
        url = self.api_url
        if not re.fullmatch(r"https?://[^\s/@?#]+(/[^\s?#@]*)?", url):
            # A URL with "@" may carry a password: never echo it.
            shown = "(not shown: it contains '@')" if "@" in url else repr(url[:80])
            raise ConfigError(
                f"forge api_url {shown} is not an http(s) URL without credentials, "
                "query or fragment; give the API root, e.g. https://gitlab.example.com/api/v4, "
                "and put the token in token_env or token_file."
            )

    def _check_repository(self) -> None:
        pattern = _GITLAB_PROJECT if self.kind == "gitlab" else _OWNER_REPO
        if not pattern.fullmatch(self.repository) or ".." in self.repository:
            shape = "'group/project' or a numeric id" if self.kind == "gitlab" else "'owner/name'"
            raise ConfigError(
                f"forge repository {self.repository[:90]!r} is not valid for {self.kind}; "
                f"write it as {shape}."
            )

    def _check_auth(self) -> None:
        app = (self.app_id, self.app_private_key_file, self.app_installation_id)
        app_set = [v is not None for v in app]
        if any(app_set) and not all(app_set):
            raise ConfigError(
                f"forge settings for {self.repository}: app_id, app_private_key_file and "
                "app_installation_id must be given together for GitHub App authentication."
            )
        if all(app_set) and self.kind != "github":
            raise ConfigError(
                f"forge settings for {self.repository}: GitHub App authentication is only "
                f"for kind 'github', not {self.kind!r}; use token_env or token_file."
            )
        sources = sum([self.token_env is not None, self.token_file is not None, all(app_set)])
        if sources != 1:
            raise ConfigError(
                f"forge settings for {self.repository}: set exactly one of token_env, "
                "token_file or the GitHub App fields (found "
                f"{sources})."
            )
        if self.token_env is not None and not _ENV_NAME.fullmatch(self.token_env):
            # Not echoed: people paste the token itself here by mistake.
            raise ConfigError(
                f"forge settings for {self.repository}: token_env is not an environment "
                "variable name (letters, digits, '_'); give the variable's name, never the "
                "token itself."
            )
        if all(app_set) and not (
            str(self.app_id).isdigit() and str(self.app_installation_id).isdigit()
        ):
            raise ConfigError(
                f"forge settings for {self.repository}: app_id and app_installation_id must "
                "be numbers as shown in the GitHub App settings."
            )

    @property
    def owner(self) -> str:
        """The owner part of "owner/name" (GitHub and Gitea)."""
        return self.repository.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.repository.split("/", 1)[-1]


def keep_draft_marker(old_title: str, new_title: str, marker: re.Pattern[str], prefix: str) -> str:
    """``new_title``, prefixed like ``old_title`` was if that marked a draft.

    GitLab and Gitea keep "draft" in the title, so a plain title update would
    silently mark a draft ready for merging; update() must not change that.
    """
    if marker.match(old_title) and not marker.match(new_title):
        return prefix + new_title
    return new_title
