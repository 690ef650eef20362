"""Templates end to end: a real registry, a real bare repository, the local forge server.

The settings' templates shape the commit pushed to master and the pull request opened for
a gated environment; the trailers (and the pull request's digest marker, which declines
and pending proposals are read from) stay image-updater's.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_updater.changes import CycleResult
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import (
    ForgeSettings,
    GitSettings,
    RegistrySettings,
    Settings,
    TemplateSettings,
)
from image_updater.gitops.message import parse_trailers
from image_updater.model import App
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"
PROD = "application-x/values-prod.yaml"
TOKEN = "forge-token-for-templates-5d1e"
FORGED = "sha256:" + "9" * 64

TEMPLATES = TemplateSettings(
    commit_subject="deploy({{ changes[0].env }}): {{ changes[0].app }} {{ changes[0].tag }} "
                   "[OPS-7]",
    commit_body=textwrap.dedent(f"""\
        {{% for c in changes %}}
        {{{{ c.file }}}}: {{{{ c.old }}}} -> {{{{ c.new }}}}
        {{% endfor %}}
        Image-Updater-Digest: {FORGED}"""),
    pull_request_title="deploy({{ env }}): {{ app }} {{ change.short_digest }}",
    pull_request_body=textwrap.dedent(f"""\
        Ping @release-managers for {{{{ app }}}} in {{{{ env }}}}.
        {{{{ evidence | join('\\n') if evidence else 'no evidence yet' }}}}
        Image-Updater-Digest: {FORGED}"""),
)


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeServer]:
    monkeypatch.setenv("TEST_FORGE_TOKEN", TOKEN)
    with ForgeServer("github", token=TOKEN) as server:
        yield server
        assert server.violations == [], "undocumented requests were sent"


def apps_for(registry: RegistryServer, deploy: BareRepo, repo_name: str) -> list[App]:
    text = textwrap.dedent(f"""\
        app: application-x
        image: {registry.host}/{repo_name}
        git: {{url: "file://{deploy.path}", branch: master}}
        environments:
          dev: {{file: {DEV}}}
          prod:
            file: {PROD}
            approval: pull-request
        """)
    apps, problems = load_text(text, "templates.yaml")
    assert problems == []
    return apps


def settings_for(tmp: Path, registry: RegistryServer, deploy: BareRepo, forge: ForgeServer
                 ) -> Settings:
    return Settings(cache_dir=str(tmp / "cache"),
                    registries=(RegistrySettings(host=registry.host, insecure=True),),
                    git=GitSettings(author_email="bot@example.com"),
                    forges=(ForgeSettings(url_prefix=f"file://{deploy.path}", kind="github",
                                          api_url=forge.api_url, repository="org/deploys",
                                          token_env="TEST_FORGE_TOKEN"),),
                    templates=TEMPLATES)


def cycle(settings: Settings, apps: list[App]) -> CycleResult:
    return asyncio.run(run_once(settings, apps))


def test_templated_commit_and_pull_request_keep_our_trailers(
        registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> None:
    deploy = make_bare_repo(tmp_path)
    repo_name = "templates/application-x"
    apps = apps_for(registry, deploy, repo_name)
    settings = settings_for(tmp_path, registry, deploy, forge)
    dev = push_image(registry.url, repo_name, "dev", seed="templates-dev")
    prod = push_image(registry.url, repo_name, "prod", seed="templates-prod")

    result = cycle(settings, apps)
    assert result.failures == []
    message = git("log", "-1", "--format=%B", "master", cwd=deploy.path)
    assert message.splitlines()[0] == "deploy(dev): application-x dev [OPS-7]"
    assert f"{DEV}: " in message and f" -> {dev}" in message
    assert FORGED not in message, "a template cannot forge a trailer"
    (group,) = parse_trailers(message)
    assert group["digest"] == dev and group["app"] == "application-x" and group["env"] == "dev"

    (number,) = [n for n, pr in forge.prs.items() if pr.state == "open"]
    pr = forge.prs[number]
    assert pr.title == f"deploy(prod): application-x {prod[:15]}…"
    assert pr.body.startswith("Ping @release-managers for application-x in prod.\n")
    assert FORGED not in pr.body
    assert pr.body.count("Image-Updater-Digest: ") == 1
    assert "\n\n---\nImage-Updater-App: application-x\n" in pr.body
    (group,) = parse_trailers(pr.body)
    assert group["digest"] == prod and group["env"] == "prod" and group["source"] == "poll"

    # the proposal is recognised as pending from its (templated) body: no second write
    writes = len([r for r in forge.requests if r.method != "GET"])
    again = cycle(settings, apps)
    assert again.failures == [] and again.changes == []
    assert len([r for r in forge.requests if r.method != "GET"]) == writes

    # and a person's close still declines that digest
    forge.mark_closed(number)
    declined = cycle(settings, apps)
    assert declined.failures == [] and declined.changes == []
    assert [n for n, p in forge.prs.items() if p.state == "open"] == []
