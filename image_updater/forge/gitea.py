"""Gitea and Forgejo pull requests through REST API v1.

Gitea's list endpoint cannot filter by head branch, so ``find`` pages through the
repository's pull requests and filters here. Labels are sent as ids (looked up by
name); a draft is a "WIP: " title, the first of Gitea's default draft prefixes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from image_updater.clocks import WallClock
from image_updater.errors import ForgeError
from image_updater.forge.base import (
    ForgeOptions,
    PullRequest,
    PullRequestRequest,
    check_branch,
    keep_draft_marker,
    newest_for_branch,
)
from image_updater.forge.fields import (
    MalformedError,
    best_effort,
    field_at,
    github_shaped_pull_request,
    number_at,
    text_at,
)
from image_updater.forge.http import ForgeHttp, Site, Sleep
from image_updater.forge.tokens import token_source
from image_updater.secrets import SecretRegistry

log = logging.getLogger(__name__)

SITE = Site(
    label="Gitea",
    permission='the "write:repository" and "write:issue" scopes and write access to the '
    "repository",
)
#: Gitea's default MAX_RESPONSE_ITEMS: a larger limit is silently cut to it.
PAGE_SIZE = 50
#: 40 pages of 50: a repository with more pull requests than that is only partly searched.
MAX_PAGES = 40
DRAFT_PREFIX = "WIP: "
DRAFT_MARKER = re.compile(r"\s*(wip:|\[wip\])", re.IGNORECASE)


class GiteaForge:
    def __init__(
        self,
        options: ForgeOptions,
        *,
        sleep: Sleep,
        clock: WallClock,
        secrets: SecretRegistry,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._tokens = token_source(options, secrets=secrets)
        self._http = ForgeHttp(
            options, site=SITE, auth=lambda: {"Authorization": f"token {self._tokens.token()}"},
            describe_auth=self._tokens.describe, sleep=sleep, clock=clock, transport=transport,
        )
        self._repo_path = f"repos/{options.repository}"

    # -- Forge

    def find(self, head_branch: str) -> list[PullRequest]:
        check_branch(head_branch, what="head branch")
        path = f"{self._repo_path}/pulls"
        items = self._http.paginate(
            path, {"state": "all"}, size_param="limit", size=PAGE_SIZE, max_pages=MAX_PAGES
        )
        return newest_for_branch([self._parse(item, path) for item in items], head_branch)

    def create(self, req: PullRequestRequest) -> PullRequest:
        path = f"{self._repo_path}/pulls"
        title = req.title
        if req.draft and not DRAFT_MARKER.match(title):
            title = DRAFT_PREFIX + title
        body: dict[str, Any] = {"head": req.head, "base": req.base, "title": title,
                                "body": req.body}
        if req.labels:
            label_ids = self._label_ids(req.labels)
            if label_ids:
                body["labels"] = label_ids
        if req.assignees:
            body["assignees"] = list(req.assignees)
        pr = self._parse(self._http.call("POST", path, json=body), path)
        if req.reviewers:
            best_effort("requesting reviewers", pr.number,
                        lambda: self._request_reviewers(pr.number, req.reviewers))
        return pr

    def _request_reviewers(self, number: int, reviewers: tuple[str, ...]) -> None:
        body: dict[str, list[str]] = {}
        users = [r for r in reviewers if "/" not in r]
        teams = [r.split("/", 1)[1] for r in reviewers if "/" in r]  # team name in the org
        if users:
            body["reviewers"] = users
        if teams:
            body["team_reviewers"] = teams
        path = f"{self._repo_path}/pulls/{number}/requested_reviewers"
        self._http.call("POST", path, json=body)

    def update(self, pr: PullRequest, *, title: str, body: str) -> PullRequest:
        path = f"{self._repo_path}/pulls/{pr.number}"
        title = keep_draft_marker(pr.title, title, DRAFT_MARKER, DRAFT_PREFIX)
        return self._parse(self._http.call("PATCH", path, json={"title": title, "body": body}),
                           path)

    def close(self, pr: PullRequest, *, comment: str) -> PullRequest:
        self.comment(pr, comment)
        path = f"{self._repo_path}/pulls/{pr.number}"
        return self._parse(self._http.call("PATCH", path, json={"state": "closed"}), path)

    def comment(self, pr: PullRequest, text: str) -> None:
        path = f"{self._repo_path}/issues/{pr.number}/comments"
        self._http.call("POST", path, json={"body": text})

    def disconnect(self) -> None:
        self._http.close()

    # -- labels

    def _label_ids(self, names: tuple[str, ...]) -> list[int]:
        """Ids of the named repository labels; missing ones are logged and left out."""
        path = f"{self._repo_path}/labels"
        try:
            labels = self._http.paginate(
                path, {}, size_param="limit", size=PAGE_SIZE, max_pages=MAX_PAGES
            )
            by_name = {text_at(lb, "name"): number_at(lb, "id") for lb in labels}
        except MalformedError as exc:
            raise self._http.malformed(path, "(label list)", str(exc)) from exc
        except ForgeError as exc:
            log.warning("could not list Gitea labels (%s); the pull request gets none.", exc)
            return []
        missing = [n for n in names if n not in by_name]
        if missing:
            log.warning(
                "Gitea repository has no label(s) %s; create them or fix the policy. The pull "
                "request is opened without them.", ", ".join(missing),
            )
        return [by_name[n] for n in names if n in by_name]

    # -- parsing

    def _parse(self, item: Any, path: str) -> PullRequest:
        try:
            merged = field_at(item, "merged") is True
            return github_shaped_pull_request(item, merged=merged)
        except MalformedError as exc:
            raise self._http.malformed(path, item, str(exc)) from exc
