"""Settings a hostile or careless person writes: refused when loaded or validated, before the
daemon opens its port, with the setting named and no secret quoted (found by a hostile trial).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from image_updater.cli import main
from image_updater.config.settings import (
    NotificationSettings,
    NotificationSinkSettings,
    load_settings,
)
from image_updater.config.templates import MAX_TEMPLATE_CHARS, compile_templates
from image_updater.errors import ConfigError
from image_updater.exit_codes import ExitCode
from image_updater.notify.factory import check_sinks
from image_updater.secrets import SecretRegistry


def sink_with_url(tmp_path: Path, url: str) -> NotificationSettings:
    path = tmp_path / "url"
    path.write_text(url + "\n")
    return NotificationSettings(sinks=(NotificationSinkSettings(
        name="team", kind="slack", url_file=str(path)),))


@pytest.mark.parametrize("url", [
    "ftp://user:pw@files.example.com/x", "file:///etc/passwd", "http://hooks.example.com/x",
    "not a url", "https://",
])
def test_a_webhook_url_that_is_not_https_is_refused_without_quoting_it(
        tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_sinks(sink_with_url(tmp_path, url), secrets=SecretRegistry())
    message = str(info.value)
    assert "notifications.sinks[team]" in message and "https://" in message
    assert url not in message or url in ("https://",)


@pytest.mark.parametrize("url", ["https://hooks.slack.com/services/T/B/x",
                                 "http://127.0.0.1:8080/hook", "http://localhost/hook"])
def test_https_and_loopback_http_webhooks_are_accepted(tmp_path: Path, url: str) -> None:
    secrets = SecretRegistry()
    check_sinks(sink_with_url(tmp_path, url), secrets=secrets)
    assert url not in secrets.mask(f"posting to {url}")  # masked from the first log line


def test_validate_reads_a_cloudevents_key_before_saying_ok(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    (tmp_path / "url").write_text("https://events.example.com/in\n")
    config = tmp_path / "settings.yaml"
    config.write_text(
        "notifications:\n  sinks:\n    - {name: audit, kind: cloudevents, "
        f"url_file: {tmp_path / 'url'}, secret_file: {tmp_path / 'missing-key'}}}\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    assert main(["validate", "--config", str(config), str(policies)]) == ExitCode.CONFIG
    printed = capsys.readouterr()
    assert "notifications.sinks[audit].secret_file" in printed.out + printed.err


@pytest.mark.parametrize(("source", "says"), [
    ("Image-Updater-App: forged", "rendered an empty line"),
    ("{{ 'x' * 50000000 }}", "a repetition of more than"),
    ("{{ 3 ** 100000 }}", "exponent over 64"),
    ("x" * (MAX_TEMPLATE_CHARS + 1), "longer than"),
])
def test_templates_cannot_forge_a_subject_trailer_or_build_huge_values(
        source: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_templates({"commit_subject": source})
    assert says in str(info.value)


def test_a_huge_template_file_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "body.j2"
    big.write_text("y" * (10 * MAX_TEMPLATE_CHARS))
    with pytest.raises(ConfigError, match="larger than"):
        compile_templates({"commit_body_file": str(big)})


@pytest.mark.parametrize(("api_url", "ok"), [
    ("http://evil.example/api", False), ("https://ghe.example.com/api/v3", True),
    ("http://127.0.0.1:9999", True),
])
def test_a_github_app_api_url_must_be_https_except_to_this_machine(
        tmp_path: Path, api_url: str, ok: bool) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(f"git:\n  github_app: {{app_id: '1', installation_id: '2', "
                      f"private_key_file: {tmp_path / 'key.pem'}, api_url: '{api_url}'}}\n")
    if ok:
        assert load_settings(config).git.github_app is not None
    else:
        with pytest.raises(ConfigError, match="plain http"):
            load_settings(config)
