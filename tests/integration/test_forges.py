"""The forge adapters against ForgeServer: documented request shapes, state, errors.

Every test runs against a real HTTP server on 127.0.0.1 that refuses undocumented
requests; the ``rig`` teardown fails the test if the client sent any.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from image_updater.errors import ForgeAuthError, ForgeError, ForgeRateLimitedError
from image_updater.forge.base import Forge, ForgeOptions, PullRequestRequest
from image_updater.forge.factory import open_forge
from image_updater.forge.http import ForgeUnavailableError
from image_updater.secrets import SecretRegistry
from tests.fixtures.forge_server import ForgeServer, GitHubApp
from tests.fixtures.registry import free_port

pytestmark = pytest.mark.integration

KINDS = ("github", "gitlab", "gitea")
TOKEN = "fixture-token-Zq81"
NOW = 1_750_000_000.0
BRANCH = "image-updater/application-x-prod"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Rig:
    server: ForgeServer
    forge: Forge
    options: ForgeOptions
    sleeps: list[float] = field(default_factory=list)


@contextmanager
def make_rig(kind: str, monkeypatch: pytest.MonkeyPatch, *, token: str = TOKEN,
             server: ForgeServer | None = None, **options: Any) -> Iterator[Rig]:
    monkeypatch.setenv("FORGE_TOKEN", token)
    srv = server or ForgeServer(kind, token=TOKEN)
    with srv:
        settings: dict[str, Any] = {"token_env": "FORGE_TOKEN", "repository": "org/deploys",
                                    "max_retries": 2, **options}
        opts = ForgeOptions(kind=kind, api_url=srv.api_url, **settings)  # type: ignore[arg-type]
        sleeps: list[float] = []
        forge = open_forge(opts, secrets=SecretRegistry(), sleep=sleeps.append, clock=lambda: NOW)
        try:
            yield Rig(srv, forge, opts, sleeps)
        finally:
            forge.disconnect()
        assert srv.violations == [], "the client sent undocumented requests"


@pytest.fixture(params=KINDS)
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    with make_rig(request.param, monkeypatch) as r:
        yield r


def request_for(branch: str = BRANCH, **kw: Any) -> PullRequestRequest:
    fields: dict[str, Any] = {"head": branch, "base": "main",
                              "title": "Promote application-x to prod",
                              "body": f"Deploys {DIGEST}.", **kw}
    return PullRequestRequest(**fields)


# ------------------------------------------------------------------- life cycle


def test_create_returns_the_new_pull_request(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    assert (pr.number, pr.state, pr.head_branch, pr.base_branch) == (1, "open", BRANCH, "main")
    assert pr.title == "Promote application-x to prod"
    assert DIGEST in pr.body
    assert pr.url.endswith("/1")
    assert rig.server.prs[1].head == BRANCH


def test_find_by_head_branch_sees_only_that_branch(rig: Rig) -> None:
    rig.forge.create(request_for("image-updater/other-dev"))
    created = rig.forge.create(request_for())
    assert rig.forge.find(BRANCH) == [created]
    assert rig.forge.find("image-updater/nobody-dev") == []


def test_find_returns_all_states_newest_first(rig: Rig) -> None:
    first = rig.forge.create(request_for())
    rig.server.mark_closed(first.number)
    second = rig.forge.create(request_for())
    rig.server.mark_merged(second.number)
    third = rig.forge.create(request_for())
    found = rig.forge.find(BRANCH)
    assert [(p.number, p.state) for p in found] == [
        (third.number, "open"), (second.number, "merged"), (first.number, "closed")]


def test_update_keeps_the_number_and_replaces_title_and_body(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    new_digest = "sha256:" + "cd" * 32
    updated = rig.forge.update(pr, title="Promote application-x (again)",
                               body=f"Deploys {new_digest}.")
    assert updated.number == pr.number
    assert (updated.title, updated.body) == ("Promote application-x (again)",
                                             f"Deploys {new_digest}.")
    [again] = rig.forge.find(BRANCH)
    assert new_digest in again.body and again.title == updated.title


def test_merged_in_the_ui_reads_back_as_merged(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    rig.server.mark_merged(pr.number)
    assert [p.state for p in rig.forge.find(BRANCH)] == ["merged"]


def test_closed_in_the_ui_reads_back_as_closed(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    rig.server.mark_closed(pr.number)
    assert [p.state for p in rig.forge.find(BRANCH)] == ["closed"]


def test_close_comments_then_closes_without_merging(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    closed = rig.forge.close(pr, comment=f"Superseded: {DIGEST} is no longer current.")
    assert closed.state == "closed"
    fake = rig.server.prs[pr.number]
    assert fake.comments == [f"Superseded: {DIGEST} is no longer current."]
    assert (fake.state, fake.merged) == ("closed", False)


def test_comment_is_added(rig: Rig) -> None:
    pr = rig.forge.create(request_for())
    rig.forge.comment(pr, "Waiting for approval.")
    assert rig.server.prs[pr.number].comments == ["Waiting for approval."]


def test_creating_a_duplicate_is_refused_and_not_retried(rig: Rig) -> None:
    rig.forge.create(request_for())
    with pytest.raises(ForgeError, match="already exists") as info:
        rig.forge.create(request_for())
    assert not info.value.temporary
    assert len(rig.server.calls("POST", r".*/(pulls|merge_requests)")) == 2
    assert rig.sleeps == []


# ------------------------------------------------- labels, reviewers, assignees, draft


def test_labels_reviewers_assignees_and_draft_in_documented_shape(rig: Rig) -> None:
    pr = rig.forge.create(request_for(
        labels=("automated", "env/prod"), reviewers=("alice", "org/platform"),
        assignees=("bob",), draft=True))
    fake = rig.server.prs[pr.number]
    assert fake.labels == ["automated", "env/prod"]
    assert fake.assignees == ["bob"]
    assert fake.reviewers == ["alice"]
    assert fake.draft(rig.server.kind)
    kind, server = rig.server.kind, rig.server
    if kind == "github":
        [create] = server.calls("POST", "/repos/org/deploys/pulls")
        assert create.body["draft"] is True
        [labels] = server.calls("POST", r"/repos/org/deploys/issues/1/labels")
        assert labels.body == {"labels": ["automated", "env/prod"]}
        [review] = server.calls("POST", r"/repos/org/deploys/pulls/1/requested_reviewers")
        assert review.body == {"reviewers": ["alice"], "team_reviewers": ["platform"]}
        [assign] = server.calls("POST", r"/repos/org/deploys/issues/1/assignees")
        assert assign.body == {"assignees": ["bob"]}
    elif kind == "gitlab":
        [create] = server.calls("POST", r"/projects/org%2Fdeploys/merge_requests")
        assert create.body["labels"] == "automated,env/prod"
        assert create.body["reviewer_ids"] == [11]   # alice, resolved via GET /users
        assert create.body["assignee_ids"] == [12]   # bob
        assert create.body["title"].startswith("Draft: ")
        assert [c.query for c in server.calls("GET", "/users")] == [
            {"username": ["bob"]}, {"username": ["alice"]}]
    else:
        [create] = server.calls("POST", "/repos/org/deploys/pulls")
        assert create.body["labels"] == [1, 2]       # ids from GET /labels
        assert create.body["assignees"] == ["bob"]
        assert create.body["title"].startswith("WIP: ")
        [review] = server.calls("POST", r"/repos/org/deploys/pulls/1/requested_reviewers")
        assert review.body == {"reviewers": ["alice"], "team_reviewers": ["platform"]}


def test_update_keeps_a_draft_a_draft(rig: Rig) -> None:
    pr = rig.forge.create(request_for(draft=True))
    updated = rig.forge.update(pr, title="New title", body="new body")
    assert updated.title.endswith("New title")
    assert rig.server.prs[pr.number].draft(rig.server.kind)


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_unknown_reviewer_is_logged_and_the_pull_request_kept(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_rig(kind, monkeypatch) as r, caplog.at_level(logging.WARNING):
        pr = r.forge.create(request_for(reviewers=("mallory",)))
        assert r.forge.find(BRANCH) == [pr]
        assert r.server.prs[pr.number].reviewers == []
    assert "mallory" in caplog.text or "reviewers" in caplog.text


# ------------------------------------------------------------------ pagination


def test_find_reads_every_page(rig: Rig) -> None:
    kind = rig.server.kind
    for i in range(30):  # other branches: Gitea lists them too and we filter
        rig.server.seed(f"image-updater/other-{i}", state="closed")
    for _ in range(101):
        rig.server.seed(BRANCH, state="closed")
    found = rig.forge.find(BRANCH)
    assert len(found) == 101
    numbers = [p.number for p in found]
    assert numbers == sorted(numbers, reverse=True)
    path = {"github": "/repos/org/deploys/pulls", "gitea": "/repos/org/deploys/pulls",
            "gitlab": "/projects/org%2Fdeploys/merge_requests"}[kind]
    pages = [c.query["page"][0] for c in rig.server.calls("GET", path)]
    assert pages == (["1", "2", "3"] if kind == "gitea" else ["1", "2"])


def test_gitea_find_filters_head_branch_across_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    with make_rig("gitea", monkeypatch) as r:
        for i in range(120):
            r.server.seed(BRANCH if i in (2, 109) else f"image-updater/app{i}-dev")
        assert [p.number for p in r.forge.find(BRANCH)] == [110, 3]
        calls = r.server.calls("GET", "/repos/org/deploys/pulls")
        assert [(c.query["page"], c.query["limit"]) for c in calls] == [
            (["1"], ["50"]), (["2"], ["50"]), (["3"], ["50"])]


# ----------------------------------------------------------------- rate limits

RATE_LIMITS = [
    ("github", "primary limit: 403, remaining 0, reset", 403,
     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 7)},
     {"message": "API rate limit exceeded for installation ID 456."}, 7.0),
    ("github", "429 with Retry-After", 429, {"Retry-After": "3"},
     {"message": "Too many requests"}, 3.0),
    ("github", "secondary limit without headers: one minute", 403, {},
     {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}, 60.0),
    ("github", "secondary limit with Retry-After", 403, {"Retry-After": "20"},
     {"message": "You have exceeded a secondary rate limit."}, 20.0),
    ("gitlab", "429 with RateLimit-Reset", 429, {"RateLimit-Reset": str(int(NOW) + 12)},
     {"message": "Retry later"}, 12.0),
    ("gitlab", "429 with Retry-After", 429, {"Retry-After": "5"}, {"message": "Retry later"},
     5.0),
    ("gitea", "429 with Retry-After", 429, {"Retry-After": "4"}, {"message": "slow down"}, 4.0),
]


@pytest.mark.parametrize(("kind", "case", "status", "headers", "body", "delay"), RATE_LIMITS,
                         ids=[f"{k}-{c}" for k, c, *_ in RATE_LIMITS])
def test_rate_limited_once_waits_then_succeeds(
    kind: str, case: str, status: int, headers: dict[str, str], body: Any, delay: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_rig(kind, monkeypatch) as r:
        r.server.fail_next(status, headers=headers, body=body, method="POST")
        pr = r.forge.create(request_for())
        assert r.sleeps == [delay]
        assert r.server.prs[pr.number].head == BRANCH
        assert len(r.server.prs) == 1  # the refused attempt created nothing


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limited_beyond_retries_raises_with_retry_after(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_rig(kind, monkeypatch, max_retries=2) as r:
        r.server.fail_next(429, headers={"Retry-After": "9"}, times=3)
        with pytest.raises(ForgeRateLimitedError) as info:
            r.forge.find(BRANCH)
        assert info.value.retry_after == 9.0
        assert info.value.temporary
        assert r.sleeps == [9.0, 9.0]
        assert "org/deploys" in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_longer_than_max_wait_raises_at_once(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_rig(kind, monkeypatch, max_wait=60.0) as r:
        r.server.fail_next(429, headers={"Retry-After": "3600"})
        with pytest.raises(ForgeRateLimitedError) as info:
            r.forge.find(BRANCH)
        assert info.value.retry_after == 3600.0
        assert r.sleeps == []


# ------------------------------------------------------------------ auth errors

PERMISSION_WORDS = {"github": "Pull requests: write", "gitlab": '"api" scope',
                    "gitea": "write:repository"}


@pytest.mark.parametrize("kind", KINDS)
def test_401_is_an_auth_error_naming_repo_and_permission_but_not_the_token(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "wrong-token-Kp55"
    with make_rig(kind, monkeypatch, token=wrong) as r:
        with pytest.raises(ForgeAuthError) as info:
            r.forge.find(BRANCH)
        text = str(info.value)
        assert "org/deploys" in text and r.server.api_url in text and "401" in text
        assert PERMISSION_WORDS[kind] in text
        assert "environment variable FORGE_TOKEN" in text
        assert wrong not in text and TOKEN not in text
        assert r.sleeps == []  # a bad token does not get better by waiting


@pytest.mark.parametrize("kind", KINDS)
def test_403_is_an_auth_error_with_the_forge_reason(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_rig(kind, monkeypatch) as r:
        r.server.fail_next(403, body={"message": "Resource not accessible by integration"})
        with pytest.raises(ForgeAuthError) as info:
            r.forge.create(request_for())
        text = str(info.value)
        assert "Resource not accessible by integration" in text
        assert "org/deploys" in text and PERMISSION_WORDS[kind] in text
        assert TOKEN not in text
        assert r.sleeps == []


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_repository_says_not_found_or_invisible(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_rig(kind, monkeypatch, repository="org/missing") as r:
        with pytest.raises(ForgeError) as info:
            r.forge.find(BRANCH)
        assert not isinstance(info.value, ForgeAuthError)
        assert "org/missing" in str(info.value)
        assert "not found or the token" in str(info.value)


def test_rotated_token_file_is_reread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with make_rig("gitea", monkeypatch, token_env=None, token_file=str(token_file)) as r:
        r.forge.find(BRANCH)
        r.server.tokens = {"rotated-token-2"}
        token_file.write_text("rotated-token-2")
        assert r.forge.find(BRANCH) == []
        assert r.server.requests[-1].headers["authorization"] == "token rotated-token-2"


# ----------------------------------------------------------- 5xx and connections


@pytest.mark.parametrize("kind", KINDS)
def test_5xx_on_a_read_is_retried_with_backoff(kind: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    with make_rig(kind, monkeypatch, backoff=0.5) as r:
        r.server.fail_next(502, method="GET", times=2)
        assert r.forge.find(BRANCH) == []
        assert r.sleeps == [0.5, 1.0]


@pytest.mark.parametrize("kind", KINDS)
def test_5xx_on_create_is_not_repeated(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 502 may hide a pull request that was opened; repeating the POST could open two.
    with make_rig(kind, monkeypatch) as r:
        r.server.fail_next(502, method="POST", body={"message": "bad gateway"})
        with pytest.raises(ForgeUnavailableError) as info:
            r.forge.create(request_for())
        assert info.value.temporary
        assert "bad gateway" in str(info.value)
        assert r.sleeps == []


def test_unreachable_forge_is_temporary_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_TOKEN", TOKEN)
    options = ForgeOptions(kind="gitlab", api_url=f"http://127.0.0.1:{free_port()}/api/v4",
                           repository="group/deploys", token_env="FORGE_TOKEN", max_retries=2)
    sleeps: list[float] = []
    forge = open_forge(options, secrets=SecretRegistry(), sleep=sleeps.append, clock=lambda: NOW)
    try:
        with pytest.raises(ForgeUnavailableError, match="could not complete GET") as info:
            forge.find(BRANCH)
    finally:
        forge.disconnect()
    assert info.value.temporary and len(sleeps) == 2
    assert TOKEN not in str(info.value)


# -------------------------------------------------------------- GitHub App auth


@pytest.fixture
def app_key(tmp_path: Path) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


def test_github_app_installation_token_is_minted_cached_and_renewed(
    app_key: tuple[Path, str],
) -> None:
    key_path, public = app_key
    now = [NOW]
    server = ForgeServer("github", app=GitHubApp("123", "456", public), clock=lambda: now[0])
    with server:
        options = ForgeOptions(kind="github", api_url=server.api_url, repository="org/deploys",
                               app_id="123", app_private_key_file=str(key_path),
                               app_installation_id="456")
        secrets = SecretRegistry()
        forge = open_forge(options, secrets=secrets, sleep=lambda s: None, clock=lambda: now[0])
        try:
            forge.find(BRANCH)
            forge.create(request_for())
            assert server.issued_app_tokens == ["ghs_fixture0001"]
            now[0] += 3600 - 200  # inside the refresh margin before expiry
            forge.find(BRANCH)
        finally:
            forge.disconnect()
    assert server.issued_app_tokens == ["ghs_fixture0001", "ghs_fixture0002"]
    api_auth = [r.headers["authorization"] for r in server.requests if r.path.startswith("/repos")]
    assert api_auth == ["Bearer ghs_fixture0001"] * 2 + ["Bearer ghs_fixture0002"]
    assert server.violations == []
    # every minted token and the private key were added to the registry the logs mask with
    pem = key_path.read_text().strip()
    assert secrets.mask(f"ghs_fixture0001 ghs_fixture0002 {pem}") == "*** *** ***"


def test_github_app_with_the_wrong_key_is_an_auth_error(
    app_key: tuple[Path, str], tmp_path: Path
) -> None:
    key_path, _ = app_key
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other_pem = other.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with ForgeServer("github", app=GitHubApp("123", "456", other_pem)) as server:
        options = ForgeOptions(kind="github", api_url=server.api_url, repository="org/deploys",
                               app_id="123", app_private_key_file=str(key_path),
                               app_installation_id="456")
        forge = open_forge(options, secrets=SecretRegistry(), sleep=lambda s: None)
        try:
            with pytest.raises(ForgeAuthError, match="GitHub App 123") as info:
                forge.find(BRANCH)
        finally:
            forge.disconnect()
    assert "PRIVATE KEY" not in str(info.value)
    assert server.issued_app_tokens == []
