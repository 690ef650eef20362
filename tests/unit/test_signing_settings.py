"""``git.signing`` in the settings file: parsed, checked, and its files masked as secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.config.settings import SigningSettings, load_settings, secret_sources
from image_updater.errors import ConfigError


def settings_file(tmp_path: Path, signing: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text("git:\n  signing:\n" + "".join(f"    {line}\n"
                                                   for line in signing.splitlines()))
    return path


def test_an_openpgp_block_is_read_and_its_files_are_secret_sources(tmp_path: Path) -> None:
    path = settings_file(tmp_path, "format: openpgp\nkey_file: /s/key.asc\n"
                                   "passphrase_file: /s/passphrase")

    settings = load_settings(path, environ={})

    assert settings.git.signing == SigningSettings(format="openpgp", key_file="/s/key.asc",
                                                   passphrase_file="/s/passphrase")
    _, files = secret_sources(settings)
    assert ("git.signing.key_file", "/s/key.asc") in files
    assert ("git.signing.passphrase_file", "/s/passphrase") in files


def test_no_block_means_no_signing(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).git.signing is None


@pytest.mark.parametrize(("signing", "message"), [
    ("format: x509\nkey_file: /k", r"git\.signing\.format 'x509' is not supported; use ssh"),
    ("format: ssh\nkey_file: /k\npassphrase_file: /p",
     r"passphrase_file is set with format ssh"),
    ("format: ssh", r"settings\.yaml:2:3: git\.signing\.key_file: required key is missing"),
    ("format: ssh\nkey_file: /k\nkey_fil: /k", r"git\.signing\.key_fil: unknown key \(did you "
                                               r"mean 'key_file'\?\)"),
])
def test_a_wrong_block_is_a_settings_error(tmp_path: Path, signing: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(settings_file(tmp_path, signing), environ={})
