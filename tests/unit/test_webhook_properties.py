"""Webhook parsers, fuzzed: any body gives a list of valid images or a 400, never a crash.

A webhook body is untrusted input from the network. Whatever it holds, ``parse_webhook``
must answer with (host, repository) pairs that pass our own validation, or raise the
parsers' error with status 400; any other exception would be a 500 and a stack trace.
The examples are derandomized (a fixed seed), so a run is reproducible and CI is stable.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from image_updater.daemon.webhooks import (
    _HOST_RE,
    _REPO_RE,
    SOURCES,
    WebhookError,
    parse_webhook,
)
from image_updater.errors import ImageUpdaterError

FUZZ = settings(max_examples=500, derandomize=True, deadline=None, database=None)

# The field names and values the parsers look for, so generated payloads reach deep branches
# instead of failing at the first missing key.
FIELDS = [
    "events", "action", "target", "tag", "repository", "request", "host", "repo_name",
    "type", "event_data", "repo_full_name", "resources", "resource_url", "package",
    "registry_package", "package_type", "owner", "login", "name", "docker_url", "specversion",
    "data", "detail", "repository-name", "account", "region", "action-type", "result",
]
WORDS = [
    "push", "PUSH", "SUCCESS", "PUSH_ARTIFACT", "pushImage", "container", "Container",
    "team/app", "library/nginx", "nginx", "quay.io/team/app", "ghcr.io", "Team",
    "registry.example.com:5000", "123456789012", "eu-west-1", "1.0", "", "/", "a//b", "A B",
]

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.sampled_from(WORDS) | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8),
                                        children, max_size=6)),
    max_leaves=30,
)
payloads = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
headers = st.fixed_dictionaries({}, optional={
    "x-github-event": st.sampled_from(["package", "registry_package", "push", ""]),
})


def _assert_valid_or_400(source: str, head: dict[str, str], body: bytes) -> None:
    try:
        images = parse_webhook(source, head, body)
    except WebhookError as exc:
        assert exc.status == 400, exc
        return
    except ImageUpdaterError:
        return  # the project's own error tree is as good an answer
    assert isinstance(images, list)
    for host, repository in images:
        assert isinstance(host, str) and isinstance(repository, str)
        assert _REPO_RE.fullmatch(repository), repository
        assert host == "" or _HOST_RE.fullmatch(host), host


@FUZZ
@given(source=st.sampled_from(SOURCES), body=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_a_parser(source: str, body: bytes) -> None:
    _assert_valid_or_400(source, {}, body)


@FUZZ
@given(source=st.sampled_from(SOURCES), head=headers, payload=payloads)
def test_json_shaped_bodies_never_crash_a_parser(source: str, head: dict[str, str],
                                                 payload: dict[str, Any]) -> None:
    _assert_valid_or_400(source, head, json.dumps(payload).encode())


@FUZZ
@given(source=st.sampled_from(SOURCES), head=headers, payload=json_values)
def test_any_json_document_never_crashes_a_parser(source: str, head: dict[str, str],
                                                  payload: Any) -> None:
    _assert_valid_or_400(source, head, json.dumps(payload).encode())


def test_a_well_formed_distribution_event_is_parsed() -> None:
    """The fuzzing above must not pass merely because every body is refused."""
    body = {"events": [{"action": "push", "target": {"repository": "team/app", "tag": "1.0"},
                        "request": {"host": "registry.example.com:5000"}}]}
    assert parse_webhook("registry", {}, json.dumps(body).encode()) == [
        ("registry.example.com:5000", "team/app")]
