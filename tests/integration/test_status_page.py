"""The status page in a real browser, from a running daemon on a real registry, real git and
a forge speaking GitHub's API.

Two apps reach every state a person meets: in sync, awaiting approval (with the pull
request's link), held, drifted (a hand edit that also writes a hostile tag and commit
subject), pending and waiting. Headless chromium loads ``/`` and the test reads the DOM it
built: the states, the link, and the hostile tag shown as text with no script element.
``/api/v1/status`` answers exactly what ``image-updater status --format json`` prints.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from image_updater.cli import main
from image_updater.config.settings import load_settings
from image_updater.errors import ConfigError
from image_updater.exit_codes import ExitCode
from tests.fixtures.browser import Browser, Dom
from tests.fixtures.daemon import InProcessDaemon, write_policy
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import VALUES_FILES, BareRepo, make_bare_repo, push_other_commit
from tests.fixtures.registry import RegistryServer, push_image
from tests.fixtures.status_page import status_page

pytestmark = pytest.mark.integration

TOKEN = "forge-token-for-status-page-3c1d"
HOSTILE_TAG = "<script>alert(1)</script>"
HOSTILE_SUBJECT = "<img src=x onerror=alert(2)> pin dev"
HOSTILE_REASON = "<script>alert(3)</script> freeze"
HAND = "sha256:" + "e" * 64


def values(app: str, env: str) -> str:
    return VALUES_FILES[f"application-x/values-{env}.yaml"].replace("application-x", app)


def policy(app: str, image: str, repo: BareRepo, *, gated_prod: bool) -> str:
    """dev follows versions (its values file holds a tag a person can edit), the others
    follow a tag each; shop's prod is gated by a pull request."""
    prod = ", approval: pull-request" if gated_prod else ""
    return textwrap.dedent(f"""\
        app: {app}
        image: {image}
        git: {{url: "file://{repo.path}", branch: master}}
        defaults: {{write: {{digest: image.digest}}}}
        environments:
          dev: {{file: {app}/values-dev.yaml, strategy: semver, constraint: '>=1.0',
                write: {{tag: image.tag, digest: image.digest}}}}
          staging: {{file: {app}/values-staging.yaml, tag: staging}}
          prod: {{file: {app}/values-prod.yaml, tag: prod{prod}}}
        """)


class Site:
    """The deploy repository, policies and settings shared by the daemon and the CLI."""

    def __init__(self, tmp: Path, registry: RegistryServer, forge: ForgeServer) -> None:
        self.tmp, self.registry = tmp, registry
        files = {f"{app}/values-{env}.yaml": values(app, env)
                 for app in ("shop", "hostile") for env in ("dev", "staging", "prod")}
        self.deploy = make_bare_repo(tmp, files)
        self.policies = tmp / "policies"
        self.policies.mkdir()
        for app, gated in (("shop", True), ("hostile", False)):
            (self.policies / f"{app}.yaml").write_text(policy(
                app, f"{registry.host}/status/{app}", self.deploy, gated_prod=gated))
        self.config = tmp / "settings.yaml"
        self.config.write_text(textwrap.dedent(f"""\
            cache_dir: {tmp / 'cache'}
            listen: 127.0.0.1:0
            interval: 3600
            jitter: 0
            registries: [{{host: '{registry.host}', insecure: true, timeout: 5}}]
            git: {{author_name: image-updater, author_email: bot@example.com}}
            forges:
              - {{url_prefix: 'file://{self.deploy.path}', kind: github,
                  api_url: '{forge.api_url}', repository: org/deploys,
                  token_env: TEST_FORGE_TOKEN}}
            status_page: {{max_age: 0, history: 5}}
            """))

    def push(self, app: str, tag: str, seed: str) -> str:
        return push_image(self.registry.url, f"status/{app}", tag, seed=seed)

    def cli(self, *argv: str) -> int:
        return main([*argv, "--config", str(self.config), "--policies", str(self.policies)])


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeServer]:
    monkeypatch.setenv("TEST_FORGE_TOKEN", TOKEN)
    with ForgeServer("github", token=TOKEN) as server:
        yield server


