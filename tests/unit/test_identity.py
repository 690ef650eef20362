"""Identities of the promotion API: settings, static tokens, service-account JWTs.

The JWT tests verify real tokens signed by a local issuer (discovery + JWKS on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from image_updater.cli import main
from image_updater.config.api import ApiSettings, Grant, load_api
from image_updater.config.settings import load_settings, secret_sources
from image_updater.errors import (
    ConfigError,
    IdentityUnavailableError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from image_updater.identity import Authenticator, Principal
from image_updater.secrets import SecretRegistry
from tests.fixtures.oidc import OidcIssuer

TOKEN = "s3cr3t-token-0123456789abcdef"


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        yield running


def _settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _api(tmp_path: Path, issuer: OidcIssuer | None = None, **issuer_extra: Any) -> ApiSettings:
    token_file = tmp_path / "ci-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    raw: dict[str, Any] = {"tokens": [{"name": "ci", "file": str(token_file),
                                       "apps": ["shop-*"], "envs": ["staging"]}]}
    if issuer is not None:
        raw["issuers"] = [{"issuer": issuer.url, **issuer_extra}]
        raw["service_accounts"] = [
            {"issuer": issuer.url, "subject": "system:serviceaccount:shop:*",
             "apps": ["shop"], "envs": ["staging", "prod"]}]
        raw["jwks_min_refetch"] = 0
    return load_api(raw, "settings.yaml")


def _authenticate(api: ApiSettings, header: str | None) -> Principal:
    async def run() -> Principal:
        return await Authenticator(api, secrets=SecretRegistry()).authenticate(header)

    return asyncio.run(run())


# -- settings -------------------------------------------------------------------------------


def test_the_api_block_is_read_from_the_settings_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text(TOKEN, encoding="utf-8")
    path = _settings(tmp_path, f"""\
interval: 60
api:
  max_body_bytes: 4096
  tokens:
    - name: ci
      file: {tmp_path / 'tok'}
      apps: ["*"]
      envs: [staging]
  issuers:
    - issuer: https://kubernetes.default.svc
  service_accounts:
    - issuer: https://kubernetes.default.svc
      subject: "system:serviceaccount:shop:promoter"
      apps: [shop]
      envs: [prod]
""")
    settings = load_settings(path, environ={})
    assert settings.interval == 60
    assert settings.api.max_body_bytes == 4096
    assert settings.api.tokens[0].grant == Grant(apps=("*",), envs=("staging",))
    assert settings.api.issuers[0].audiences == ("image-updater",)
    assert settings.api.issuers[0].algorithms == ("RS256", "ES256")
    assert ("api.tokens[ci].file", str(tmp_path / "tok")) in secret_sources(settings)[1]


def test_every_problem_of_the_api_block_is_reported_with_its_position(tmp_path: Path) -> None:
    path = _settings(tmp_path, """\
api:
  tokens:
    - name: ci
      apps: ["*"]
  issuers:
    - issuer: kubernetes
      algorithms: [HS256]
  service_accounts:
    - issuer: https://elsewhere
      subject: "shop:promoter"
      apps: [shop]
      envs: [prod]
  colour: blue
  timeout: 0
