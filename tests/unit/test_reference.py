"""Table-driven tests of image reference parsing and docker's normalisation rules."""

from __future__ import annotations

import pytest

from image_updater.errors import InvalidReferenceError
from image_updater.registry.reference import (
    ImageRef,
    api_host,
    check_repository,
    parse_reference,
)

D = "sha256:" + "a" * 64
E = "sha256:" + "0123456789abcdef" * 4

# text -> (registry, repository, tag, digest)
VALID: list[tuple[str, tuple[str, str, str | None, str | None]]] = [
    ("nginx", ("docker.io", "library/nginx", None, None)),
    ("nginx:1.25", ("docker.io", "library/nginx", "1.25", None)),
    ("nginx:latest", ("docker.io", "library/nginx", "latest", None)),
    (f"nginx@{D}", ("docker.io", "library/nginx", None, D)),
    (f"nginx:1.25@{D}", ("docker.io", "library/nginx", "1.25", D)),
    ("bitnami/redis", ("docker.io", "bitnami/redis", None, None)),
    ("bitnami/redis:7.2.4-debian-12-r0", ("docker.io", "bitnami/redis", "7.2.4-debian-12-r0",
                                          None)),
    ("docker.io/nginx", ("docker.io", "library/nginx", None, None)),
    ("docker.io/library/nginx:1", ("docker.io", "library/nginx", "1", None)),
    ("index.docker.io/nginx", ("docker.io", "library/nginx", None, None)),
    ("index.docker.io/team/app:v1", ("docker.io", "team/app", "v1", None)),
    ("registry-1.docker.io/team/app", ("docker.io", "team/app", None, None)),
    ("registry.example.com/team/app", ("registry.example.com", "team/app", None, None)),
    ("registry.example.com/app", ("registry.example.com", "app", None, None)),
    ("registry.example.com:5000/team/app:dev", ("registry.example.com:5000", "team/app", "dev",
                                                None)),
    ("localhost/app", ("localhost", "app", None, None)),
    ("localhost:5000/app:1", ("localhost:5000", "app", "1", None)),
    ("127.0.0.1:5000/a/b/c:prod", ("127.0.0.1:5000", "a/b/c", "prod", None)),
    ("[::1]:5000/app", ("[::1]:5000", "app", None, None)),
    ("Registry.Example.com/app", ("Registry.Example.com", "app", None, None)),
    ("Foo/bar", ("Foo", "bar", None, None)),  # uppercase first part can only be a host
    ("ghcr.io/org/my_app:1.0.0", ("ghcr.io", "org/my_app", "1.0.0", None)),
    ("ghcr.io/org/my__app", ("ghcr.io", "org/my__app", None, None)),
    ("ghcr.io/org/my---app", ("ghcr.io", "org/my---app", None, None)),
    ("ghcr.io/org/my.app", ("ghcr.io", "org/my.app", None, None)),
    ("host/team/app:TAG_Upper.1-x", ("docker.io", "host/team/app", "TAG_Upper.1-x", None)),
    ("h:1/x:_tag", ("h:1", "x", "_tag", None)),
    (f"host.io:443/x@{E}", ("host.io:443", "x", None, E)),
    ("a" * 10 + ".io/" + "b" * 200, ("a" * 10 + ".io", "b" * 200, None, None)),
    ("app:" + "t" * 128, ("docker.io", "library/app", "t" * 128, None)),
    # without a '/', a dotted name is a Docker Hub repository, exactly as docker reads it
    ("registry.example.com", ("docker.io", "library/registry.example.com", None, None)),
]

# text -> fragment the message must contain
INVALID: list[tuple[str, str]] = [
    ("", "empty"),
    (" nginx", "whitespace"),
    ("nginx ", "whitespace"),
    ("Nginx", "lowercase"),
    ("team/App", "lowercase"),
    ("registry.example.com/Team/app", "lowercase"),
    ("nginx:", "tag ''"),
    ("nginx:-bad", "tag '-bad'"),
    ("nginx:.bad", "tag '.bad'"),
    ("app:" + "t" * 129, "tags are 1-128"),
    ("nginx:a/b", "registry host 'nginx:a'"),
    ("nginx@sha256:abc", "sha256"),
    ("nginx@md5:" + "a" * 32, "not a sha256 digest"),
    ("nginx@sha256:" + "A" * 64, "sha256"),
    ("registry.example.com/", "must consist"),
    ("-bad.example.com/app", "host"),
    ("host_name.com/app", "host"),
    ("host.com:port/app", "host"),
    ("team//app", "must consist"),
    ("team/app/", "must consist"),
    ("team/-app", "must consist"),
    ("team/app_", "must consist"),
    ("team/a..b", "must consist"),
    ("a" * 64, "image ID"),
    ("reg.io/" + "b" * 250, "longer than 255"),
    ("team/app?x=1", "must consist"),
    ("team/%2e%2e", "must consist"),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t[:40] for t, _ in VALID])
def test_parse_valid(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(("text", "fragment"), INVALID,
                         ids=[t[:40] or "empty" for t, _ in INVALID])
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text)[:60] in message  # the bad text is quoted
    assert "expected [HOST[:PORT]/]NAME" in message  # and the expected form is shown


@pytest.mark.parametrize(("text", "canonical"), [
    ("nginx", "docker.io/library/nginx"),
    ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
    (f"reg.io:5000/a/b:dev@{D}", f"reg.io:5000/a/b:dev@{D}"),
    (f"reg.io/a@{D}", f"reg.io/a@{D}"),
])
def test_str_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == canonical
    assert parse_reference(str(ref)) == ref


def test_with_tag_drops_digest_and_with_digest_keeps_tag() -> None:
    ref = parse_reference(f"reg.io/team/app:dev@{D}")
    assert ref.with_tag("staging") == ImageRef("reg.io", "team/app", "staging", None)
    assert ref.with_tag("staging").with_digest(E) == ImageRef("reg.io", "team/app", "staging", E)
    with pytest.raises(InvalidReferenceError, match="not a valid tag"):
        ref.with_tag("-x")
    with pytest.raises(InvalidReferenceError, match="not a sha256 digest"):
        ref.with_digest("sha256:short")


@pytest.mark.parametrize(("registry", "host"), [
    ("docker.io", "registry-1.docker.io"),
    ("index.docker.io", "registry-1.docker.io"),
    ("ghcr.io", "ghcr.io"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
])
def test_api_host(registry: str, host: str) -> None:
    assert api_host(registry) == host


def test_image_ref_name_and_api_host() -> None:
    ref = parse_reference("nginx:1")
    assert ref.name == "docker.io/library/nginx"
    assert ref.api_host == "registry-1.docker.io"


@pytest.mark.parametrize("bad", ["", "Team/app", "../etc", "a/../b", "a?b", "a/b/", "/a"])
def test_check_repository_rejects_url_hazards(bad: str) -> None:
    with pytest.raises(InvalidReferenceError, match="not a valid repository name"):
        check_repository(bad)


def test_check_repository_accepts_nested_path() -> None:
    assert check_repository("team/sub-group/app.v2") == "team/sub-group/app.v2"
