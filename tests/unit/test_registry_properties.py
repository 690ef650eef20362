"""Property tests for what a registry answers: tag lists, manifests and indexes, token
responses and ``WWW-Authenticate`` challenges. Whatever bytes arrive, the parser returns a
checked value or raises an error from image-updater's tree, never another exception.

Fixed seed (``derandomize``), 500 examples per property; JSON-shaped inputs are built from
the fields these documents really have, so the examples reach past the first type check.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from image_updater.errors import ImageUpdaterError
from image_updater.registry import documents
from image_updater.registry.auth import _parse_token_body, parse_challenges
from image_updater.registry.base import Manifest, platform_child
from image_updater.registry.reference import check_digest, check_tag

PROPERTY = settings(max_examples=500, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

WHERE = documents.Where("registry.example.com", "https://registry.example.com/v2/x",
                        "registry.example.com/team/app")
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPES = [INDEX, IMAGE, "application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.docker.distribution.manifest.list.v2+json", "text/html", ""]
DIGEST = "sha256:" + "a" * 64

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from([DIGEST, "dev", "linux", "amd64"]))
keys = st.sampled_from(["tags", "name", "mediaType", "schemaVersion", "manifests", "config",
                        "layers", "digest", "size", "platform", "os", "architecture",
                        "variant", "token", "access_token", "expires_in", "issued_at"])
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                          max_size=6),
    max_leaves=25)
documents_as_bytes = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(keys, json_values, max_size=6).map(lambda v: json.dumps(v).encode()))


def _ours_or_ok(call: Any) -> Any:
    try:
        return call()
    except ImageUpdaterError:
        return None


@PROPERTY
@given(documents_as_bytes)
@example(b'{"tags": "dev"}')
@example(b'{"tags": null}')
@example(b'{"tags": ["dev", 7, "../x", "ok"]}')
def test_tag_lists_are_lists_of_valid_tags_or_our_error(body: bytes) -> None:
    tags = _ours_or_ok(lambda: documents.tag_list(body, WHERE, "team/app"))
    if tags is not None:
        assert isinstance(tags, list)
        for tag in tags:
            assert check_tag(tag) == tag  # only well-formed tags get through


@PROPERTY
@given(st.sampled_from(MEDIA_TYPES), documents_as_bytes)
@example(INDEX, b'{"schemaVersion": 2, "manifests": [{"digest": 5}]}')
@example(IMAGE, b'{"schemaVersion": 2, "config": {"digest": "sha256:zz"}, "layers": {}}')
def test_manifests_and_indexes_are_checked_or_refused_with_our_error(
        content_type: str, body: bytes) -> None:
    media_type = _ours_or_ok(lambda: documents.manifest_media_type(content_type, body, WHERE))
    if media_type is None:
        return
    assert isinstance(media_type, str)
    manifest = Manifest(media_type=media_type, digest=DIGEST, body=body)
    for platform in (None, "linux/amd64", "linux/arm64/v8"):
        child = _ours_or_ok(lambda p=platform: platform_child(
            manifest, p, "registry.example.com/team/app", "registry.example.com"))
        if child is not None:
            assert check_digest(child) == child


@PROPERTY
@given(st.sampled_from([200, 201, 400]), documents_as_bytes)
@example(200, b'{"token": 42}')
@example(200, b'{"token": "t", "expires_in": "soon"}')
@example(200, b'{"access_token": "a b"}')
def test_token_responses_give_a_token_or_our_error(status: int, body: bytes) -> None:
    response = httpx.Response(status, content=body)
    parsed = _ours_or_ok(lambda: _parse_token_body(
        response, "token server https://auth.example.com", "registry.example.com",
        "https://auth.example.com/token"))
    if parsed is not None:
        token, lifetime, issued = parsed
        assert isinstance(token, str) and token and not set(token) & set("\r\n ")
        assert lifetime > 0 and (issued is None or isinstance(issued, float))


@PROPERTY
@given(st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(['Bearer', 'Basic', ' ', ',', '=', '"', '\\', 'realm',
                              'service', 'scope', '"https://a/t"', 'x']),
             max_size=30).map("".join)))
@example('Bearer realm="https://auth/t",service="r",scope="repository:a:pull,push"')
@example('Bearer realm="unterminated')
def test_challenges_parse_or_raise_our_error(header: str) -> None:
    challenges = _ours_or_ok(lambda: parse_challenges(header))
    if challenges is not None:
        assert isinstance(challenges, list)
