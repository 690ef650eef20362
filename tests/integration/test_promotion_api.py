"""``POST /api/v1/promotions`` on a running daemon, and ``promote --server``, end to end.

Real components: the CNCF registry on 127.0.0.1, a bare deploy repository, the daemon
(:class:`~tests.fixtures.daemon.InProcessDaemon`, serving its real port) and a local OIDC
issuer signing real service-account tokens (:mod:`tests.fixtures.oidc`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from image_updater.config.settings import NotificationSettings, NotificationSinkSettings
from image_updater.exit_codes import ExitCode
from image_updater.registry.base import MANIFEST_ACCEPT
from tests.fixtures.cosign import make_key_pair, sign_image
from tests.fixtures.daemon import DaemonProcess, InProcessDaemon, daemon_settings, wait_until
from tests.fixtures.gitrepo import BareRepo, make_bare_repo, push_other_commit
from tests.fixtures.http_stub import HttpStub, Reply
from tests.fixtures.oidc import OidcIssuer
from tests.fixtures.registry import RegistryServer, digest_of, push_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
TOKEN = "ci-token-0123456789abcdef0123"
NARROW = "narrow-token-0123456789abcdef"
APPS = ("shop", "held", "race")
TWINS = ("twin-a", "twin-b")
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


@dataclass
class Deploy:
    """Images and a deploy repository where git and the tags agree: staging runs S, prod P."""

    repos: dict[str, str]
    staging: dict[str, str]
    prod: dict[str, str]
    bare: BareRepo
    policies: Path


def deploy(registry: RegistryServer, tmp_path: Path) -> Deploy:
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
    _twins(registry, run, d := Deploy(repos=repos, staging=staging, prod=prod, bare=bare,
                                      policies=policies), tmp_path)
    return d


def _twins(registry: RegistryServer, run: str, d: Deploy, tmp_path: Path) -> None:
    """Apps twin-a and twin-b: one image and one prod tag, promoted from two staging tags
    (two teams' builds of one image), so two legitimate promotions can race for prod."""
    repo = f"api/twin-{run}"
    prod = push_image(registry.url, repo, "prod", seed=f"PT{run}")
    files = {}
    for name in TWINS:
        d.repos[name], d.prod[name] = repo, prod
        d.staging[name] = push_image(registry.url, repo, f"staging-{name}", seed=f"{name}{run}")
        files[f"{name}/values-staging.yaml"] = values("staging", d.staging[name])
        files[f"{name}/values-prod.yaml"] = values("prod", prod)
        (d.policies / f"{name}.yaml").write_text(
            f"app: {name}\nimage: {registry.host}/{repo}\n"
            f"git: {{url: {d.bare.url}, branch: master}}\n"
            "defaults: {strategy: digest, write: {digest: image.digest}}\n"
            f"environments:\n  staging: {{file: {name}/values-staging.yaml, "
            f"tag: staging-{name}}}\n  prod: {{file: {name}/values-prod.yaml, tag: prod}}\n")
    push_other_commit(d.bare.url, tmp_path, files, message="the twins")


@pytest.fixture
def receiver() -> Iterator[HttpStub]:
    """A Slack-style notification receiver: the daemon tells it what the API did."""
    with HttpStub() as stub:
        stub.add("POST", "/slack-hook", Reply(200))
        yield stub


@pytest.fixture
def site(registry: RegistryServer, issuer: OidcIssuer, receiver: HttpStub, tmp_path: Path
         ) -> Iterator[Site]:
    d = deploy(registry, tmp_path)
    repos, staging, prod, bare, policies = d.repos, d.staging, d.prod, d.bare, d.policies
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
    (tmp_path / "slack-url").write_text(f"{receiver.url}/slack-hook", encoding="utf-8")
    sink = NotificationSinkSettings(name="team", kind="slack",
                                    url_file=str(tmp_path / "slack-url"), backoff=0.1)
    settings = replace(daemon_settings(tmp_path, registry.host), api=api,
                       notifications=NotificationSettings(sinks=(sink,)))
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
    assert "Image-Updater-Evidence: promoted-by=api-token/ci" in message
    assert "Image-Updater-Source: promotion" in message  # not the cycle's own trigger

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


def test_promotions_and_refusals_are_told_to_the_notification_sinks(
        site: Site, receiver: HttpStub) -> None:
    assert site.post(site.request("held")).status_code == 423
    assert site.post(site.request("shop")).status_code == 200

    def told() -> list[str]:
        return [json.loads(r.body)["text"] for r in receiver.requests_to("POST", "/slack-hook")]

    refused = wait_until(lambda: [t for t in told() if "was refused" in t], timeout=20,
                         what="the refusal's notification")
    done = wait_until(lambda: [t for t in told() if "promoted from staging" in t], timeout=20,
                      what="the promotion's notification")
    assert "for api-token/ci" in refused[0] and "held" in refused[0]
    assert "by api-token/ci" in done[0] and site.staging["shop"] in done[0]


def _counted(daemon: InProcessDaemon, sample: str) -> float:
    """The value of one sample line of the daemon's /metrics (0 when absent)."""
    for line in daemon.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_an_unsigned_digest_into_a_gated_environment_is_refused_with_422_and_counted(
        registry: RegistryServer, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    repo = f"api/gated-{run}"
    staging = push_image(registry.url, repo, "staging", seed=f"GS{run}")
    prod = push_image(registry.url, repo, "prod", seed=f"GP{run}")
    bare = make_bare_repo(tmp_path / "remotes", files={
        "gated/values-staging.yaml": values("staging", staging),
        "gated/values-prod.yaml": values("prod", prod)})
    policies = tmp_path / "policies"
    ci = make_key_pair(policies / "keys", name="ci")
    (policies / "gated.yaml").write_text(
        f"app: gated\nimage: {registry.host}/{repo}\n"
        f"git: {{url: {bare.url}, branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n  staging: {file: gated/values-staging.yaml, tag: staging}\n"
        "  prod: {file: gated/values-prod.yaml, tag: prod, "
        "verify: {cosign: {keys: [keys/ci.pub]}}}\n")
    (tmp_path / "ci").write_text(TOKEN, encoding="utf-8")
    api = load_api({"tokens": [{"name": "ci", "file": str(tmp_path / "ci"), "apps": ["*"],
                                "envs": ["prod"]}]}, "test")
    settings = replace(daemon_settings(tmp_path, registry.host), api=api)
    body = json.dumps({"app": "gated", "from": "staging", "to": "prod",
                       "digest": staging}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    with InProcessDaemon(settings, [policies]) as daemon:
        daemon.wait_cycles(1)
        refused = daemon.post("/api/v1/promotions", body, headers)

        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == ExitCode.UNVERIFIED == 11
        assert "requires a cosign signature" in refused.json()["message"]
        assert _counted(daemon, 'image_updater_api_requests_total{code="422",'
                                'route="/api/v1/promotions"}') == 1
        assert _counted(daemon, 'image_updater_api_promotions_total{outcome="unverified"}') == 1

        sign_image(registry.url, repo, staging, ci)
        done = daemon.post("/api/v1/promotions", body, headers)
        assert done.status_code == 200, done.text
        assert _counted(daemon, 'image_updater_api_promotions_total{outcome="promoted"}') == 1
        assert daemon.post("/api/v1/promotions", body, {**headers, "Authorization": "Bearer x"}
                           ).status_code == 401
        assert _counted(daemon, 'image_updater_api_requests_total{code="401",'
                                'route="/api/v1/promotions"}') == 1
    r = httpx.get(f"{registry.url}/v2/{repo}/manifests/prod", timeout=10,
                  headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
    assert digest_of(r.content) == staging  # moved only once it was signed


def test_a_promotion_in_flight_at_shutdown_is_in_git_before_the_daemon_exits(
        registry: RegistryServer, tmp_path: Path) -> None:
    """SIGTERM while a job's promotion runs: the request finishes (the port drains), and
    the daemon writes the moved tag to git, with the job's evidence, before it exits: the
    registry and git never disagree across a restart (and nothing is lost with the process)."""
    d = deploy(registry, tmp_path)
    (tmp_path / "ci").write_text(TOKEN, encoding="utf-8")
    api = load_api({"tokens": [{"name": "ci", "file": str(tmp_path / "ci"), "apps": ["*"],
                                "envs": ["prod"]}]}, "test")
    daemon = InProcessDaemon(replace(daemon_settings(tmp_path, registry.host), api=api),
                             [d.policies]).start()
    daemon.wait_cycles(1)
    answers: list[httpx.Response] = []

    def promote() -> None:
        answers.append(httpx.post(
            daemon.url + "/api/v1/promotions", timeout=30,
            json={"app": "shop", "from": "staging", "to": "prod", "digest": d.staging["shop"],
                  "evidence": {"job": "shop-promote-at-shutdown"}},
            headers={"Authorization": f"Bearer {TOKEN}"}))

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(promote)
        wait_until(lambda: daemon.server.requests_in_flight > 0, timeout=10,
                   what="the promotion in flight")
        assert daemon.stop() == 0
        pending.result()

    assert answers[0].status_code == 200, answers[0].text
    r = httpx.get(f"{registry.url}/v2/{d.repos['shop']}/manifests/prod", timeout=10,
                  headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
    assert digest_of(r.content) == d.staging["shop"]
    assert d.staging["shop"] in d.bare.show("master", "shop/values-prod.yaml").decode()
    message = d.bare.log("-1", "--format=%B", "master", "--", "shop/values-prod.yaml")
    assert "Image-Updater-Evidence: job=shop-promote-at-shutdown" in message


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


def test_two_legitimate_promotions_racing_for_one_tag_cannot_both_succeed(site: Site) -> None:
    """twin-a and twin-b promote different tested digests into the same prod tag at once:
    each expects the tag as it was when its request arrived, so the one served second finds
    it moved (409), as two `promote` commands racing would."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda app: site.post(site.request(app)), TWINS))

    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    winner = TWINS[[a.status_code for a in answers].index(200)]
    assert site.tag(winner) == site.staging[winner]
    loser = next(a for a in answers if a.status_code == 409).json()
    assert loser["code"] == 4 and "Someone else moved the tag" in loser["message"]


def test_twenty_identical_requests_promote_once_and_replay_nineteen_times(site: Site) -> None:
    """Serialized per target tag (the daemon's lock per tag, and the clone's lock around each
    git read): one request moves the tag, the others find it moved and replay."""
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: site.post(site.request("race")), range(20)))

    assert [a.status_code for a in answers] == [200] * 20
    assert sorted(a.json()["status"] for a in answers) == ["already"] * 19 + ["promoted"]
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


def test_tokens_never_reach_the_logs(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    sa_token = site.issuer.token()
    wrong = "not-the-token-" + uuid.uuid4().hex
    assert site.post(site.request("shop"), token=TOKEN).status_code == 200
    assert site.post(site.request("shop"), token=sa_token).status_code == 200
    assert site.post(site.request("shop"), token=wrong).status_code == 401
    assert site.post(site.request("shop"), token=site.issuer.token("x", "y")).status_code == 403

    assert "api-token/ci" in caplog.text and "system:serviceaccount:shop:promoter" in caplog.text
    for secret in (TOKEN, sa_token, sa_token.split(".")[2], wrong):
        assert secret not in caplog.text


def test_the_real_daemon_serves_the_api_from_its_settings_file(
        registry: RegistryServer, issuer: OidcIssuer, tmp_path: Path) -> None:
    """``image-updater run`` with an ``api`` block in YAML (a JWKS file), and ``promote
    --server`` as a job runs it: a process with nothing but the token file."""
    d = deploy(registry, tmp_path)
    jwks = issuer.jwks_file(tmp_path / "jwks.json")
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
interval: 3600
listen: "127.0.0.1:0"
cache_dir: {tmp_path / 'cache'}
registries: [{{host: "{registry.host}", insecure: true}}]
api:
  issuers:
    - issuer: https://cluster.example
      jwks_file: {jwks}
  service_accounts:
    - issuer: https://cluster.example
      subject: "system:serviceaccount:shop:promoter"
      apps: [shop]
      envs: [prod]
""", encoding="utf-8")
    token = tmp_path / "sa-token"
    token.write_text(issuer.token(issuer="https://cluster.example"), encoding="utf-8")
    with DaemonProcess(workdir=tmp_path, config=config, policies=[d.policies], env={}) as daemon:
        job = subprocess.run(
            [sys.executable, "-m", "image_updater.cli", "promote", "shop", "--from", "staging",
             "--to", "prod", "--digest", d.staging["shop"], "--server", daemon.url,
             "--service-account-token", str(token)],
            capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"],
                                                              "PYTHONPATH": str(ROOT)},
            cwd=tmp_path, check=False)
        assert job.returncode == 0, job.stderr
        assert job.stdout.startswith("promoted ")
        wait_until(lambda: d.staging["shop"] in d.bare.show(
            "master", "shop/values-prod.yaml").decode(), timeout=30, what="prod in git")
    message = d.bare.log("-1", "--format=%B", "master")
    assert "Image-Updater-Evidence: promoted-by=system:serviceaccount:shop:promoter" in message


def test_a_flood_of_bad_tokens_is_one_log_line_and_every_refusal_is_counted(
        site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="image_updater")
    before = _counted(site.daemon, 'image_updater_api_requests_total{code="401",'
                                   'route="/api/v1/promotions"}')
    for n in range(30):
        assert site.post(site.request("shop"), token=f"wrong-{n}").status_code == 401

    lines = [r for r in caplog.records if "promotion API refused" in r.getMessage()]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert _counted(site.daemon, 'image_updater_api_requests_total{code="401",'
                                 'route="/api/v1/promotions"}') == before + 30
