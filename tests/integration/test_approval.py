"""Gated environments: pull requests through each forge, branches pushed to real git.

The forge is a local server implementing the documented API shapes (it rejects anything
else); the registry and the deploy repository are real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_updater.changes import CycleResult
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import ForgeSettings, GitSettings, RegistrySettings, Settings
from image_updater.engine.reconcile import reconcile
from image_updater.model import App
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

PROD = "application-x/values-prod.yaml"
BRANCH = "image-updater/application-x-prod"
TOKEN = "forge-token-for-tests-9f2c"


@pytest.fixture(params=["github", "gitlab", "gitea"])
def forge(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[ForgeServer]:
    monkeypatch.setenv("TEST_FORGE_TOKEN", TOKEN)
    with ForgeServer(request.param, token=TOKEN) as server:
        yield server
        assert server.violations == [], "undocumented requests were sent"


class Rig:
    def __init__(self, registry: RegistryServer, forge: ForgeServer, tmp: Path) -> None:
        self.registry, self.forge, self.tmp = registry, forge, tmp
        self.repo_name = f"gate-{forge.kind}/application-x"
        self.deploy = make_bare_repo(tmp)
        self.apps = self._apps()
        self.settings = Settings(
            cache_dir=str(tmp / "cache"),
            registries=(RegistrySettings(host=registry.host, insecure=True),),
            git=GitSettings(author_email="bot@example.com"),
            forges=(ForgeSettings(url_prefix=f"file://{self.deploy.path}", kind=forge.kind,
                                  api_url=forge.api_url, repository="org/deploys",
                                  token_env="TEST_FORGE_TOKEN"),))

    def _apps(self) -> list[App]:
        text = textwrap.dedent(f"""\
            app: application-x
            image: {self.registry.host}/{self.repo_name}
            git: {{url: "file://{self.deploy.path}", branch: master}}
            environments:
              prod:
                file: {PROD}
                approval: pull-request
                pull_request: {{labels: [automated], reviewers: [alice]}}
            """)
        apps, problems = load_text(text, "gate.yaml")
        assert problems == []
        return apps

    def push(self, seed: str) -> str:
        return push_image(self.registry.url, self.repo_name, "prod", seed=seed)

    def cycle(self) -> CycleResult:
        return asyncio.run(run_once(self.settings, self.apps))

    def open_prs(self) -> list[int]:
        return [n for n, pr in self.forge.prs.items() if pr.state in ("open", "opened")]

    def merge(self, number: int) -> None:
        """A person merges: a real git merge in the deploy repo, the forge marks it merged."""
        work = Path(tempfile.mkdtemp(dir=self.tmp))
        git("clone", "-q", str(self.deploy.path), str(work))
        git("merge", "-q", "--no-ff", "-m", "Merge promotion", f"origin/{BRANCH}", cwd=work)
        git("push", "-q", "origin", "HEAD:master", cwd=work)
        self.forge.mark_merged(number)


@pytest.fixture
def rig(registry: RegistryServer, forge: ForgeServer, tmp_path: Path) -> Rig:
    return Rig(registry, forge, tmp_path)


def branch_file(deploy: BareRepo) -> str:
    return deploy.show(BRANCH, PROD).decode()


def test_gated_change_becomes_one_pull_request_and_master_is_untouched(rig: Rig) -> None:
    head = rig.deploy.head()
    digest = rig.push("release-1")
    result = rig.cycle()
    assert result.failures == []
    assert [c.digest for c in result.changes] == [digest]
    assert rig.deploy.head() == head, "a gated environment never commits to master"
    (number,) = rig.open_prs()
    pr = rig.forge.prs[number]
    assert pr.head == BRANCH
    assert pr.title == f"Promote application-x to prod: {digest[:19]}"
    assert f"Image-Updater-Digest: {digest}" in pr.body
    assert "| `image.digest` in `application-x/values-prod.yaml` |" in pr.body
    assert f"digest: {digest}" in branch_file(rig.deploy)
    assert str(number) in result.pull_requests[("application-x", "prod")]


def test_newer_digest_updates_the_same_pull_request(rig: Rig) -> None:
    rig.push("release-1")
    rig.cycle()
    (number,) = rig.open_prs()
    newer = rig.push("release-2")
    rig.cycle()
    assert rig.open_prs() == [number], "upsert: never a second pull request"
    assert f"Image-Updater-Digest: {newer}" in rig.forge.prs[number].body
    assert f"digest: {newer}" in branch_file(rig.deploy)
    assert "Approvals given before the update were for that image" in rig.forge.prs[number].body
    (note,) = rig.forge.prs[number].comments
    # approvals given before were for another image
    assert newer in note and "review again" in note
    writes = len([r for r in rig.forge.requests if r.method != "GET"])
    again = rig.cycle()  # nothing new: no forge writes, and nothing counted as a change
    assert again.failures == [] and again.changes == [] and rig.open_prs() == [number]
    assert len([r for r in rig.forge.requests if r.method != "GET"]) == writes


def test_merged_pull_request_means_nothing_to_do(rig: Rig) -> None:
    digest = rig.push("release-1")
    rig.cycle()
    (number,) = rig.open_prs()
    rig.merge(number)
    assert f"digest: {digest}" in rig.deploy.show("master", PROD).decode()
    writes = len([r for r in rig.forge.requests if r.method != "GET"])
    result = rig.cycle()
    assert result.changes == [] and result.failures == []
    assert len([r for r in rig.forge.requests if r.method != "GET"]) == writes


def test_closed_unmerged_is_not_reopened_for_that_digest_but_is_for_a_new_one(rig: Rig
                                                                               ) -> None:
    rig.push("release-1")
    rig.cycle()
    (first,) = rig.open_prs()
    rig.forge.mark_closed(first)
    declined = rig.cycle()
    assert rig.open_prs() == [], "a person closed it: do not reopen for the same digest"
    assert declined.changes == [] and declined.failures == []
    newer = rig.push("release-2")
    rig.cycle()
    (second,) = rig.open_prs()
    assert second != first
    assert f"Image-Updater-Digest: {newer}" in rig.forge.prs[second].body


def test_tag_moving_back_closes_the_obsolete_pull_request(rig: Rig) -> None:
    deployed = rig.push("release-1")
    rig.cycle()
    (number,) = rig.open_prs()
    rig.merge(number)
    rig.push("release-2")
    rig.cycle()
    (obsolete,) = rig.open_prs()
    # prod's tag goes back to what is deployed (e.g. a bad release was withdrawn)
    assert rig.push("release-1") == deployed
    rig.cycle()
    assert rig.open_prs() == []
    assert rig.forge.prs[obsolete].state == "closed" and not rig.forge.prs[obsolete].merged
    comments = rig.forge.prs[obsolete].comments
    assert comments and "obsolete" in comments[-1]


def test_a_declined_digest_is_never_proposed_again_and_withdraws_the_open_proposal(
        rig: Rig) -> None:
    rejected = rig.push("release-1")
    rig.cycle()
    (first,) = rig.open_prs()
    rig.forge.mark_closed(first)  # a person declines release-1
    newer = rig.push("release-2")
    rig.cycle()
    (second,) = rig.open_prs()
    # the tag moves back to the image a person turned down
    assert rig.push("release-1") == rejected
    result = rig.cycle()
    assert rig.open_prs() == [], "no proposal of the declined image, and release-2 is obsolete"
    withdrawn = rig.forge.prs[second]
    assert withdrawn.state == "closed" and not withdrawn.merged
    assert rejected not in withdrawn.body and f"Withdrawn-Digest: {newer}" in withdrawn.body
    assert "declined" in withdrawn.comments[-1]
    assert result.changes == [] and result.failures == []
    # release-2 was withdrawn by image-updater, not declined by a person: it may come back
    assert rig.push("release-2") == newer
    rig.cycle()
    (third,) = rig.open_prs()
    assert f"Image-Updater-Digest: {newer}" in rig.forge.prs[third].body


def test_a_pull_request_left_half_updated_is_repaired_next_cycle(rig: Rig) -> None:
    """The forge refused the title/body update for release-2: the branch must not stay on
    release-2 under a title naming release-1; when the tag goes back, all agree."""
    first = rig.push("release-1")
    rig.cycle()
    (number,) = rig.open_prs()
    rig.push("release-2")
    rig.forge.fail_next(403, method="PUT" if rig.forge.kind == "gitlab" else "PATCH")
    failed = rig.cycle()
    assert [f.reason for f in failed.failures] == ["forge_auth"]
    # pushed before the update, put back when the update failed: merging deploys the title
    assert f"digest: {first}" in branch_file(rig.deploy)
    assert f"Image-Updater-Digest: {first}" in rig.forge.prs[number].body
    assert rig.push("release-1") == first
    result = rig.cycle()
    assert result.failures == [] and rig.open_prs() == [number]
    assert f"Image-Updater-Digest: {first}" in rig.forge.prs[number].body
    assert f"digest: {first}" in branch_file(rig.deploy), "branch and title agree again"


def test_a_close_by_a_person_during_the_cycle_is_not_overwritten(rig: Rig) -> None:
    """A person closes the release-1 proposal while the cycle that would move it to
    release-2 runs: their close declines release-1, the text they saw stays, and the
    branch is put back."""
    first = rig.push("release-1")
    rig.cycle()
    (number,) = rig.open_prs()
    rig.push("release-2")
    rig.forge.close_before_next_update(number)
    result = rig.cycle()
    pr = rig.forge.prs[number]
    assert pr.state == "closed" and not pr.merged
    assert f"Image-Updater-Digest: {first}" in pr.body, "the decline of release-1 stands"
    assert f"digest: {first}" in branch_file(rig.deploy)
    assert result.changes == [] and result.failures == []
    assert rig.open_prs() == []
    rig.cycle()  # next cycle: release-2 was never declined, so it is proposed anew
    (second,) = rig.open_prs()
    assert second != number


def test_a_promotions_evidence_ends_the_pull_request_body_as_it_ends_the_commit(
        rig: Rig) -> None:
    """An approver reads in the body what the branch's commit says: the promotion's source
    and the evidence its caller vouched with (the daemon's promotion API)."""
    digest = rig.push("release-1")
    vouched = {"job": "shop-promote-9", "promoted-by": "api-token/ci"}

    async def cycle() -> CycleResult:
        runtime = Runtime(rig.settings, secrets=SecretRegistry())
        try:
            deps = dataclasses.replace(
                runtime.deps(), source="webhook",
                evidence_for=lambda c: vouched if c.digest == digest else {})
            return await reconcile(rig.apps, deps)
        finally:
            await runtime.aclose()

    result = asyncio.run(cycle())
    assert result.failures == []
    (number,) = rig.open_prs()
    body = rig.forge.prs[number].body
    commit = rig.deploy.log("-1", "--format=%B", BRANCH)
    for line in ("Image-Updater-Evidence: job=shop-promote-9",
                 "Image-Updater-Evidence: promoted-by=api-token/ci",
                 "Image-Updater-Source: promotion"):
        assert line in body and line in commit, line
    assert body.rstrip("\n").endswith(commit.rstrip("\n").rpartition("\n\n")[2])
