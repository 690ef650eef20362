"""Registry auth: challenge parsing, and Basic and Bearer-token auth against a real registry."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest

from image_updater.errors import RegistryAuthError, RegistryError, TransientRegistryError
from image_updater.registry.auth import Challenge, normalize_scopes, parse_challenges
from image_updater.registry.credentials import (
    Anonymous,
    CredentialSource,
    DockerConfigCredentials,
    EnvCredentials,
)
from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from image_updater.secrets import SecretRegistry
from tests.fixtures.fault_proxy import FaultProxy
from tests.fixtures.http_stub import HttpStub, Recorded, Reply, loopback_tls_context
from tests.fixtures.registry import RegistryServer, push_image
from tests.fixtures.token_issuer import SERVICE, TokenIssuer
from tests.fixtures.tools import require_tool

pytestmark = pytest.mark.integration

T = TypeVar("T")
USER = "ci-bot"
PASSWORD = "Pa55-w0rd:with,odd\"chars"
ENV = {"REG_PASSWORD": PASSWORD}
INDEX = "application/vnd.oci.image.index.v1+json"
GOOD = EnvCredentials(username=USER, password_env="REG_PASSWORD", environ=ENV,
                      secrets=SecretRegistry())
BAD = EnvCredentials(username=USER, password_env="REG_PASSWORD",
                     environ={"REG_PASSWORD": "wrong-" + PASSWORD}, secrets=SecretRegistry())


class Requests:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, url: str) -> None:
        self.seen.append((method, url))


async def no_sleep(delay: float) -> None:
    return None


def client(host: str, credentials: CredentialSource, *, requests: Requests | None = None,
           wall_clock: Callable[[], float] | None = None, **options: Any) -> OciRegistry:
    extra: dict[str, Any] = {"wall_clock": wall_clock} if wall_clock else {}
    return OciRegistry(RegistryOptions(host=host, insecure=True, credentials=credentials,
                                       **options),
                       on_request=requests, sleep=no_sleep, **extra)


def run(registry: OciRegistry, scenario: Callable[[OciRegistry], Awaitable[T]]) -> T:
    async def main() -> T:
        async with registry:
            return await scenario(registry)
    return asyncio.run(main())


# -- challenge parsing (pure) --------------------------------------------------------------

CHALLENGES: list[tuple[str, list[Challenge]]] = [
    ('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
     'scope="repository:team/app:pull,push"',
     [Challenge("bearer", {"realm": "https://auth.example.com/token",
                           "service": "registry.example.com",
                           "scope": "repository:team/app:pull,push"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('bearer  realm = "https://a/t" , service=svc', [Challenge("bearer", {"realm": "https://a/t",
                                                                          "service": "svc"})]),
    ('Bearer realm="https://a/t",error="insufficient_scope",scope="repository:a:pull '
     'repository:b:pull"',
     [Challenge("bearer", {"realm": "https://a/t", "error": "insufficient_scope",
                           "scope": "repository:a:pull repository:b:pull"})]),
    (r'Basic realm="say \"hi\", please"', [Challenge("basic", {"realm": 'say "hi", please'})]),
    ('Negotiate abc==, Basic realm="r"', [Challenge("negotiate", {}),
                                          Challenge("basic", {"realm": "r"})]),
    ('Basic realm="r", Bearer realm="https://a/t",service="s"',
     [Challenge("basic", {"realm": "r"}),
      Challenge("bearer", {"realm": "https://a/t", "service": "s"})]),
    ("", []),
    ('Bearer REALM="https://a/t"', [Challenge("bearer", {"realm": "https://a/t"})]),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGES)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


@pytest.mark.parametrize(("scopes", "expected"), [
    (["repository:a:push,pull"], ("repository:a:pull,push",)),
    (["repository:a:pull", "repository:a:push"], ("repository:a:pull,push",)),
    (["repository:b:pull repository:a:pull", ""], ("repository:a:pull", "repository:b:pull")),
    (["registry:catalog:*"], ("registry:catalog:*",)),
    (["garbage"], ()),
])
def test_normalize_scopes(scopes: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_scopes(scopes) == expected


# -- Basic auth: registry with htpasswd ------------------------------------------------------


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    workdir = tmp_path_factory.mktemp("htpasswd")
    # -i reads the password from stdin: a secret never goes into a process argument list.
    line = subprocess.run([require_tool("htpasswd"), "-Bni", USER], input=PASSWORD,
                          capture_output=True, text=True, check=True).stdout
    (workdir / "htpasswd").write_text(line)
    config = {"auth": {"htpasswd": {"realm": "test-realm", "path": str(workdir / "htpasswd")}}}
    with RegistryServer(extra_config=config) as server:
        with httpx.Client(auth=(USER, PASSWORD), timeout=10) as c:
            push_image(server.url, "basic/app", "dev", seed="basic-dev", client=c)
            push_image(server.url, "basic/app", "prod", seed="basic-prod", client=c)
        yield server


def test_basic_auth_works_and_is_sent_preemptively(htpasswd_registry: RegistryServer) -> None:
    requests = Requests()

    async def scenario(reg: OciRegistry) -> None:
        await reg.ping()
        assert sorted(await reg.list_tags("basic/app")) == ["dev", "prod"]
        assert set(await reg.digests("basic/app", ["dev", "prod", "nope"])) == {"dev", "prod"}

    run(client(htpasswd_registry.host, GOOD, requests=requests), scenario)
    # 1 ping + 1 list + 3 HEADs, plus the single anonymous attempt that learnt "Basic"
    assert len(requests.seen) == 6
    assert all(PASSWORD not in url for _, url in requests.seen)


@pytest.mark.parametrize(("credentials", "hint"), [
    (BAD, "environment variable REG_PASSWORD"),
    (Anonymous(), "anonymous"),
])
def test_basic_auth_refused_names_registry_and_repository(
        htpasswd_registry: RegistryServer, credentials: CredentialSource, hint: str) -> None:
    with pytest.raises(RegistryAuthError) as info:
        run(client(htpasswd_registry.host, credentials),
            lambda reg: reg.get_manifest("basic/app", "dev"))
    message = str(info.value)
    assert f"Registry {htpasswd_registry.host} refused access to repository basic/app" in message
    assert "HTTP 401" in message and hint in message
    assert PASSWORD not in message and "wrong-" not in message
    assert info.value.registry == htpasswd_registry.host


# -- Bearer tokens: registry with token auth and our issuer ----------------------------------


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
    with TokenIssuer(users={USER: PASSWORD}, workdir=tmp_path_factory.mktemp("issuer")) as it:
        yield it


@pytest.fixture(scope="module")
def token_registry(issuer: TokenIssuer) -> Iterator[RegistryServer]:
    with RegistryServer(extra_config={"auth": issuer.registry_auth_config()}) as server:
        token = httpx.get(issuer.realm, auth=(USER, PASSWORD), timeout=10, params={
            "service": SERVICE, "scope": "repository:tok/app:pull,push"}).json()["token"]
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            for tag in ("dev", "staging", "prod"):
                push_image(server.url, "tok/app", tag, seed=f"tok-{tag}", client=c)
        yield server


def fetches_since(issuer: TokenIssuer, start: int) -> list[dict[str, Any]]:
    return issuer.requests[start:]


def test_token_auth_fetches_one_token_for_many_concurrent_requests(
        issuer: TokenIssuer, token_registry: RegistryServer) -> None:
    start = issuer.token_fetches
    tags = ["dev", "staging", "prod", *(f"missing-{i}" for i in range(9))]

    async def scenario(reg: OciRegistry) -> None:
        # all HEADs start together, before any token exists: they must share one fetch
        found = await reg.digests("tok/app", tags)
        assert set(found) == {"dev", "staging", "prod"}
        assert sorted(await reg.list_tags("tok/app")) == ["dev", "prod", "staging"]
        manifest = await reg.get_manifest("tok/app", "dev")
        assert manifest.digest == found["dev"]
        assert await reg.created("tok/app", found["prod"]) is not None

    run(client(token_registry.host, GOOD), scenario)
    fetched = fetches_since(issuer, start)
    assert len(fetched) == 1
    assert fetched[0]["user"] == USER
    assert fetched[0]["scope"] == ["repository:tok/app:pull"]
    assert fetched[0]["service"] == SERVICE


def test_token_refused_names_registry_repository_and_source(
        issuer: TokenIssuer, token_registry: RegistryServer) -> None:
    with pytest.raises(RegistryAuthError) as info:
        run(client(token_registry.host, BAD), lambda reg: reg.list_tags("tok/app"))
    message = str(info.value)
    assert f"token server {issuer.realm} for registry {token_registry.host}" in message
    assert "pull on repository tok/app" in message
    assert "environment variable REG_PASSWORD" in message and "HTTP 401" in message
    assert PASSWORD not in message and "wrong-" not in message


def test_push_scope_is_requested_for_writes_and_mounts(
        issuer: TokenIssuer, token_registry: RegistryServer) -> None:
    start = issuer.token_fetches

    async def scenario(reg: OciRegistry) -> None:
        manifest = await reg.get_manifest("tok/app", "staging")
        blobs = json.loads(manifest.body)
        for blob in [blobs["config"], *blobs["layers"]]:
            assert await reg.mount_blob("tok/promoted", blob["digest"], "tok/app")
        assert await reg.put_manifest("tok/promoted", "prod", manifest) == manifest.digest
        assert await reg.digests("tok/promoted", ["prod"]) == {"prod": manifest.digest}

    run(client(token_registry.host, GOOD), scenario)
    scopes = [tuple(f["scope"]) for f in fetches_since(issuer, start)]
    assert ("repository:tok/app:pull", "repository:tok/promoted:pull,push") in scopes
    assert ("repository:tok/promoted:pull,push",) in scopes
    # each scope is fetched once and then cached
    assert len(scopes) == len(set(scopes))


def test_token_expiry_is_honoured_with_the_injected_clock(
        issuer: TokenIssuer, token_registry: RegistryServer) -> None:
    start = issuer.token_fetches
    now = [1_000.0]

    async def scenario(reg: OciRegistry) -> None:
        await reg.list_tags("tok/app")
        now[0] += issuer.expires_in * 0.5
        await reg.list_tags("tok/app")  # still fresh
        now[0] += issuer.expires_in * 0.45  # inside the refresh margin before expiry
        await reg.list_tags("tok/app")

    run(client(token_registry.host, GOOD, wall_clock=lambda: now[0]), scenario)
    assert len(fetches_since(issuer, start)) == 2


def test_access_token_field_is_accepted(issuer: TokenIssuer,
                                        token_registry: RegistryServer) -> None:
    issuer.token_field = "access_token"
    try:
        tags = run(client(token_registry.host, GOOD), lambda reg: reg.list_tags("tok/app"))
    finally:
        issuer.token_field = "token"
    assert "dev" in tags


# -- token server behaviour the real issuer never shows, on the stub -----------------------


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


def challenge_stub(stub: HttpStub, token_reply: Reply | None = None) -> None:
    def registry(request: Recorded) -> Reply:
        if request.headers.get("authorization") == "Bearer stub-token":
            return Reply(200, {"Content-Type": "application/json"}, b'{"tags":["v1"]}')
        challenge = (f'Bearer realm="{stub.url}/token",service="stub, inc.",'
                     'scope="repository:a/b:pull,push"')
        return Reply(401, {"WWW-Authenticate": challenge})

    stub.handle("GET", "/v2/a/b/tags/list", registry)
    stub.add("GET", "/token", token_reply or Reply(
        200, {"Content-Type": "application/json"},
        b'{"access_token":"stub-token","expires_in":3600}'))


def test_challenge_values_with_commas_reach_the_token_server(stub: HttpStub) -> None:
    challenge_stub(stub)
    assert run(client(stub.host, GOOD), lambda reg: reg.list_tags("a/b")) == ["v1"]
    token_request = stub.requests_to("GET", "/token")[0]
    query = parse_qs(token_request.query)
    assert query["service"] == ["stub, inc."]
    # the challenge asked for pull,push; our GET needed pull: one merged scope
    assert query["scope"] == ["repository:a/b:pull,push"]
    assert token_request.headers["authorization"].startswith("Basic ")


def test_token_server_outage_is_transient(stub: HttpStub) -> None:
    challenge_stub(stub, Reply(503))
    with pytest.raises(TransientRegistryError, match=r"after 3 attempt\(s\).*token server"):
        run(client(stub.host, GOOD, max_retries=2), lambda reg: reg.list_tags("a/b"))
    assert len(stub.requests_to("GET", "/token")) == 3


def test_token_response_without_token_is_an_auth_error(stub: HttpStub) -> None:
    challenge_stub(stub, Reply(200, {"Content-Type": "application/json"}, b'{"nope": 1}'))
    with pytest.raises(RegistryAuthError, match="without a usable 'token' or 'access_token'"):
        run(client(stub.host, GOOD), lambda reg: reg.list_tags("a/b"))


def test_unknown_docker_config_host_is_anonymous(tmp_path: Path, stub: HttpStub) -> None:
    # Credentials for another host are never sent to this one.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"other.example": {"auth": "dTpw"}}}))
    challenge_stub(stub)
    run(client(stub.host, DockerConfigCredentials(path=config, host=stub.host,
                                                           secrets=SecretRegistry())),
        lambda reg: reg.list_tags("a/b"))
    assert "authorization" not in stub.requests_to("GET", "/token")[0].headers


# -- credentials stay home: redirects to other hosts, plain-HTTP realms ---------------------


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_a_challenge_from_a_redirect_target_is_never_answered(
        htpasswd_registry: RegistryServer, scheme: str) -> None:
    """Registry → proxy redirecting manifests → another host asking for credentials, whose
    Bearer realm is a third host: not one request carrying credentials may reach either."""
    with FaultProxy(htpasswd_registry.url) as proxy, HttpStub() as other, \
            HttpStub() as realm:
        realm.add("GET", "/token", Reply(200, {"Content-Type": "application/json"},
                                         b'{"token":"stolen","expires_in":3600}'))
        challenge = (f'Bearer realm="{realm.url}/token",service="other"' if scheme == "bearer"
                     else 'Basic realm="other"')
        other.handle("HEAD", "/v2/basic/app/manifests/dev",
                     lambda request: Reply(401, {"WWW-Authenticate": challenge}))
        proxy.redirect("HEAD", r"/v2/basic/app/manifests/dev", to=other.url)

        async def scenario(reg: OciRegistry) -> None:
            # The registry's own challenge first, so Basic is sent preemptively from now on.
            assert sorted(await reg.list_tags("basic/app")) == ["dev", "prod"]
            await reg.head_manifest("basic/app", "dev")

        with pytest.raises(RegistryAuthError) as info:
            run(client(proxy.host, GOOD), scenario)
        hosts = proxy.host, other.host
    message = str(info.value)
    assert all(host in message for host in hosts)
    assert "redirected" in message and PASSWORD not in message
    # The preemptive header did reach the registry itself, so the test can tell.
    assert any("authorization" in r.headers for r in proxy.requests)
    assert other.requests and all("authorization" not in r.headers for r in other.requests)
    assert realm.requests == []


def test_a_blob_redirect_to_an_anonymous_host_works_without_credentials(
        htpasswd_registry: RegistryServer) -> None:
    """Blob stores behind a redirect are the normal case: they are read, anonymously (and
    the bytes are hashed, so the other host cannot change what is read)."""
    with httpx.Client(auth=(USER, PASSWORD), timeout=10) as c:
        digest = push_image(htpasswd_registry.url, "basic/redirected", "dev", seed="blob",
                            client=c)

    async def config_of(reg: OciRegistry) -> tuple[str, bytes]:
        manifest = json.loads((await reg.get_manifest("basic/redirected", digest)).body)
        config = manifest["config"]["digest"]
        response = httpx.get(f"{htpasswd_registry.url}/v2/basic/redirected/blobs/{config}",
                             auth=(USER, PASSWORD), follow_redirects=True)
        return config, response.content

    config, blob = run(client(htpasswd_registry.host, GOOD), config_of)
    with FaultProxy(htpasswd_registry.url) as proxy, HttpStub() as other:
        other.add("GET", f"/v2/basic/redirected/blobs/{config}",
                  Reply(200, {"Content-Type": "application/octet-stream"}, blob))
        proxy.redirect("GET", r"/v2/basic/redirected/blobs/.*", to=other.url)
        created = run(client(proxy.host, GOOD),
                      lambda reg: reg.created("basic/redirected", digest))
    assert created is not None
    assert any("authorization" in r.headers for r in proxy.requests)
    assert other.requests and all("authorization" not in r.headers for r in other.requests)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_a_manifest_redirected_to_another_host_is_refused(
        htpasswd_registry: RegistryServer, method: str) -> None:
    """Digests and manifests come only from the configured registry: a redirect target
    serving another image (consistent HEAD and GET) must not decide what is written."""
    body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": []}).encode()
    with FaultProxy(htpasswd_registry.url) as proxy, HttpStub() as other:
        other.add(method, "/v2/basic/app/manifests/dev",
                  Reply(200, {"Content-Type": INDEX,
                              "Docker-Content-Digest": "sha256:" + "e" * 64}, body))
        proxy.redirect(method, r"/v2/basic/app/manifests/dev", to=other.url)

        async def scenario(reg: OciRegistry) -> object:
            if method == "HEAD":
                return await reg.head_manifest("basic/app", "dev")
            return await reg.get_manifest("basic/app", "dev")

        with pytest.raises(RegistryError) as info:
            run(client(proxy.host, GOOD), scenario)
        other_host = other.host
    message = str(info.value)
    assert f"Registry {proxy.host} redirected" in message and other_host in message
    assert "only from the configured registry host" in message
    assert all("authorization" not in r.headers for r in other.requests)


@pytest.fixture
def tls_stub() -> Iterator[HttpStub]:
    with HttpStub(tls=loopback_tls_context()) as server:
        yield server


def test_a_plain_http_token_realm_is_refused_for_a_tls_registry(
        tls_stub: HttpStub, stub: HttpStub) -> None:
    challenge = f'Bearer realm="{stub.url}/token",service="svc"'
    tls_stub.add("GET", "/v2/a/b/tags/list", Reply(401, {"WWW-Authenticate": challenge}))
    stub.add("GET", "/token", Reply(200, {}, b'{"token":"t"}'))
    registry = OciRegistry(RegistryOptions(host=tls_stub.host, insecure_skip_verify=True,
                                           credentials=GOOD), sleep=no_sleep)
    with pytest.raises(RegistryAuthError) as info:
        run(registry, lambda reg: reg.list_tags("a/b"))
    message = str(info.value)
    assert f"plain-HTTP token realm {stub.url}/token" in message
    assert "insecure: true" in message
    assert stub.requests == []


def test_a_plain_http_token_realm_is_used_for_an_insecure_registry(stub: HttpStub) -> None:
    challenge_stub(stub)  # the stub is plain HTTP, and so is its realm
    assert run(client(stub.host, GOOD), lambda reg: reg.list_tags("a/b")) == ["v1"]
