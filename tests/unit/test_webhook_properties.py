"""Webhook parsers, fuzzed: any body gives a list of valid images or a 400, never a crash.

A webhook body is untrusted input from the network. Whatever it holds, ``parse_webhook``
must answer with (host, repository) pairs that pass our own validation, or raise the
parsers' error with status 400; any other exception would be a 500 and a stack trace.
The examples are derandomized (a fixed seed), so a run is reproducible and CI is stable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
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
                                        children, max_size=4)),
    max_leaves=12,
)
payloads = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
headers = st.fixed_dictionaries({}, optional={
    "x-github-event": st.sampled_from(["package", "registry_package", "push", ""]),
})

# One well-formed push per source, and what it parses to.
VALID: dict[str, tuple[dict[str, str], dict[str, Any], list[tuple[str, str]]]] = {
    "registry": ({}, {"events": [{"action": "push",
                                  "target": {"repository": "team/app", "tag": "1.0"},
                                  "request": {"host": "registry.example.com:5000"}}]},
                 [("registry.example.com:5000", "team/app")]),
    "dockerhub": ({}, {"repository": {"repo_name": "nginx"}}, [("docker.io", "library/nginx")]),
    "harbor": ({}, {"type": "PUSH_ARTIFACT", "event_data": {
        "repository": {"repo_full_name": "team/app"},
        "resources": [{"resource_url": "harbor.example.com/team/app:1.0"}]}},
               [("harbor.example.com", "team/app")]),
    "github": ({"x-github-event": "package"}, {"package": {
        "package_type": "CONTAINER", "name": "App", "owner": {"login": "Team"}}},
               [("ghcr.io", "team/app")]),
    "quay": ({}, {"repository": "team/app", "docker_url": "quay.io/team/app"},
             [("quay.io", "team/app")]),
    "ecr": ({}, {"account": "123456789012", "region": "eu-west-1", "detail": {
        "action-type": "PUSH", "result": "SUCCESS", "repository-name": "team/app"}},
            [("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "team/app")]),
}


# What replaces a part of a real payload: shallow, so the search spends its time deep inside.
junk = (scalars | st.lists(scalars, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=3))


def near(value: Any) -> st.SearchStrategy[Any]:
    """``value`` with some parts replaced by arbitrary JSON or dropped: the deep branches."""
    if isinstance(value, dict):
        kept = st.fixed_dictionaries({k: near(v) for k, v in value.items()})
        some = st.fixed_dictionaries({}, optional={k: near(v) for k, v in value.items()})
        return st.one_of(kept, kept, kept, some, junk)
    if isinstance(value, list):
        items = st.tuples(*(near(v) for v in value)).map(list)
        return st.one_of(items, items, items, junk)
    return st.one_of(st.just(value), st.just(value), st.just(value), scalars)


near_valid = st.sampled_from(sorted(VALID)).flatmap(
    lambda source: st.tuples(st.just(source), near(VALID[source][0]), near(VALID[source][1])))


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


@FUZZ
@given(case=near_valid)
# Found by this test: a null host came back as None instead of "" (not said).
@example(case=("registry", {}, {"events": [{"action": "push", "request": {"host": None},
                                            "target": {"repository": "a/b", "tag": "1"}}]}))
def test_damaged_real_payloads_never_crash_a_parser(case: tuple[str, Any, Any]) -> None:
    source, head, payload = case
    if not isinstance(head, dict) or not all(isinstance(v, str) for v in head.values()):
        head = {}  # headers are always a str -> str mapping; only the body is untrusted JSON
    _assert_valid_or_400(source, head, json.dumps(payload).encode())


def test_every_source_has_a_well_formed_case() -> None:
    assert set(VALID) == set(SOURCES)


@pytest.mark.parametrize("source", sorted(VALID))
def test_the_undamaged_payload_parses(source: str) -> None:
    """The fuzzing must not pass merely because every body is refused."""
    head, payload, images = VALID[source]
    assert parse_webhook(source, head, json.dumps(payload).encode()) == images