""")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    assert f"{path}:14:3: api.timeout: must be more than 0 seconds" in text
    assert f"{path}:3:7: api.tokens[0].file: required key is missing" in text
    assert "api.tokens[0].envs: required key is missing" in text
    assert f"{path}:7:7: api.issuers[0].algorithms: 'HS256' is not allowed" in text
    assert "set jwks_file" in text  # an issuer that is no URL cannot be discovered
    assert f"{path}:10:7: api.service_accounts[0].subject" in text
    assert f"{path}:13:3: api.colour: unknown key" in text


@pytest.mark.parametrize(("entry", "ok"), [
    ({"issuer": "https://oidc.eks.example"}, True),
    ({"issuer": "http://127.0.0.1:8443"}, True),
    ({"issuer": "http://kubernetes.default.svc"}, False),
    ({"issuer": "https://a", "jwks_url": "http://keys.example/jwks"}, False),
    ({"issuer": "http://kubernetes.default.svc", "jwks_file": "/etc/jwks.json"}, True),
])
def test_keys_are_fetched_over_https_or_on_loopback_only(entry: dict[str, str], ok: bool
                                                         ) -> None:
    if ok:
        assert load_api({"issuers": [entry]}, "s.yaml").issuers[0].issuer == entry["issuer"]
    else:
        with pytest.raises(ConfigError, match="not an https:// URL"):
            load_api({"issuers": [entry]}, "s.yaml")


def test_a_service_account_must_name_a_configured_issuer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api.service_accounts\[0\].issuer: 'https://b'"):
        load_api({"issuers": [{"issuer": "https://a"}],
                  "service_accounts": [{"issuer": "https://b", "apps": ["*"], "envs": ["*"],
                                        "subject": "system:serviceaccount:x:y"}]}, "s.yaml")


# -- principals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("app", "env", "allowed"), [
    ("shop", "staging", True), ("shop", "prod", True), ("shop", "dev", False),
    ("shop-api", "staging", True), ("shop-api", "prod", False), ("blog", "staging", False),
])
def test_grants_match_apps_and_target_envs_by_glob(app: str, env: str, allowed: bool) -> None:
    principal = Principal(name="api-token/ci", kind="token", grants=(
        Grant(apps=("shop",), envs=("staging", "prod")),
        Grant(apps=("shop-*",), envs=("stag*",))))
    assert principal.may_promote(app, env) is allowed
    if not allowed:
        with pytest.raises(PermissionDeniedError, match=f"api-token/ci may not promote app {app}"):
            principal.require(app, env)


# -- static tokens -----------------------------------------------------------------------------


def test_a_static_token_is_known_by_its_name_and_never_shown(tmp_path: Path) -> None:
    api = _api(tmp_path)
    principal = _authenticate(api, f"Bearer {TOKEN}")
    assert principal.name == "api-token/ci"
    assert principal.may_promote("shop-web", "staging")
    with pytest.raises(UnauthenticatedError) as info:
        _authenticate(api, f"Bearer {TOKEN}x")
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer ", "x" * 9000])
def test_absent_or_malformed_credentials_are_unauthenticated(tmp_path: Path,
                                                             header: str | None) -> None:
    with pytest.raises(UnauthenticatedError):
        _authenticate(_api(tmp_path), header)


def test_a_rotated_token_file_is_read_again(tmp_path: Path) -> None:
    api = _api(tmp_path)
    now = [0.0]

    async def run() -> tuple[str, str]:
        auth = Authenticator(api, secrets=SecretRegistry(), clock=lambda: now[0])
        first = (await auth.authenticate(f"Bearer {TOKEN}")).name
        (tmp_path / "ci-token").write_text("a-new-token-0123456789abcdef", encoding="utf-8")
        now[0] += 60
        second = (await auth.authenticate("Bearer a-new-token-0123456789abcdef")).name
        with pytest.raises(UnauthenticatedError):
            await auth.authenticate(f"Bearer {TOKEN}")
        return first, second

    assert asyncio.run(run()) == ("api-token/ci", "api-token/ci")


def test_a_short_static_token_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("short", encoding="utf-8")
    api = load_api({"tokens": [{"name": "ci", "file": str(tmp_path / "t"), "apps": ["*"],
                                "envs": ["*"]}]}, "s.yaml")
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        Authenticator(api, secrets=SecretRegistry())


def test_no_identity_configured_refuses_everyone() -> None:
    with pytest.raises(UnauthenticatedError, match="no identities configured"):
        _authenticate(ApiSettings(), f"Bearer {TOKEN}")


# -- service-account tokens ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_service_account_token_is_verified_and_mapped(tmp_path: Path, alg: str) -> None:
    with OidcIssuer(alg=alg) as issuer:
        principal = _authenticate(_api(tmp_path, issuer), f"Bearer {issuer.token()}")
    assert principal.name == "system:serviceaccount:shop:promoter"
    assert principal.kind == "service-account"
    assert principal.may_promote("shop", "prod")
    assert not principal.may_promote("blog", "prod")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"expires_in": -120}, "has expired"),
    ({"audience": "kubernetes"}, "audience is not one of image-updater"),
    ({"issuer": "https://other.example"}, "not one of the daemon.s api.issuers"),
])
def test_bad_service_account_tokens_are_unauthenticated(
        tmp_path: Path, issuer: OidcIssuer, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UnauthenticatedError, match=message):
        _authenticate(_api(tmp_path, issuer), f"Bearer {issuer.token(**kwargs)}")


def test_an_unknown_issuer_is_not_told_which_issuers_the_daemon_trusts(
        tmp_path: Path, issuer: OidcIssuer) -> None:
    with OidcIssuer() as stranger:
        token, stranger_url = stranger.token(), stranger.url
    with pytest.raises(UnauthenticatedError) as info:
        _authenticate(_api(tmp_path, issuer), f"Bearer {token}")
    assert stranger_url in str(info.value) and "api.issuers" in str(info.value)
    assert issuer.url not in str(info.value)


def test_a_token_signed_by_another_cluster_is_unauthenticated(tmp_path: Path,
                                                              issuer: OidcIssuer) -> None:
    with OidcIssuer() as impostor:
        forged = impostor.token(issuer=issuer.url)  # claims our issuer, signed with its key
    with pytest.raises(UnauthenticatedError, match="No signing key of issuer"):
        _authenticate(_api(tmp_path, issuer), f"Bearer {forged}")


def test_alg_none_and_hs256_with_the_public_key_are_refused(tmp_path: Path,
                                                            issuer: OidcIssuer) -> None:
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": issuer.current.kid})
                                      .encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    api = _api(tmp_path, issuer)
    with pytest.raises(UnauthenticatedError, match="algorithm 'none'"):
        _authenticate(api, f"Bearer {header}.{body}.c2ln")
    # the classic confusion: HMAC "signed" with the issuer's public key as the secret
    hs_header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": issuer.current.kid})
                                         .encode()).rstrip(b"=").decode()
    public = json.dumps(issuer.jwks()["keys"][0]).encode()
    mac = hmac.new(public, f"{hs_header}.{body}".encode(), hashlib.sha256).digest()
    hs = f"{hs_header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(UnauthenticatedError, match="algorithm 'HS256'"):
        _authenticate(api, f"Bearer {hs}")


def test_a_service_account_without_a_grant_is_known_but_may_not_promote(
        tmp_path: Path, issuer: OidcIssuer) -> None:
    principal = _authenticate(_api(tmp_path, issuer), f"Bearer {issuer.token('blog', 'ci')}")
    assert principal.name == "system:serviceaccount:blog:ci"
    with pytest.raises(PermissionDeniedError, match=r"api\.service_accounts"):
        principal.require("shop", "prod")


def test_a_rotated_signing_key_is_picked_up_and_refetches_are_rate_limited(
        tmp_path: Path, issuer: OidcIssuer) -> None:
    api = _api(tmp_path, issuer)
    now = [0.0]

    async def run() -> None:
        auth = Authenticator(
            ApiSettings(tokens=api.tokens, issuers=api.issuers,
                        service_accounts=api.service_accounts, jwks_min_refetch=10),
            secrets=SecretRegistry(), clock=lambda: now[0])
        await auth.authenticate(f"Bearer {issuer.token()}")
        assert issuer.jwks_fetches == 1
        await auth.authenticate(f"Bearer {issuer.token()}")
        assert issuer.jwks_fetches == 1  # cached
        now[0] += 11
        issuer.rotate()
        principal = await auth.authenticate(f"Bearer {issuer.token()}")  # new kid
        assert principal.name == "system:serviceaccount:shop:promoter"
        assert issuer.jwks_fetches == 2
        with OidcIssuer() as impostor:  # unknown kids within 10 s: no more fetches
            for _ in range(5):
                with pytest.raises(UnauthenticatedError):
                    await auth.authenticate(f"Bearer {impostor.token(issuer=issuer.url)}")
        assert issuer.jwks_fetches == 2

    asyncio.run(run())


def test_a_jwks_file_verifies_tokens_of_an_unreachable_issuer(tmp_path: Path,
                                                              issuer: OidcIssuer) -> None:
    jwks = issuer.jwks_file(tmp_path / "jwks.json")
    api = load_api({"issuers": [{"issuer": "https://cluster-b.internal",
                                 "jwks_file": str(jwks)}],
                    "service_accounts": [{"issuer": "https://cluster-b.internal",
                                          "subject": "system:serviceaccount:shop:promoter",
                                          "apps": ["shop"], "envs": ["prod"]}]}, "s.yaml")
    token = issuer.token(issuer="https://cluster-b.internal")
    assert _authenticate(api, f"Bearer {token}").may_promote("shop", "prod")
    assert issuer.jwks_fetches == 0


def test_an_unreachable_issuer_is_temporary(tmp_path: Path) -> None:
    issuer = OidcIssuer().start()
    token, api = issuer.token(), _api(tmp_path, issuer)
    issuer.stop()
    with pytest.raises(IdentityUnavailableError, match="Cannot fetch the discovery document"):
        _authenticate(api, f"Bearer {token}")


def test_an_issuer_still_unreachable_stays_temporary_between_refetches(tmp_path: Path) -> None:
    """The first request finds the issuer down (503); the next ones, within
    jwks_min_refetch, must not turn that into "not signed by that cluster" (401): the
    client retries 503 and gives up on 401, so an outage would fail every job for good."""
    issuer = OidcIssuer().start()
    token, api = issuer.token(), _api(tmp_path, issuer)
    issuer.stop()

    async def run() -> list[str]:
        auth = Authenticator(
            ApiSettings(tokens=api.tokens, issuers=api.issuers,
                        service_accounts=api.service_accounts, jwks_min_refetch=10),
            secrets=SecretRegistry(), clock=lambda: 100.0)
        seen = []
        for _ in range(3):
            try:
                await auth.authenticate(f"Bearer {token}")
            except (IdentityUnavailableError, UnauthenticatedError) as exc:
                seen.append(exc.reason)
        return seen

    assert asyncio.run(run()) == ["identity_unavailable"] * 3


# -- validate --config -------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "jwks", "says"), [
    (None, "{\"keys\": [{\"kty\": \"RSA\"}]}", "api.tokens[ci].file"),          # no file
    ("short\n", "{\"keys\": [{\"kty\": \"RSA\"}]}", "shorter than 16 characters"),
    (TOKEN, None, "api.issuers[https://cluster-b.internal].jwks_file"),        # no file
    (TOKEN, "{\"keys\": []}", "has no keys"),
    (TOKEN, "not json", "jwks_file"),
    (TOKEN, "{\"keys\": [{\"kty\": \"RSA\"}]}", None),                            # ok
])
def test_validate_reads_the_api_token_and_jwks_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str | None,
        jwks: str | None, says: str | None) -> None:
    """What the daemon's start (token files) or first request (JWKS files) would refuse,
    validate --config says first, naming the setting and never the token."""
    if token is not None:
        (tmp_path / "ci-token").write_text(token, encoding="utf-8")
    if jwks is not None:
        (tmp_path / "jwks.json").write_text(jwks, encoding="utf-8")
    config = _settings(tmp_path, f"""\
api:
  tokens: [{{name: ci, file: {tmp_path / 'ci-token'}, apps: ['*'], envs: [prod]}}]
  issuers: [{{issuer: "https://cluster-b.internal", jwks_file: {tmp_path / 'jwks.json'}}}]
""")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "shop.yaml").write_text(
        "app: shop\nimage: registry.example.com/shop\n"
        "git: {url: 'https://git.example.com/deploy.git', branch: main}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n  prod: {file: shop/values-prod.yaml, tag: prod}\n")
    code = main(["validate", "--config", str(config), str(policies)])
    printed = capsys.readouterr()
    output = printed.out + printed.err
    assert TOKEN not in output
    if says is None:
        assert code == 0, output
    else:
        assert code == 1 and says in output, output
