"""GitLab merge requests through REST API v4 (gitlab.com and self-managed).

GitLab wants numeric user ids for assignees and reviewers, so usernames are resolved
first; labels travel as one comma-separated string; a draft is a "Draft: " title.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import httpx

from image_updater.clocks import WallClock
from image_updater.errors import ForgeError
from image_updater.forge.base import (
    ForgeOptions,
    PullRequest,
    PullRequestRequest,
    PullRequestState,
    check_branch,
    keep_draft_marker,
    newest_for_branch,
)
from image_updater.forge.fields import MalformedError, number_at, text_at
from image_updater.forge.http import ForgeHttp, Site, Sleep
from image_updater.forge.tokens import token_source
from image_updater.secrets import SecretRegistry

log = logging.getLogger(__name__)

SITE = Site(
    label="GitLab",
    permission='the "api" scope and at least the Developer role in the project',
)
PAGE_SIZE = 100
MAX_PAGES = 10
DRAFT_PREFIX = "Draft: "
# The title markers GitLab itself treats as draft.
DRAFT_MARKER = re.compile(r"\s*(draft:|\[draft\]|\(draft\))", re.IGNORECASE)
# "locked" is GitLab's transient state while a merge is being carried out.
STATES: dict[str, PullRequestState] = {
    "opened": "open", "locked": "open", "closed": "closed", "merged": "merged",
}


class GitLabForge:
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
            options, site=SITE, auth=lambda: {"PRIVATE-TOKEN": self._tokens.token()},
            describe_auth=self._tokens.describe, sleep=sleep, clock=clock, transport=transport,
        )
        # A project path is one URL segment with its slashes encoded: group%2Fdeploys.
        self._project = f"projects/{quote(options.repository, safe='')}"

    # -- Forge

    def find(self, head_branch: str) -> list[PullRequest]:
        check_branch(head_branch, what="head branch")
        path = f"{self._project}/merge_requests"
        params: dict[str, str | int] = {
            "source_branch": head_branch, "state": "all",
            "order_by": "created_at", "sort": "desc",
        }
        items = self._http.paginate(
            path, params, size_param="per_page", size=PAGE_SIZE, max_pages=MAX_PAGES
        )
        return newest_for_branch([self._parse(item, path) for item in items], head_branch)

    def create(self, req: PullRequestRequest) -> PullRequest:
        path = f"{self._project}/merge_requests"
        title = req.title
        if req.draft and not DRAFT_MARKER.match(title):
            title = DRAFT_PREFIX + title
        body: dict[str, Any] = {
            "source_branch": req.head, "target_branch": req.base,
            "title": title, "description": req.body,
        }
        if req.labels:
            body["labels"] = ",".join(req.labels)
        assignees = self._user_ids(req.assignees, "assignee")
        if assignees:
            body["assignee_ids"] = assignees
        reviewers = self._user_ids(req.reviewers, "reviewer")
        if reviewers:
            body["reviewer_ids"] = reviewers
        return self._parse(self._http.call("POST", path, json=body), path)

    def update(self, pr: PullRequest, *, title: str, body: str) -> PullRequest:
        path = f"{self._project}/merge_requests/{pr.number}"
        title = keep_draft_marker(pr.title, title, DRAFT_MARKER, DRAFT_PREFIX)
        return self._parse(
            self._http.call("PUT", path, json={"title": title, "description": body}), path
        )

    def close(self, pr: PullRequest, *, comment: str) -> PullRequest:
        self.comment(pr, comment)
        path = f"{self._project}/merge_requests/{pr.number}"
        return self._parse(self._http.call("PUT", path, json={"state_event": "close"}), path)

    def comment(self, pr: PullRequest, text: str) -> None:
        path = f"{self._project}/merge_requests/{pr.number}/notes"
        self._http.call("POST", path, json={"body": text})

    def disconnect(self) -> None:
        self._http.close()

    # -- users

    def _user_ids(self, names: tuple[str, ...], role: str) -> list[int]:
        """Numeric ids for usernames; unknown names are logged and left out (the merge
        request is still worth opening without them)."""
        ids = []
        for name in names:
            if "/" in name:
                log.warning("GitLab has no team %ss; %s %r is skipped.", role, role, name)
                continue
            try:
                found = self._user_id(name)
            except ForgeError as exc:
                log.warning("could not look up GitLab user %r (%s); %s skipped.", name, exc, role)
                continue
            if found is None:
                log.warning(
                    "GitLab user %r does not exist; the %s is skipped. Fix the policy.", name, role
                )
            else:
                ids.append(found)
        return ids

    def _user_id(self, name: str) -> int | None:
        users = self._http.call("GET", "users", params={"username": name})
        if not isinstance(users, list):
            raise self._http.malformed("users", users)
        for user in users:
            try:
                if text_at(user, "username").lower() == name.lower():
                    return number_at(user, "id")
            except MalformedError as exc:
                raise self._http.malformed("users", user, str(exc)) from exc
        return None

    # -- parsing

    def _parse(self, item: Any, path: str) -> PullRequest:
        try:
            raw_state = text_at(item, "state")
            if raw_state not in STATES:
                raise MalformedError(f"unknown state {raw_state[:20]!r}")
            return PullRequest(
                number=number_at(item, "iid"),  # the per-project number (!12), not "id"
                url=text_at(item, "web_url"),
                state=STATES[raw_state],
                head_branch=text_at(item, "source_branch"),
                base_branch=text_at(item, "target_branch"),
                title=text_at(item, "title"),
                body=text_at(item, "description", nullable=True),
                updated_at=text_at(item, "updated_at"),
            )
        except MalformedError as exc:
            raise self._http.malformed(path, item, str(exc)) from exc
