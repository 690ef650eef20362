"""Registry JSON is untrusted: tag lists, manifests, indexes and token answers are checked."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from image_updater.errors import RegistryAuthError, RegistryError
from image_updater.registry.auth import RegistryAuth
from image_updater.registry.base import (
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
)
from image_updater.registry.credentials import Anonymous
from image_updater.registry.documents import Where, manifest_media_type, tag_list

WHERE = Where("registry.example", "https://registry.example/v2/team/app/tags/list",
              "registry.example/team/app")
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def doc(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- tag lists -------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "tags"), [
    (doc({"name": "team/app", "tags": ["v1", "v2"]}), ["v1", "v2"]),
    (doc({"name": "team/app", "tags": []}), []),
    # the CNCF registry's answer for a repository whose tags were all deleted
    (doc({"name": "team/app", "tags": None}), []),
    (doc({"name": "team/app"}), []),
])
def test_tag_lists_of_the_documented_shape_are_read(body: bytes, tags: list[str]) -> None:
    assert tag_list(body, WHERE, "team/app") == tags


@pytest.mark.parametrize(("body", "said"), [
    (doc({"tags": "dev"}), "'tags' is not a list of strings ('dev')"),
    (doc({"tags": ["v1", 2]}), "'tags' is not a list of strings"),
    (doc({"tags": {"v1": 1}}), "'tags' is not a list of strings"),
    (doc(["v1"]), "malformed tag list: it is not a JSON object"),
    (b"<html>oops</html>", "malformed tag list: it is not a JSON object"),
])
def test_tag_lists_of_another_shape_are_refused(body: bytes, said: str) -> None:
    with pytest.raises(RegistryError) as info:
        tag_list(body, WHERE, "team/app")
    assert said in str(info.value)
    assert "registry.example" in str(info.value) and WHERE.url in str(info.value)
    assert "(image registry.example/team/app)" in str(info.value)
    assert info.value.url == WHERE.url


def test_tags_that_break_the_grammar_are_dropped_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    body = doc({"tags": ["v1", "-bad", "a" * 129, "ok.2", "has space"]})
    with caplog.at_level(logging.WARNING):
        assert tag_list(body, WHERE, "team/app") == ["v1", "ok.2"]
    assert sum("ignoring invalid tag" in r.getMessage() for r in caplog.records) == 3


# -- manifests and indexes -------------------------------------------------------------------

IMAGE = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1,
                    "size": 10},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2,
                     "size": 20}]}
INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 5,
                        "platform": {"os": "linux", "architecture": "amd64"}},
                       {"mediaType": OCI_MANIFEST, "digest": D2, "size": 5}]}


@pytest.mark.parametrize(("content_type", "body", "media_type"), [
    (OCI_MANIFEST, IMAGE, OCI_MANIFEST),
    (OCI_INDEX, INDEX, OCI_INDEX),
    ("application/json", IMAGE, OCI_MANIFEST),  # the body names its own type
    (DOCKER_MANIFEST_V2, {k: v for k, v in IMAGE.items() if k != "mediaType"},
     DOCKER_MANIFEST_V2),
    ("application/vnd.example.artifact+json", {"anything": 1},
     "application/vnd.example.artifact+json"),  # unknown types: only "a JSON object"
])
def test_manifests_of_the_documented_shape_are_read(content_type: str, body: dict[str, Any],
                                                    media_type: str) -> None:
    assert manifest_media_type(content_type, doc(body), WHERE) == media_type


def with_entry(**changes: Any) -> dict[str, Any]:
    entry = {**INDEX["manifests"][0], **changes}  # type: ignore[index]
    return {**INDEX, "manifests": [entry]}


@pytest.mark.parametrize(("content_type", "body", "said"), [
    (OCI_MANIFEST, [1, 2], "not a JSON object"),
    (OCI_MANIFEST, {**IMAGE, "mediaType": 7}, "'mediaType' is not a string"),
    (OCI_MANIFEST, {**IMAGE, "mediaType": OCI_INDEX}, f"declares itself {OCI_INDEX}"),
    (OCI_MANIFEST, {**IMAGE, "config": "sha256:x"},
     "malformed image manifest: 'config' is not an object"),
    (OCI_MANIFEST, {**IMAGE, "config": {"digest": "md5:abc"}}, "config.digest 'md5:abc'"),
    (OCI_MANIFEST, {**IMAGE, "layers": {"digest": D1}}, "'layers' is not a list"),
    (OCI_MANIFEST, {**IMAGE, "layers": [{"digest": D1, "size": "20"}]},
     "layers[0].size is not a non-negative integer"),
    (OCI_INDEX, {**INDEX, "manifests": "all"}, "malformed index: 'manifests' is not a list"),
    (OCI_INDEX, {**INDEX, "manifests": [D1]}, "manifests[0] is not an object"),
    (OCI_INDEX, with_entry(digest=None), "manifests[0].digest None"),
    (OCI_INDEX, with_entry(digest=D1.upper()), "is not a sha256 digest"),
    (OCI_INDEX, with_entry(mediaType=["x"]), "manifests[0].mediaType is not a string"),
    (OCI_INDEX, with_entry(platform="linux/amd64"), "manifests[0].platform is not an object"),
    (OCI_INDEX, with_entry(platform={"os": "linux", "architecture": 64}),
     "manifests[0].platform is not an object"),
])
def test_manifests_of_another_shape_are_refused(content_type: str, body: Any,
                                                said: str) -> None:
    with pytest.raises(RegistryError) as info:
        manifest_media_type(content_type, doc(body), WHERE)
    assert said in str(info.value)
    assert "Registry registry.example answered" in str(info.value)
    assert info.value.registry == "registry.example" and info.value.url == WHERE.url


# -- token answers, through the pure auth flow -------------------------------------------------

REALM = "https://auth.example/token"


def token_answer(body: bytes) -> str:
    """Drive the flow: 401 with a Bearer challenge, then ``body`` from the realm."""
    auth = RegistryAuth(registry="registry.example", credentials=Anonymous(),
                        clock=lambda: 1000.0, origin="https://registry.example")
    request = httpx.Request("GET", "https://registry.example/v2/team/app/tags/list")
    flow = auth.auth_flow(request)
    next(flow)
    challenge = httpx.Response(401, request=request, headers={
        "WWW-Authenticate": f'Bearer realm="{REALM}",service="svc"'})
    token_request = flow.send(challenge)
    assert str(token_request.url).startswith(REALM)
    retried = flow.send(httpx.Response(200, request=token_request, content=body))
    return retried.headers["Authorization"]


@pytest.mark.parametrize(("body", "header"), [
    (doc({"token": "abc", "expires_in": 300}), "Bearer abc"),
    (doc({"access_token": "xyz", "expires_in": 1.5}), "Bearer xyz"),
    (doc({"token": "", "access_token": "xyz"}), "Bearer xyz"),
    (doc({"token": "abc", "expires_in": None}), "Bearer abc"),
])
def test_token_answers_of_the_documented_shape_are_used(body: bytes, header: str) -> None:
    assert token_answer(body) == header


@pytest.mark.parametrize(("body", "said"), [
    (doc(["abc"]), "JSON that is not an object"),
    (doc({"token": 12345}), "a 'token' that is not a string"),
    (doc({"token": "abc", "access_token": {"t": 1}}), "'access_token' that is not a string"),
    (doc({"token": "abc", "expires_in": "300"}), "'expires_in' '300', which is not a number"),
    (doc({"token": "abc", "expires_in": True}), "'expires_in' True, which is not a number"),
    (doc({"token": "a b"}), "without a usable 'token'"),
    (b"not json", "without a JSON token"),
])
def test_token_answers_of_another_shape_are_refused(body: bytes, said: str) -> None:
    with pytest.raises(RegistryAuthError) as info:
        token_answer(body)
    assert said in str(info.value)
    assert f"token server {REALM} for registry registry.example" in str(info.value)
    assert info.value.url == REALM


def test_a_challenge_from_another_origin_is_not_answered() -> None:
    auth = RegistryAuth(registry="registry.example", credentials=Anonymous(),
                        clock=lambda: 1000.0, origin="https://registry.example")
    request = httpx.Request("GET", "https://registry.example/v2/team/app/manifests/v1")
    flow = auth.auth_flow(request)
    next(flow)
    elsewhere = httpx.Request("GET", "https://blobs.example:8443/v2/team/app/manifests/v1")
    with pytest.raises(RegistryAuthError) as info:
        flow.send(httpx.Response(401, request=elsewhere,
                                 headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'}))
    assert "another host, blobs.example:8443" in str(info.value)
    assert info.value.registry == "registry.example"
