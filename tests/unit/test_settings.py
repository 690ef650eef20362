"""The settings file: every mistake reported at once, with its line, and never guessed at."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.config.settings import load_settings
from image_updater.errors import ConfigError

BROKEN = """\
interval: soon
intervall: 3
jitter: -1
registries:
  - host: 127.0.0.1:5000
    insecure: "no"
    max_retries: lots
    insecur: true
  - insecure: true
webhooks: [1]
"""


def test_every_mistake_is_reported_with_its_line_and_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    lines = str(info.value).splitlines()
    assert lines[0] == f"8 problem(s) in settings file {path}:"
    assert [line.strip() for line in lines[1:]] == [
        f"{path}:1:1: interval: must be a number, not 'soon'",
        f"{path}:2:1: intervall: unknown key (did you mean 'interval'?)",
        f"{path}:3:1: jitter: must be at least 0, not -1",
        f"{path}:6:5: registries[0].insecure: must be true or false, not 'no' (write it "
        "without quotes)",
        f"{path}:7:5: registries[0].max_retries: must be a whole number, not 'lots'",
        f"{path}:8:5: registries[0].insecur: unknown key (did you mean 'insecure'?)",
        f"{path}:9:5: registries[1].host: required key is missing",
        f"{path}:10:1: webhooks: must be a mapping of keys to values, not a list",
    ]


@pytest.mark.parametrize(("text", "why"), [
    ("registries: [{host: r.example.com, insecure: 'yes'}]", "must be true or false"),
    ("interval: 0", "must be more than 0"),
    ("registries: [{host: r.example.com, max_concurrency: 0}]", "must be at least 1"),
    ("registries: [{host: r.example.com, timeout: 2.5.1}]", "must be a number"),
    ("git: {author_email: [a, b]}", "must be a string"),
    ("dry_run: 1", "must be true or false"),
])
def test_a_value_of_the_wrong_type_is_never_coerced(tmp_path: Path, text: str, why: str
                                                    ) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=why):
        load_settings(path, environ={})


def test_valid_values_and_numeric_ids_load(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "interval: 60\njitter: 0\nregistries:\n  - {host: 127.0.0.1:5000, insecure: true,\n"
        "     timeout: 3, requests_per_second: 2.5}\nforges:\n"
        "  - {url_prefix: 'https://github.com/org/', kind: github,\n"
        "     api_url: 'https://api.github.com', repository: org/deploys, app_id: 12345,\n"
        "     app_installation_id: 678, app_private_key_file: /k.pem}\n")
    settings = load_settings(path, environ={})
    assert settings.interval == 60.0 and isinstance(settings.interval, float)
    (registry,) = settings.registries
    assert registry.insecure is True and registry.timeout == 3.0
    assert registry.requests_per_second == 2.5
    assert settings.forges[0].app_id == "12345" and settings.forges[0].app_installation_id == "678"


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf"])
def test_environment_overrides_are_checked_like_the_file(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="IMAGE_UPDATER_INTERVAL"):
        load_settings(None, environ={"IMAGE_UPDATER_INTERVAL": value})


def test_non_finite_numbers_and_anchored_booleans(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("interval: .nan\n")
    with pytest.raises(ConfigError, match="interval: must be a number"):
        load_settings(path, environ={})
    path.write_text("dry_run: &off false\nregistries: [{host: r.example.com, insecure: *off}]\n")
    settings = load_settings(path, environ={})
    assert settings.dry_run is False and settings.registries[0].insecure is False


def test_limits_default_to_one_mib_and_are_checked(tmp_path: Path) -> None:
    load = load_settings
    assert load(None, environ={}).limits.policy_file_bytes == 1 << 20
    assert load(None, environ={}).limits.values_file_bytes == 1 << 20
    path = tmp_path / "s.yaml"
    path.write_text("limits: {policy_file_bytes: 2048, values_file_bytes: 4096}\n")
    limits = load(path, environ={}).limits
    assert (limits.policy_file_bytes, limits.values_file_bytes) == (2048, 4096)
    path.write_text("limits:\n  values_file_bytes: 0\n  policy_file_bytes: big\n")
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert "s.yaml:2:3: limits.values_file_bytes: must be at least 1" in str(info.value)
    assert "s.yaml:3:3: limits.policy_file_bytes: must be a whole number" in str(info.value)
