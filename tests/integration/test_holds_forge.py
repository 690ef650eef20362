"""Holds and rollbacks where the environment needs approval: the forge stand-in, real git."""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_updater.changes import CycleResult
from image_updater.commands import run_once
from image_updater.config.holds import HOLDS_FILE, parse_holds
from image_updater.config.policies import load_text
from image_updater.config.settings import ForgeSettings, GitSettings, RegistrySettings, Settings
from image_updater.engine.holds import (
    Outcome,
    RollbackDeps,
    RollbackRequest,
    place_hold,
    release_hold,
    rollback,
)
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

PROD = "application-x/values-prod.yaml"
TOKEN = "forge-token-for-holds-5d1e"
NOW = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeServer]:
    monkeypatch.setenv("TEST_FORGE_TOKEN", TOKEN)
    with ForgeServer("github", token=TOKEN) as server:
        yield server
        assert server.violations == [], "undocumented requests were sent"


class Rig:
    def __init__(self, registry: RegistryServer, forge: ForgeServer, tmp: Path) -> None:
        self.registry, self.forge, self.tmp = registry, forge, tmp
        self.repo_name = "holds-gate/application-x"
        self.deploy = make_bare_repo(tmp)
        text = textwrap.dedent(f"""\
            app: application-x
            image: {registry.host}/{self.repo_name}
            git: {{url: "file://{self.deploy.path}", branch: master}}
            environments:
              prod: {{file: {PROD}, approval: pull-request}}
            """)
        apps, problems = load_text(text, "gate.yaml")
        assert problems == []
        self.apps: list[App] = apps
        self.app = apps[0]
        self.env = self.app.env("prod")
        self.settings = Settings(
            cache_dir=str(tmp / "cache"),
            registries=(RegistrySettings(host=registry.host, insecure=True),),
            git=GitSettings(author_email="bot@example.com"),
            forges=(ForgeSettings(url_prefix=f"file://{self.deploy.path}", kind="github",
                                  api_url=forge.api_url, repository="org/deploys",
                                  token_env="TEST_FORGE_TOKEN"),))

    def push(self, seed: str) -> str:
        return push_image(self.registry.url, self.repo_name, "prod", seed=seed)

    def cycle(self) -> CycleResult:
        return asyncio.run(run_once(self.settings, self.apps))

    def open_prs(self) -> list[int]:
        return [n for n, pr in self.forge.prs.items() if pr.state in ("open", "opened")]

    def merge(self, branch: str) -> None:
        work = Path(tempfile.mkdtemp(dir=self.tmp))
        git("clone", "-q", str(self.deploy.path), str(work))
        git("merge", "-q", "--no-ff", "-m", "Merge", f"origin/{branch}", cwd=work)
        git("push", "-q", "origin", "HEAD:master", cwd=work)
        for number in self.open_prs():  # the forge marks what a person merged
            if self.forge.prs[number].head == branch:
                self.forge.mark_merged(number)

    def hold(self) -> Outcome:
        runtime = Runtime(self.settings, secrets=SecretRegistry())
        return place_hold(runtime.repo_for(self.app.git), self.app, self.env, by="erin",
                          reason="change freeze", now=NOW)

    def release(self) -> Outcome:
        runtime = Runtime(self.settings, secrets=SecretRegistry())
        return release_hold(runtime.repo_for(self.app.git), self.app, self.env, by="erin")

    def rollback(self, req: RollbackRequest) -> Outcome:
        async def run() -> Outcome:
            runtime = Runtime(self.settings, secrets=SecretRegistry())
            repo = runtime.repo_for(self.app.git)
            try:
                return await rollback(self.app, self.env, req, RollbackDeps(
                    repo=repo, registry_for=runtime.registry_for,
                    approvals=runtime.approvals_for(self.app.git, repo)), now=NOW)
            finally:
                await runtime.aclose()

        return asyncio.run(run())


@pytest.fixture
def rig(registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> Rig:
    return Rig(registry, forge, tmp_path)


def test_a_held_environment_s_pull_request_stays_open_with_one_comment(rig: Rig) -> None:
    rig.push("one")
    rig.cycle()
    [number] = rig.open_prs()
    proposed = rig.deploy.head("image-updater/application-x-prod")
    rig.hold()
    for seed in ("two", "three"):
        rig.push(seed)
        result = rig.cycle()
        assert result.changes == [] and result.failures == []
        assert [(h.env, h.pull_request) for h in result.held] == [
            ("prod", f"https://github.example/org/deploys/pull/{number}")]
    assert rig.open_prs() == [number]
    assert rig.deploy.head("image-updater/application-x-prod") == proposed  # not moved
    comments = rig.forge.prs[number].comments
    assert len(comments) == 1 and "held by erin" in comments[0]

    rig.release()
    result = rig.cycle()  # released: the proposal catches up with the tag
    assert [c.via for c in result.changes] == ["pull-request"]
    assert rig.deploy.head("image-updater/application-x-prod") != proposed


def test_rollback_in_a_gated_environment(rig: Rig) -> None:
    first = rig.push("one")
    rig.cycle()
    rig.merge("image-updater/application-x-prod")
    rig.push("two")
    rig.cycle()
    rig.merge("image-updater/application-x-prod")  # prod ran OLD, one, two

    # a digest prod ran before is known good: committed directly, no pull request
    before = len(rig.forge.prs)
    outcome = rig.rollback(RollbackRequest(steps=1, by="frank", reason="bad release"))
    assert outcome.sha == rig.deploy.head() and outcome.digest == first
    assert len(rig.forge.prs) == before
    held = parse_holds(rig.deploy.show("master", HOLDS_FILE).decode()).get("application-x",
                                                                           "prod")
    assert held is not None and held.kind == "rollback"
    rig.push("three")  # the tag moves on: a held environment gets no new pull request
    result = rig.cycle()
    assert [(h.env, h.kind, h.pull_request) for h in result.held] == [("prod", "rollback", "")]
    assert len(rig.forge.prs) == before and result.changes == []

    # a digest it never ran follows the approval rule: a pull request, master untouched
    fix = push_image(rig.registry.url, rig.repo_name, None, seed="hotfix")
    head = rig.deploy.head()
    outcome = rig.rollback(RollbackRequest(to=fix, by="frank", reason="hotfix build"))
    assert outcome.pull_request and outcome.sha is None
    assert rig.deploy.head() == head
    branch = "image-updater/rollback-application-x-prod"
    assert fix in rig.deploy.show(branch, PROD).decode()
    assert "kind: rollback" in rig.deploy.show(branch, HOLDS_FILE).decode()
