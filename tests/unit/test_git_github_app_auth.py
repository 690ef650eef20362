"""git authentication with a minted token (GitHub App): GitAuth.minted and git.github_app."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.config.settings import load_settings, secret_sources
from image_updater.errors import ConfigError
from image_updater.gitops.credentials import TOKEN_VAR, USERNAME_VAR, GitAuth
from image_updater.secrets import SecretRegistry

APP = ("  github_app:\n    app_id: 12345\n    installation_id: 678\n"
       "    private_key_file: /run/secrets/app.pem\n")


def minted(tokens: list[str], secrets: SecretRegistry | None = None) -> GitAuth:
    return GitAuth.minted(mint=lambda: tokens.pop(0), source="GitHub App 1 (installation 2)",
                          secrets=SecretRegistry() if secrets is None else secrets)


def test_each_network_command_asks_the_minter_and_the_token_goes_to_the_environment() -> None:
    secrets = SecretRegistry()
    auth = minted(["ghs_first00000001", "ghs_second0000002"], secrets)

    first, second = auth.environment(), auth.environment()

    assert first == {USERNAME_VAR: "x-access-token", TOKEN_VAR: "ghs_first00000001"}
    assert second[TOKEN_VAR] == "ghs_second0000002"  # not cached here: the minter renews it
    # the helper reads the variable by name: the token is never part of git's configuration
    assert auth.config()[0] == ("credential.helper", "")
    assert f"${TOKEN_VAR}" in auth.config()[1][1]
    assert all("ghs_" not in value for _, value in auth.config())
    assert secrets.mask("ghs_first00000001 ghs_second0000002") == "*** ***"
    assert "GitHub App 1" in auth.describe() and "ghs_" not in auth.describe()
    assert "ghs_" not in repr(auth)


@pytest.mark.parametrize("token", ["", "ghs_one\nghs_two"])
def test_an_unusable_minted_token_is_a_config_error_that_never_shows_it(token: str) -> None:
    with pytest.raises(ConfigError, match="GitHub App 1") as info:
        minted([token]).environment()
    assert "ghs_" not in str(info.value)


def test_a_minted_auth_needs_its_minter() -> None:
    with pytest.raises(TypeError):
        GitAuth(kind="minted", secrets=SecretRegistry())


def test_github_app_settings_load_and_point_at_the_key_as_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("git:\n" + APP)
    settings = load_settings(path, environ={})
    app = settings.git.github_app
    assert app is not None
    assert (app.app_id, app.installation_id) == ("12345", "678")
    assert app.api_url == "https://api.github.com"
    _, files = secret_sources(settings)
    assert ("git.github_app.private_key_file", "/run/secrets/app.pem") in files


@pytest.mark.parametrize(("extra", "why"), [
    ("  token_file: /run/secrets/token\n", "cannot be combined with git.token_file"),
    ("  ssh_key_file: /k\n  known_hosts_file: /h\n", "git.ssh_key_file"),
    (APP.replace("12345", "my-app"), "app_id must be the number"),
    (APP.replace("678", "'6 78'"), "installation_id must be the number"),
    (APP + "    api_url: https://user:pw@ghe.example.com/api/v3\n", "api_url must be"),
])
def test_bad_github_app_settings_are_refused_at_load(tmp_path: Path, extra: str,
                                                     why: str) -> None:
    path = tmp_path / "settings.yaml"
    body = extra if extra.startswith("  github_app") else APP + extra
    path.write_text("git:\n" + body)
    with pytest.raises(ConfigError, match=why) as info:
        load_settings(path, environ={})
    assert "pw@" not in str(info.value)


def test_a_github_app_without_its_key_file_names_the_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("git:\n  github_app: {app_id: 1, installation_id: 2}\n")
    with pytest.raises(ConfigError, match=r"git\.github_app\.private_key_file: required"):
        load_settings(path, environ={})
