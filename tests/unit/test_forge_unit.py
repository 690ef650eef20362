"""Pure parts of the forge layer: rate-limit headers, settings and request validation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.errors import ConfigError
from image_updater.forge.base import ForgeOptions, PullRequestRequest, keep_draft_marker
from image_updater.forge.ratelimit import DEFAULT_RATE_LIMIT_WAIT, parse_reset, rate_limit_delay
from image_updater.forge.tokens import EnvToken, check_token
from image_updater.retry import parse_retry_after
from image_updater.secrets import SecretRegistry

NOW = 1_750_000_000.0

# (case, status, headers, body, attempt, expected delay or None)
RATE_LIMIT_CASES: list[tuple[str, int, dict[str, str], str, int, float | None]] = [
    ("429 Retry-After seconds", 429, {"Retry-After": "30"}, "", 0, 30.0),
    ("429 Retry-After HTTP-date", 429,
     {"Retry-After": "Mon, 16 Jun 2025 15:07:00 GMT"}, "", 0, 1_750_086_420.0 - NOW),
    ("Retry-After in the past waits 0", 429,
     {"Retry-After": "Sun, 15 Jun 2025 00:00:00 GMT"}, "", 0, 0.0),
    ("header names are case-insensitive", 429, {"retry-after": "8"}, "", 0, 8.0),
    ("GitHub primary: 403 remaining 0 + reset", 403,
     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 42)}, "", 0, 42.0),
    ("GitHub reset already past waits 1 s", 403,
     {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 5)}, "", 0, 1.0),
    ("Retry-After wins over reset", 429,
     {"Retry-After": "2", "X-RateLimit-Reset": str(int(NOW) + 99)}, "", 0, 2.0),
    ("GitLab RateLimit-Reset", 429, {"RateLimit-Reset": str(int(NOW) + 15)}, "", 0, 15.0),
    ("GitHub secondary, no headers: a minute", 403, {},
     '{"message":"You have exceeded a secondary rate limit."}', 0, DEFAULT_RATE_LIMIT_WAIT),
    ("secondary again: doubled", 403, {},
     "You have exceeded a secondary rate limit", 1, 2 * DEFAULT_RATE_LIMIT_WAIT),
    ("429 without any header: a minute", 429, {}, "", 0, DEFAULT_RATE_LIMIT_WAIT),
    ("garbage Retry-After is ignored", 429,
     {"Retry-After": "soon", "RateLimit-Reset": str(int(NOW) + 3)}, "", 0, 3.0),
    ("negative Retry-After is ignored", 429, {"Retry-After": "-5"}, "", 0,
     DEFAULT_RATE_LIMIT_WAIT),
    ("plain 403 is a permission problem", 403, {}, '{"message":"Must have admin rights"}', 0,
     None),
    ("403 with quota left is not a limit", 403,
     {"X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(int(NOW) + 60)},
     "Resource not accessible by integration", 0, None),
    ("401 is never a rate limit", 401, {"Retry-After": "5"}, "", 0, None),
    ("500 is never a rate limit", 500, {"Retry-After": "5"}, "", 0, None),
    ("200 is never a rate limit", 200, {"X-RateLimit-Remaining": "0"}, "", 0, None),
]


@pytest.mark.parametrize(("case", "status", "headers", "body", "attempt", "expected"),
                         RATE_LIMIT_CASES, ids=[c[0] for c in RATE_LIMIT_CASES])
def test_rate_limit_delay(case: str, status: int, headers: dict[str, str], body: str,
                          attempt: int, expected: float | None) -> None:
    assert rate_limit_delay(status, headers, body, now=NOW, attempt=attempt) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("0", 0.0), ("120", 120.0), ("1e3", None), ("12.5", None),
    ("Mon, 16 Jun 2025 15:07:00", None),  # no zone: cannot tell when that is
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("abc", None), ("-1", None), (str(int(NOW) + 10), 10.0), (str(int(NOW)), 1.0),
])
def test_parse_reset(value: str | None, expected: float | None) -> None:
    assert parse_reset(value, now=NOW) == expected


@given(status=st.sampled_from([403, 429]),
       headers=st.dictionaries(
           st.sampled_from(["Retry-After", "X-RateLimit-Reset", "RateLimit-Reset",
                            "X-RateLimit-Remaining"]),
           st.text(max_size=40)),
       body=st.text(max_size=80), attempt=st.integers(0, 5))
def test_rate_limit_delay_never_fails_on_untrusted_headers(
    status: int, headers: dict[str, str], body: str, attempt: int
) -> None:
    delay = rate_limit_delay(status, headers, body, now=NOW, attempt=attempt)
    assert delay is None or delay >= 0.0
    if status == 429:
        assert delay is not None


# ------------------------------------------------------------------- settings

GOOD: dict[str, Any] = {"kind": "github", "api_url": "https://ghe.example.com/api/v3",
                        "repository": "org/deploys", "token_env": "GITHUB_TOKEN"}

BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown kind", {"kind": "bitbucket"}, "not supported"),
    ("credentials in URL", {"api_url": "https://u:hunter2@ghe.example.com/api/v3"},
     "without credentials"),
    ("not http", {"api_url": "ftp://ghe.example.com"}, "http"),
    ("query in URL", {"api_url": "https://ghe.example.com/api/v3?x=1"}, "query"),
    ("repository without owner", {"repository": "deploys"}, "'owner/name'"),
    ("repository with path traversal", {"repository": "org/.."}, "not valid"),
    ("gitlab project path", {"kind": "gitlab", "repository": "group/../x"}, "numeric id"),
    ("no token source", {"token_env": None}, "exactly one"),
    ("two token sources", {"token_file": "/run/secrets/t"}, "exactly one"),
    ("token instead of env var name", {"token_env": "ghp_abc123-def"}, "never the token"),
    ("partial app", {"token_env": None, "app_id": "1"}, "together"),
    ("app on gitea", {"kind": "gitea", "token_env": None, "app_id": "1",
                      "app_private_key_file": "/k.pem", "app_installation_id": "2"},
     "only for kind 'github'"),
    ("non-numeric app id", {"token_env": None, "app_id": "my-app",
                            "app_private_key_file": "/k.pem", "app_installation_id": "2"},
     "numbers"),
    ("negative retries", {"max_retries": -1}, "must not be negative"),
    ("zero timeout", {"timeout": 0}, "timeout must be positive"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_OPTIONS,
                         ids=[c[0] for c in BAD_OPTIONS])
def test_bad_forge_options_are_refused(case: str, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        ForgeOptions(**{**GOOD, **change})
    assert "hunter2" not in str(info.value)
    assert "ghp_abc123" not in str(info.value)


@pytest.mark.parametrize("change", [
    {}, {"kind": "gitlab", "repository": "group/sub/deploys"},
    {"kind": "gitlab", "repository": "1234"}, {"kind": "gitea", "token_env": None,
                                               "token_file": "/run/secrets/gitea"},
    {"token_env": None, "app_id": "1", "app_private_key_file": "/k.pem",
     "app_installation_id": "99"},
])
def test_good_forge_options_are_accepted(change: dict[str, Any]) -> None:
    options = ForgeOptions(**{**GOOD, **change})
    assert options.repository == change.get("repository", "org/deploys")


def test_forge_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ForgeOptions("github", "https://api.github.com", "org/deploys")  # type: ignore[call-arg]


# -------------------------------------------------------------------- requests

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("head with space", {"head": "image updater/x"}, "not a valid git branch"),
    ("head with ..", {"head": "a..b"}, "not a valid git branch"),
    ("head starting with -", {"head": "-x"}, "not a valid git branch"),
    ("empty base", {"base": ""}, "not a valid git branch"),
    ("empty title", {"title": "  "}, "title"),
    ("title with newline", {"title": "a\nb"}, "control characters"),
    ("label with comma", {"labels": ("a,b",)}, "without commas"),
    ("reviewer with space", {"reviewers": ("al ice",)}, "not valid"),
    ("assignee with @", {"assignees": ("@bob",)}, "not valid"),
]


@pytest.mark.parametrize(("case", "change", "message"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_pull_request_requests_are_refused(case: str, change: dict[str, Any],
                                               message: str) -> None:
    fields: dict[str, Any] = {"head": "image-updater/app-prod", "base": "main", "title": "t",
                              **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        PullRequestRequest(**fields)


# --------------------------------------------------------------------- helpers

DRAFT = re.compile(r"\s*(draft:|\[draft\])", re.IGNORECASE)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("Draft: Promote", "Promote again", "Draft: Promote again"),
    ("[Draft] Promote", "Promote again", "Draft: Promote again"),
    ("Draft: Promote", "Draft: again", "Draft: again"),
    ("Promote", "Promote again", "Promote again"),
])
def test_keep_draft_marker(old: str, new: str, expected: str) -> None:
    assert keep_draft_marker(old, new, DRAFT, "Draft: ") == expected


@pytest.mark.parametrize(("raw", "ok"), [
    ("ghp_abc", True), ("glpat-xyz", True), ("", False), ("ghp_abc\n", False),
    ("two words", False), ("line\nbreak", False), ("tökén", False), (" lead", False),
])
def test_check_token(raw: str, ok: bool) -> None:
    if ok:
        assert check_token(raw, "test") == raw
    else:
        with pytest.raises(ConfigError) as info:
            check_token(raw, "environment variable T")
        assert "environment variable T" in str(info.value)
        if raw.strip():
            assert raw.strip() not in str(info.value)


def test_env_token_is_read_at_each_use() -> None:
    environ = {"T": "first"}
    secrets = SecretRegistry()
    source = EnvToken("T", secrets, environ)
    assert source.token() == "first"
    environ["T"] = "second\n"  # a trailing line ending is not part of the token
    assert source.token() == "second"
    assert secrets.mask("first second") == "*** ***"  # both were registered when read
    assert source.describe() == "environment variable T"
