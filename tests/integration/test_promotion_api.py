"""``POST /api/v1/promotions`` on a running daemon, and ``promote --server``, end to end.

Real components: the CNCF registry on 127.0.0.1, a bare deploy repository, the daemon
(:class:`~tests.fixtures.daemon.InProcessDaemon`, serving its real port) and a local OIDC
issuer signing real service-account tokens (:mod:`tests.fixtures.oidc`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_updater.cli import main
from image_updater.config.api import load_api
from image_updater.registry.base import MANIFEST_ACCEPT
from tests.fixtures.daemon import InProcessDaemon, daemon_settings, wait_until
from tests.fixtures.gitrepo import BareRepo, make_bare_repo
from tests.fixtures.oidc import OidcIssuer
from tests.fixtures.registry import RegistryServer, digest_of, push_image

pytestmark = pytest.mark.integration

TOKEN = "ci-token-0123456789abcdef0123"
NARROW = "narrow-token-0123456789abcdef"
APPS = ("shop", "held", "race")
HOLDS = """\
held:
  prod:
    kind: hold
    by: alice@example.com
    reason: incident 4711
    since: "2026-11-29T23:00:00Z"
"""


def values(env: str, digest: str) -> str:
    return f'image:\n  tag: "{env}"\n  digest: "{digest}"\n'


@dataclass
class Site:
    registry: RegistryServer
    bare: BareRepo
    issuer: OidcIssuer
    daemon: InProcessDaemon
    repos: dict[str, str]          # app -> registry repository
    staging: dict[str, str]        # app -> the digest git says staging runs (tested)
    prod: dict[str, str]           # app -> what :prod pointed at before
    tmp: Path

    def post(self, body: dict[str, Any] | bytes, token: str | None = TOKEN,
             content_type: str = "application/json") -> httpx.Response:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.daemon.url + "/api/v1/promotions", content=content,
                          headers=headers, timeout=30)

    def request(self, app: str, digest: str | None = None, **extra: Any) -> dict[str, Any]:
        """``app``'s staging-to-prod promotion of what git says staging runs; ``extra``
        adds or replaces fields."""
        return {"app": app, "from": "staging", "to": "prod",
                "digest": digest or self.staging[app], **extra}

    def tag(self, app: str, tag: str = "prod") -> str | None:
        r = httpx.get(f"{self.registry.url}/v2/{self.repos[app]}/manifests/{tag}", timeout=10,
                      headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        return digest_of(r.content) if r.status_code == 200 else None

    def git_prod(self, app: str) -> str:
        return self.bare.show("master", f"{app}/values-prod.yaml").decode()


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        yield running


@pytest.fixture
def site(registry: RegistryServer, issuer: OidcIssuer, tmp_path: Path) -> Iterator[Site]:
    run = uuid.uuid4().hex[:8]
    repos = {app: f"api/{app}-{run}" for app in APPS}
    staging = {app: push_image(registry.url, repos[app], "staging", seed=f"S{app}{run}")
               for app in APPS}
    prod = {app: push_image(registry.url, repos[app], "prod", seed=f"P{app}{run}")
            for app in APPS}
    files = {f"{app}/values-{env}.yaml": values(env, (staging if env == "staging" else prod)[app])
             for app in APPS for env in ("staging", "prod")}
    bare = make_bare_repo(tmp_path / "remotes", files={**files, ".image-updater/holds.yaml": HOLDS})
    policies = tmp_path / "policies"
    policies.mkdir()
    for app in APPS:
        (policies / f"{app}.yaml").write_text(
            f"app: {app}\nimage: {registry.host}/{repos[app]}\n"
            f"git: {{url: {bare.url}, branch: master}}\n"
            "defaults: {strategy: digest, write: {digest: image.digest}}\n"
            "environments:\n" + "".join(
                f"  {env}: {{file: {app}/values-{env}.yaml, tag: {env}}}\n"
                for env in ("staging", "prod")))
    (tmp_path / "ci").write_text(TOKEN, encoding="utf-8")
    (tmp_path / "narrow").write_text(NARROW, encoding="utf-8")
    api = load_api({
        "tokens": [{"name": "ci", "file": str(tmp_path / "ci"), "apps": ["*"], "envs": ["prod"]},
                   {"name": "narrow", "file": str(tmp_path / "narrow"), "apps": ["blog"],
                    "envs": ["prod"]}],
        "issuers": [{"issuer": issuer.url}],
        "service_accounts": [{"issuer": issuer.url, "subject": "system:serviceaccount:shop:*",
                              "apps": ["shop", "race"], "envs": ["prod"]}],
        "jwks_min_refetch": 0}, "test")
    settings = replace(daemon_settings(tmp_path, registry.host), api=api)
    with InProcessDaemon(settings, [policies]) as daemon:
        daemon.wait_cycles(1)
        yield Site(registry=registry, bare=bare, issuer=issuer, daemon=daemon, repos=repos,
                   staging=staging, prod=prod, tmp=tmp_path)


# -- promotions --------------------------------------------------------------------------------


def test_a_promotion_moves_the_tag_and_lands_in_git_with_its_evidence(site: Site) -> None:
    evidence = {"job": "shop-promote-x7k2", "argocd/sync-revision": "3f2a9c1"}
    r = site.post(site.request("shop", evidence=evidence))

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "promoted" and r.json()["code"] == 0
    assert site.tag("shop") == site.staging["shop"]
    assert f"(was {site.prod['shop']})" in r.json()["message"]
    # the daemon's next cycle (requested at once) writes prod's values file, with evidence
    wait_until(lambda: site.staging["shop"] in site.git_prod("shop"), timeout=30,
               what="the promoted digest in git")
    message = site.bare.log("-1", "--format=%B", "master", "--", "shop/values-prod.yaml")
    assert "Image-Updater-Evidence: job=shop-promote-x7k2" in message
    assert "Image-Updater-Evidence: argocd/sync-revision=3f2a9c1" in message
    assert "Image-Updater-Evidence: promoted-by=token:ci" in message

    replay = site.post(site.request("shop", evidence=evidence))
    assert replay.status_code == 200
    assert replay.json()["status"] == "already"
    assert replay.json()["message"].startswith("already promoted")


def test_a_digest_git_does_not_hold_is_a_conflict(site: Site) -> None:
    r = site.post(site.request("shop", digest=site.prod["shop"]))

    assert r.status_code == 409 and r.json()["code"] == 4
    assert "nothing was promoted" in r.json()["message"]
    assert site.tag("shop") == site.prod["shop"]


def test_a_held_target_is_refused_with_423(site: Site) -> None:
    r = site.post(site.request("held"))

    assert r.status_code == 423 and r.json()["code"] == 10
    assert "held" in r.json()["message"]
    assert site.tag("held") == site.prod["held"]


@pytest.mark.parametrize(("make", "status"), [
    (lambda s: None, 401),
    (lambda s: "not-the-token-0123456789abcdef", 401),
    (lambda s: s.issuer.token(expires_in=-300), 401),
    (lambda s: s.issuer.token(audience="https://kubernetes.default.svc"), 401),
    (lambda s: OidcIssuer().token(issuer="https://cluster-z.example"), 401),
    (lambda s: s.issuer.token("blog", "ci"), 403),        # verified, but no grant
    (lambda s: NARROW, 403),                              # a token for other apps
], ids=["absent", "wrong", "expired", "audience", "unknown-issuer", "sa-not-allowed",
        "token-not-allowed"])
def test_callers_that_cannot_be_trusted_are_refused(site: Site, make: Any, status: int
                                                    ) -> None:
    r = site.post(site.request("shop"), token=make(site))

    assert r.status_code == status, r.text
    assert r.json()["code"] == 5 and r.json()["message"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert site.tag("shop") == site.prod["shop"]


def test_a_service_account_promotes_and_a_rotated_key_is_picked_up(site: Site) -> None:
    first = site.post(site.request("shop"), token=site.issuer.token())
    assert first.status_code == 200, first.text
    assert site.tag("shop") == site.staging["shop"]

    site.issuer.rotate(alg="ES256")  # the cluster rotates its key: a new kid, a new algorithm
    again = site.post(site.request("shop"), token=site.issuer.token())
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "already"


def test_twenty_racing_requests_for_one_tag_have_exactly_one_winner(site: Site) -> None:
    digests = [site.staging["race"]] + [push_image(site.registry.url, site.repos["race"],
                                                   f"ci-{i}", seed=f"R{i}{uuid.uuid4()}")
                                        for i in range(19)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda d: site.post(site.request("race", digest=d)), digests))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 19, [a.text for a in answers if a.status_code != 409]
    assert answers[0].status_code == 200
    assert site.tag("race") == site.staging["race"]


@pytest.mark.parametrize(("body", "content_type", "status", "says"), [
    (b'{"app": "shop", "from": "staging", "to": "prod"}', "application/json", 400, "digest"),
    (b'{"app": ["shop"], "from": "staging", "to": "prod", "digest": "sha256:00"}',
     "application/json", 400, "app must be"),
    (b'{"app": "shop", "x": 1}', "application/json", 400, "Unknown field"),
    (b"not json", "application/json", 400, "not JSON"),
    (b"{}", "text/plain", 400, "application/json"),
    (json.dumps({"app": "shop", "from": "staging", "to": "prod", "digest": "sha256:" + "a" * 64,
                 "evidence": {"k": "v" * 20000}}).encode(), "application/json", 413,
     "api.max_body_bytes"),
    (json.dumps({"app": "shop", "from": "staging", "to": "prod", "digest": "sha256:" + "a" * 64,
                 "evidence": {"k": "line\nforged"}}).encode(), "application/json", 400,
     "one line"),
], ids=["no-digest", "wrong-type", "unknown-field", "not-json", "content-type", "too-large",
        "newline-in-evidence"])
def test_bad_requests_are_refused(site: Site, body: bytes, content_type: str, status: int,
                                  says: str) -> None:
    r = site.post(body, content_type=content_type)

    assert r.status_code == status, r.text
    assert says in r.json()["message"]
    assert site.tag("shop") == site.prod["shop"]


def test_unknown_apps_and_environments_are_not_found(site: Site) -> None:
    assert site.post({**site.request("shop"), "app": "nope"}).status_code == 404
    r = site.post({**site.request("shop"), "from": "qa"})
    assert r.status_code == 404 and r.json()["code"] == 3 and "qa" in r.json()["message"]


# -- the CLI client ----------------------------------------------------------------------------


def test_promote_server_exits_as_promote_does(site: Site, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    sa_token = site.tmp / "sa-token"
    sa_token.write_text(site.issuer.token(), encoding="utf-8")
    base = ["promote", "shop", "--from", "staging", "--to", "prod", "--server", site.daemon.url]

    wrong = main([*base, "--digest", site.prod["shop"], "--service-account-token",
                  str(sa_token)])
    err = capsys.readouterr().err
    assert wrong == 4 and "error: The job tested" in err
    ok = main([*base, "--digest", site.staging["shop"], "--service-account-token",
               str(sa_token), "--evidence", "job=cli-1"])
    assert ok == 0 and "promoted" in capsys.readouterr().out
    assert site.tag("shop") == site.staging["shop"]
    denied = main([*base, "--digest", site.staging["held"], "--token-file",
                   str(site.tmp / "narrow")])
    assert denied == 5 and "may not promote" in capsys.readouterr().err
    usage = main([*base, "--digest", site.staging["shop"]])
    assert usage == 2 and "--token-file" in capsys.readouterr().err
