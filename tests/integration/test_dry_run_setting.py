"""``dry_run: true`` in the settings file: the daemon and ``once`` plan and log, never write.

A real registry and a real bare deploy repository; the proof is the repository's head.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path

import pytest

from image_updater.cli import main
from image_updater.config.policies import load_text
from image_updater.config.settings import GitSettings, RegistrySettings, Settings, load_settings
from image_updater.daemon.service import Daemon
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.gitrepo import OLD_DIGEST, BareRepo, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"


def policy(image: str, repo: BareRepo) -> str:
    return textwrap.dedent(f"""\
        app: application-x
        image: {image}
        git: {{url: "file://{repo.path}", branch: master}}
        environments:
          dev: {{file: {DEV}}}
        """)


def load(text: str) -> list[App]:
    apps, problems = load_text(text, "test-policies.yaml")
    assert problems == []
    return apps


def test_the_settings_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("dry_run: true\n")
    assert load_settings(path, environ={}).dry_run is True


def test_once_with_dry_run_in_the_settings_file_writes_nothing(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deploy = make_bare_repo(tmp_path)
    digest = push_image(registry.url, "dryset/application-x", "dev", seed="dry-setting")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(
        policy(f"{registry.host}/dryset/application-x", deploy))
    (tmp_path / "settings.yaml").write_text(
        f"dry_run: true\ncache_dir: {tmp_path / 'cache'}\n"
        f"registries: [{{host: '{registry.host}', insecure: true}}]\n")
    head = deploy.head()

    code = main(["once", "--config", str(tmp_path / "settings.yaml"),
                 "--policies", str(policies)])  # no --dry-run flag: the setting alone

    out = capsys.readouterr().out
    assert code == 0
    assert f"-  digest: {OLD_DIGEST}" in out and f"+  digest: {digest}" in out
    assert f"would update application-x/dev in {DEV}" in out
    assert deploy.head() == head


def test_the_daemon_with_dry_run_plans_and_logs_but_never_commits(
        registry: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    deploy: BareRepo = make_bare_repo(tmp_path)
    digest = push_image(registry.url, "drydaemon/application-x", "dev", seed="dry-daemon")
    apps = load(policy(f"{registry.host}/drydaemon/application-x", deploy))
    settings = Settings(
        dry_run=True, cache_dir=str(tmp_path / "cache"),
        registries=(RegistrySettings(host=registry.host, insecure=True),),
        git=GitSettings(author_name="image-updater", author_email="bot@example.com"))
    daemon = Daemon(settings=settings, policy_paths=[], apps=apps,
                    runtime=Runtime(settings, secrets=SecretRegistry()))
    head = deploy.head()
    caplog.set_level(logging.INFO, logger="image_updater")

    async def one_cycle() -> None:
        try:
            result = await daemon.cycle(apps)
            assert [c.digest for c in result.changes] == [digest]  # planned...
        finally:
            await daemon.runtime.aclose()

    asyncio.run(one_cycle())
    assert deploy.head() == head  # ...but nothing committed or pushed
    assert any("dry run, not written" in r.getMessage() and digest in r.getMessage()
               for r in caplog.records)
