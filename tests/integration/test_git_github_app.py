"""git over HTTP with a GitHub App installation token, against real servers on loopback.

The GitHub API stand-in (``ForgeServer``) mints installation tokens from JWTs signed with the
App's key; the git server (``git http-backend`` in ``GitHttpServer``) lets in only a token
that stand-in minted and that has not expired by the clock the test controls.
"""

from __future__ import annotations

import asyncio
import logging
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import (
    GitHubAppGitSettings,
    GitSettings,
    RegistrySettings,
    Settings,
)
from image_updater.errors import ConfigError
from image_updater.model import GitTarget
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.forge_server import ForgeServer, GitHubApp
from tests.fixtures.gitrepo import BRANCH, BareRepo, GitHttpServer, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image
from tests.integration.test_git_writer import set_digest

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"
T0 = 1_800_000_000.0
#: short-lived tokens, so a few clock steps cross an expiry (GitHub's last an hour)
LIFETIME = 600.0


@pytest.fixture
def app_key(tmp_path: Path) -> tuple[Path, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "app.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public.decode()


class Clock:
    """Epoch seconds the test moves forward; the API stand-in, the git server and
    image-updater all read it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def github(app_key: tuple[Path, str], clock: Clock) -> Iterator[ForgeServer]:
    app = GitHubApp("123", "456", app_key[1], token_lifetime=LIFETIME)
    with ForgeServer("github", app=app, clock=clock) as server:
        yield server


@pytest.fixture
def bare(tmp_path: Path) -> BareRepo:
    # owner/name in the URL path, as on GitHub
    return make_bare_repo(tmp_path / "remotes", name="org/deploys.git")


@pytest.fixture
def http_remote(bare: BareRepo, github: ForgeServer) -> Iterator[GitHttpServer]:
    root = bare.path.parent.parent
    with GitHttpServer(root, username="x-access-token", accept=github.app_token_valid) as server:
        yield server


def app_settings(tmp_path: Path, key: Path, github: ForgeServer,
                 *registries: str) -> Settings:
    return Settings(
        cache_dir=str(tmp_path / "cache"),
        registries=tuple(RegistrySettings(host=h, insecure=True, timeout=2, max_retries=1)
                         for h in registries),
        git=GitSettings(author_name="image-updater", author_email="bot@example.com",
                        github_app=GitHubAppGitSettings(
                            app_id="123", installation_id="456", private_key_file=str(key),
                            api_url=github.api_url)))


def test_a_cycle_pushes_with_an_installation_token_never_in_argv_or_logs(
        registry: RegistryServer, bare: BareRepo, github: ForgeServer,
        http_remote: GitHttpServer, app_key: tuple[Path, str], tmp_path: Path,
        clock: Clock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    clock.now = time.time()  # run_once mints with the wall clock
    trace = tmp_path / "git-trace.log"
    # GIT_TRACE records the argv of every git process and of the helpers it runs
    monkeypatch.setenv("GIT_TRACE", str(trace))
    caplog.set_level(logging.DEBUG)
    url = http_remote.url("org/deploys.git")
    apps, problems = load_text(textwrap.dedent(f"""\
        app: application-x
        image: {registry.host}/appgit/application-x
        git: {{url: "{url}", branch: {BRANCH}}}
        environments:
          dev: {{file: {DEV}}}
        """), "policies.yaml")
    assert problems == []
    digest = push_image(registry.url, "appgit/application-x", "dev", seed="appgit")

    result = asyncio.run(run_once(app_settings(tmp_path, app_key[0], github, registry.host),
                                  apps))

    assert result.failures == [] and [c.digest for c in result.changes] == [digest]
    assert f"digest: {digest}" in bare.show(BRANCH, DEV).decode()
    assert any(r.startswith("POST /org/deploys.git/git-receive-pack 200")
               for r in http_remote.requests)
    [token] = github.issued_app_tokens
    assert set(http_remote.passwords) == {token}  # every request let in carried it
    assert github.violations == []
    traced = trace.read_text()
    assert "password=$IMAGE_UPDATER_GIT_TOKEN" in traced  # the helper ran, given a name only
    assert token not in traced
    assert token not in caplog.text
    clone_config = next((tmp_path / "cache" / "repos").rglob(".git/config")).read_text()
    assert token not in clone_config and url in clone_config  # no userinfo in the remote


def test_a_token_expiring_between_commands_is_reminted_and_git_gets_the_new_one(
        bare: BareRepo, github: ForgeServer, http_remote: GitHttpServer,
        app_key: tuple[Path, str], tmp_path: Path, clock: Clock) -> None:
    secrets = SecretRegistry()
    runtime = Runtime(app_settings(tmp_path, app_key[0], github), secrets=secrets, clock=clock)
    url = http_remote.url("org/deploys.git")
    repo = runtime.repo_for(GitTarget(url=url, branch=BRANCH))
    try:
        repo.sync()
        assert github.issued_app_tokens == ["ghs_fixture0001"]
        assert set(http_remote.passwords) == {"ghs_fixture0001"}
        let_in = len(http_remote.passwords)

        clock.now += LIFETIME + 1  # the first token has expired: the server refuses it now
        assert not github.app_token_valid("ghs_fixture0001")
        result = repo.commit_and_push(set_digest()[0])

        assert result.sha is not None and bare.head() == result.sha
        assert github.issued_app_tokens == ["ghs_fixture0001", "ghs_fixture0002"]
        assert set(http_remote.passwords[let_in:]) == {"ghs_fixture0002"}

        # inside the renewal margin (5 minutes before expiry) the next command gets a new one
        clock.now += LIFETIME - 200
        assert github.app_token_valid("ghs_fixture0002")
        let_in = len(http_remote.passwords)
        repo.sync()
        assert github.issued_app_tokens[-1] == "ghs_fixture0003"
        assert set(http_remote.passwords[let_in:]) == {"ghs_fixture0003"}
        # each token and the key were added to the registry the logs are masked with
        pem = app_key[0].read_text().strip()
        assert secrets.mask(f"ghs_fixture0002 ghs_fixture0003 {pem}") == "*** *** ***"
    finally:
        asyncio.run(runtime.aclose())


def test_a_bad_app_key_is_a_settings_error_at_start_naming_the_setting_not_the_key(
        bare: BareRepo, github: ForgeServer, http_remote: GitHttpServer, tmp_path: Path,
        clock: Clock) -> None:
    """Checked when the runtime starts (and by validate), not at the first push at night."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key at all\n")
    with pytest.raises(ConfigError, match=re.escape(str(bad))) as info:
        Runtime(app_settings(tmp_path, bad, github), secrets=SecretRegistry(), clock=clock)
    assert "git.github_app.private_key_file" in str(info.value)
    assert "not a key at all" not in str(info.value)
    assert github.issued_app_tokens == [] and http_remote.passwords == []


@pytest.mark.parametrize("url", ["git@github.com:org/deploys.git",
                                 "ssh://git@github.com/org/deploys.git",
                                 "https://github.com/deploys.git"])
def test_a_github_app_needs_an_https_owner_name_url(
        url: str, app_key: tuple[Path, str], github: ForgeServer, tmp_path: Path) -> None:
    runtime = Runtime(app_settings(tmp_path, app_key[0], github), secrets=SecretRegistry())
    with pytest.raises(ConfigError, match=r"git\.github_app"):
        runtime.repo_for(GitTarget(url=url, branch=BRANCH))