def test_status_page_in_a_real_browser_shows_every_state_and_no_hostile_markup(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    browser = Browser(tmp_path / "browser")
    site = Site(tmp_path, registry, forge)
    for tag in ("1.0.0", "staging", "prod"):
        site.push("shop", tag, seed=f"shop-{tag}")
    for tag in ("1.0.0", "staging"):  # hostile/prod has no tag yet: waiting
        site.push("hostile", tag, seed=f"hostile-{tag}")
    settings = load_settings(site.config)

    with InProcessDaemon(settings, [site.policies]) as daemon, \
            status_page(daemon) as page:
        daemon.wait_cycles(1)
        # after the cycle, what people do: a hold, a hand edit, a new image
        assert site.cli("hold", "shop", "staging", "--reason", HOSTILE_REASON,
                        "--by", "alice@example.com") == ExitCode.OK
        dev = "hostile/values-dev.yaml"
        text = re.sub(r"tag: .*", f'tag: "{HOSTILE_TAG}"', site.deploy.show("master", dev).decode())
        text = re.sub(r"digest: sha256:[0-9a-f]+", f"digest: {HAND}", text)
        push_other_commit(str(site.deploy.path), tmp_path, {dev: text}, HOSTILE_SUBJECT)
        site.push("hostile", "staging", seed="hostile-staging-2")
        page.refresh()

        dom = Dom(browser.dump_dom(page.url + "/"))
        browser.screenshot(page.url + "/", tmp_path / "status-page.png", window="1100,330")
        browser.screenshot(page.url + "/", tmp_path / "status-page-phone.png",
                           window="390,844")
        api = httpx.get(page.url + "/api/v1/status", timeout=10)

    states = {(c["data-env"], (c["class"] or "").split()[1]) for c in dom.named("td")}
    assert states == {
        ("dev", "state-in-sync"), ("staging", "state-held"),
        ("prod", "state-awaiting-approval"),                      # shop
        ("dev", "state-drifted"), ("staging", "state-pending"),
        ("prod", "state-waiting")}                                # hostile
    (pr,) = forge.prs.values()
    assert {"href": f"https://github.example/org/deploys/pull/{pr.number}",
            "rel": "noopener noreferrer"} in dom.named("a")
    # the hostile values are text the browser shows, never elements it built
    assert dom.named("script") == [] and dom.named("img") == []
    assert all(not name.startswith("on") for _, attrs in dom.tags for name in attrs)
    text = dom.all_text
    assert HOSTILE_TAG in text and HOSTILE_REASON in text and HOSTILE_SUBJECT in text
    assert "Computed" in text and "hold by alice@example.com" in text
    assert (tmp_path / "status-page-phone.png").stat().st_size > 1000

    # the API is the CLI's document, byte for byte (the same engine over the same git)
    assert api.status_code == 200
    capsys.readouterr()
    assert site.cli("status", "--format", "json") == ExitCode.OK
    assert json.loads(api.text) == json.loads(capsys.readouterr().out)


def test_snapshot_is_computed_once_read_then_after_every_cycle_never_per_request(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    site = Site(tmp_path, registry, forge)
    first = site.push("hostile", "1.0.0", seed="follow-1")
    settings = load_settings(site.config)
    with InProcessDaemon(settings, [site.policies]) as daemon, \
            status_page(daemon) as page:
        daemon.wait_cycles(1)
        assert page.board.refreshes == 0  # nobody looked yet: no status work at all
        first_read = httpx.get(page.url + "/api/v1/status")
        assert first_read.status_code == 503 and "being computed" in first_read.text
        page.wait_refreshes(1)
        rows = {(r["app"], r["env"]): r for r in httpx.get(page.url + "/api/v1/status").json()}
        assert rows[("hostile", "dev")]["git"]["digest"] == first
        served = page.board.refreshes
        for _ in range(20):  # reads render the snapshot: no new computation
            assert httpx.get(page.url + "/", timeout=10).status_code == 200
        assert page.board.refreshes == served

        second = site.push("hostile", "1.0.1", seed="follow-2")
        daemon.call(daemon.daemon.request_full)
        daemon.wait_cycles(2)
        page.wait_refreshes(served + 1)
        rows = {(r["app"], r["env"]): r for r in httpx.get(page.url + "/api/v1/status").json()}
        assert rows[("hostile", "dev")]["git"]["digest"] == second
        assert rows[("hostile", "dev")]["state"] == "in-sync"


def test_authenticated_access_on_the_daemon_port(tmp_path: Path) -> None:
    """``access: authenticated`` reads through the promotion API's tokens; without any
    identity configured the daemon refuses to start instead of refusing every reader."""
    deploy = make_bare_repo(tmp_path)
    policies = tmp_path / "policies"
    write_policy(policies, "shop", "127.0.0.1:9/status/shop", f"file://{deploy.path}")
    (tmp_path / "reader-token").write_text("status-reader-token-81aa\n")
    config = tmp_path / "settings.yaml"
    base = f"cache_dir: {tmp_path / 'cache'}\nlisten: 127.0.0.1:0\ninterval: 3600\n" \
           "status_page: {access: authenticated}\n"
    config.write_text(base)
    # refused as the settings load (so validate --config says it too), naming file and line
    with pytest.raises(ConfigError, match=r"settings\.yaml:4:\d+: status_page\.access: "
                                          r"'authenticated' needs identities"):
        InProcessDaemon(load_settings(config), [policies]).start()

    config.write_text(base + textwrap.dedent(f"""\
        api:
          tokens:
            - {{name: dashboards, file: {tmp_path / 'reader-token'},
                apps: ['*'], envs: [dev]}}
        """))
    with InProcessDaemon(load_settings(config), [policies]) as daemon:
        assert httpx.get(daemon.url + "/").status_code == 401
        assert httpx.get(daemon.url + "/api/v1/status",
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
        good = {"Authorization": "Bearer status-reader-token-81aa"}
        assert httpx.get(daemon.url + "/", headers=good).status_code == 200
        assert httpx.get(daemon.url + "/healthz").status_code == 200  # probes stay open
