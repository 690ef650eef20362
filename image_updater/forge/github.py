"""GitHub and GitHub Enterprise Server: REST API version 2022-11-28.

Pull requests are issues on GitHub, so labels, assignees and comments go through the
issues endpoints while reviewers go through the pulls endpoint.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from image_updater.clocks import WallClock
from image_updater.errors import ConfigError
from image_updater.forge.base import (
    ForgeOptions,
    PullRequest,
    PullRequestRequest,
    check_branch,
    newest_for_branch,
)
from image_updater.forge.fields import (
    MalformedError,
    best_effort,
    github_shaped_pull_request,
    text_at,
)
from image_updater.forge.http import ForgeHttp, Site, Sleep
from image_updater.forge.tokens import TokenSource, check_token, token_source
from image_updater.secrets import SecretRegistry, read_secret_file

SITE = Site(
    label="GitHub",
    permission='the "Contents: write" and "Pull requests: write" permissions '
    '(classic tokens: the "repo" scope)',
)
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
PAGE_SIZE = 100
MAX_PAGES = 10
#: GitHub rejects app JWTs valid for more than 10 minutes; 9 leaves room for clock drift.
JWT_LIFETIME = 540
#: renew an installation token this long before it expires, so no request races expiry.
TOKEN_REFRESH_MARGIN = 300.0


class GitHubForge:
    def __init__(
        self,
        options: ForgeOptions,
        *,
        sleep: Sleep,
        clock: WallClock,
        secrets: SecretRegistry,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._options = options
        self._tokens: TokenSource
        self._http = ForgeHttp(
            options, site=SITE, auth=self._auth_headers, describe_auth=self._describe_auth,
            headers=HEADERS, sleep=sleep, clock=clock, transport=transport,
        )
        if options.app_id is not None:
            self._tokens = GitHubAppToken(options, http=self._http, clock=clock,
                                          secrets=secrets)
        else:
            self._tokens = token_source(options, secrets=secrets)

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens.token()}"}

    def _describe_auth(self) -> str:
        return self._tokens.describe()

    def _repo(self, suffix: str) -> str:
        return f"repos/{self._options.repository}{suffix}"

    # -- Forge

    def find(self, head_branch: str) -> list[PullRequest]:
        check_branch(head_branch, what="head branch")
        path = self._repo("/pulls")
        params: dict[str, str | int] = {
            # GitHub wants "owner:branch"; our branches live in the deploy repository itself.
            "head": f"{self._options.owner}:{head_branch}",
            "state": "all", "sort": "created", "direction": "desc",
        }
        items = self._http.paginate(
            path, params, size_param="per_page", size=PAGE_SIZE, max_pages=MAX_PAGES
        )
        return newest_for_branch([self._parse(item, path) for item in items], head_branch)

    def create(self, req: PullRequestRequest) -> PullRequest:
        path = self._repo("/pulls")
        body = {"title": req.title, "head": req.head, "base": req.base, "body": req.body,
                "draft": req.draft}
        pr = self._parse(self._http.call("POST", path, json=body), path)
        n = pr.number
        if req.labels:
            best_effort("adding labels", n, lambda: self._http.call(
                "POST", self._repo(f"/issues/{n}/labels"), json={"labels": list(req.labels)}))
        if req.reviewers:
            best_effort("requesting reviewers", n, lambda: self._request_reviewers(n, req))
        if req.assignees:
            best_effort("adding assignees", n, lambda: self._http.call(
                "POST", self._repo(f"/issues/{n}/assignees"),
                json={"assignees": list(req.assignees)}))
        return pr

    def _request_reviewers(self, number: int, req: PullRequestRequest) -> None:
        users = [r for r in req.reviewers if "/" not in r]
        teams = [r.split("/", 1)[1] for r in req.reviewers if "/" in r]  # team slug
        body: dict[str, list[str]] = {}
        if users:
            body["reviewers"] = users
        if teams:
            body["team_reviewers"] = teams
        self._http.call("POST", self._repo(f"/pulls/{number}/requested_reviewers"), json=body)

    def update(self, pr: PullRequest, *, title: str, body: str) -> PullRequest:
        path = self._repo(f"/pulls/{pr.number}")
        return self._parse(
            self._http.call("PATCH", path, json={"title": title, "body": body}), path
        )

    def close(self, pr: PullRequest, *, comment: str) -> PullRequest:
        self.comment(pr, comment)
        path = self._repo(f"/pulls/{pr.number}")
        return self._parse(self._http.call("PATCH", path, json={"state": "closed"}), path)

    def comment(self, pr: PullRequest, text: str) -> None:
        self._http.call("POST", self._repo(f"/issues/{pr.number}/comments"), json={"body": text})

    def disconnect(self) -> None:
        self._http.close()

    # -- parsing

    def _parse(self, item: Any, path: str) -> PullRequest:
        try:
            # GitHub reports a merged pull request as "closed" with merged_at set.
            merged = isinstance(item, dict) and item.get("merged_at") is not None
            return github_shaped_pull_request(item, merged=merged)
        except MalformedError as exc:
            raise self._http.malformed(path, item, str(exc)) from exc


class GitHubAppToken:
    """Installation tokens for a GitHub App, minted with an app JWT and cached until expiry.

    PyJWT is imported lazily: only GitHub App users need it (with ``cryptography``). The
    private key is read at each mint and, like each token minted, added to ``secrets``.
    """

    def __init__(self, options: ForgeOptions, *, http: ForgeHttp, clock: WallClock,
                 secrets: SecretRegistry, key_setting: str | None = None) -> None:
        self._options = options
        #: the setting that names the key file, for messages
        self._key_setting = key_setting or f"forges[{options.repository}].app_private_key_file"
        self._secrets = secrets
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()  # several engine workers may ask at once
        self._token: str | None = None
        self._expires = 0.0

    def describe(self) -> str:
        return _app_description(self._options)

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires - TOKEN_REFRESH_MARGIN:
                self._token, self._expires = self._mint()
            return self._token

    def close(self) -> None:
        """Release the HTTP connections (only for a source from :func:`open_app_token`)."""
        self._http.close()

    def _mint(self) -> tuple[str, float]:
        path = f"app/installations/{self._options.app_installation_id}/access_tokens"
        assertion = self._app_jwt()
        payload = self._http.call("POST", path, auth={"Authorization": f"Bearer {assertion}"})
        try:
            token = check_token(text_at(payload, "token"), "the GitHub App token response")
            self._secrets.add(token)
            expires = _epoch(text_at(payload, "expires_at"))
        except (MalformedError, ValueError) as exc:
            # Never quote this payload: it holds the token.
            raise self._http.malformed(path, "(body not shown: it holds a token)",
                                       str(exc)[:80]) from exc
        return token, expires

    def check_key(self) -> None:
        """Sign an app JWT now (no request): a missing or wrong key is a ConfigError at
        start, not a failed push at night."""
        self._app_jwt()

    def _app_jwt(self) -> str:
        import jwt  # lazy: PyJWT is needed only for GitHub App authentication

        key_file = str(self._options.app_private_key_file)
        key = read_secret_file(key_file, setting=self._key_setting, secrets=self._secrets)
        now = int(self._clock())
        # iat is backdated a minute because GitHub rejects JWTs "issued in the future"
        # when our clock runs slightly ahead of theirs.
        claims = {"iat": now - 60, "exp": now + JWT_LIFETIME, "iss": str(self._options.app_id)}
        try:
            return str(jwt.encode(claims, key, algorithm="RS256"))
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"the GitHub App private key file {key_file} ({self._key_setting}) does not "
                "hold a PEM RSA private key; download a new key from the app's settings page."
            ) from exc


def open_app_token(options: ForgeOptions, *, secrets: SecretRegistry, key_setting: str,
                   sleep: Sleep = time.sleep, clock: WallClock = time.time,
                   transport: httpx.BaseTransport | None = None) -> GitHubAppToken:
    """An installation token source with its own HTTP client, for git over HTTPS.

    ``options`` must carry the app fields; ``key_setting`` names the key file's setting in
    messages. Call ``token()`` for a token valid for at least ``TOKEN_REFRESH_MARGIN``
    seconds, and ``close()`` when done. No request is sent here.
    """
    if options.app_id is None:
        raise ConfigError(f"{key_setting}: a GitHub App token source needs app_id, "
                          "app_installation_id and app_private_key_file.")
    # The mint call passes its own Authorization header; nothing else is sent with this client.
    http = ForgeHttp(options, site=SITE, auth=lambda: {},
                     describe_auth=lambda: _app_description(options), headers=HEADERS,
                     sleep=sleep, clock=clock, transport=transport)
    return GitHubAppToken(options, http=http, clock=clock, secrets=secrets,
                          key_setting=key_setting)


def _app_description(o: ForgeOptions) -> str:
    """Which App, installation and key file: for messages (never the key itself)."""
    return (f"GitHub App {o.app_id} (installation {o.app_installation_id}, key file "
            f"{o.app_private_key_file})")


def _epoch(stamp: str) -> float:
    """Epoch seconds of an ISO 8601 time such as GitHub's "2016-07-11T22:14:10Z"."""
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # GitHub times are UTC even when unmarked
    return when.timestamp()
