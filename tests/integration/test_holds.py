"""hold, release, rollback and ``promote --force``: a real registry, real bare git repositories.

The commands run through the CLI (``main``) with a settings file, as a person runs them;
the daemon's cycles are ``run_once`` with the same settings, so both share one cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from image_updater.changes import CycleResult
from image_updater.cli import main
from image_updater.commands import run_once
from image_updater.config.holds import HOLDS_FILE, parse_holds
from image_updater.config.policies import load_policies
from image_updater.config.settings import load_settings
from image_updater.engine.reconcile import reconcile
from image_updater.exit_codes import ExitCode
from image_updater.gitops.message import parse_trailers
from image_updater.registry.base import MANIFEST_ACCEPT
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.gitrepo import OLD_DIGEST, BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, digest_of, push_image

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"
STAGING = "application-x/values-staging.yaml"


@dataclass
class Site:
    registry: RegistryServer
    repo: str            # the image's repository in the registry
    deploy: BareRepo
    config: Path
    policies: Path

    def push(self, tag: str, seed: str) -> str:
        return push_image(self.registry.url, self.repo, tag, seed=seed)

    def tag(self, tag: str) -> str | None:
        r = httpx.get(f"{self.registry.url}/v2/{self.repo}/manifests/{tag}", timeout=10,
                      headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        return digest_of(r.content) if r.status_code == 200 else None

    def cycle(self) -> CycleResult:
        settings = load_settings(str(self.config))
        apps = load_policies([str(self.policies)])
        return asyncio.run(run_once(settings, apps))

    def cli(self, *args: str) -> int:
        return main([*args, "--config", str(self.config), "--policies", str(self.policies)])

    def digest_in(self, file: str) -> str:
        text = self.deploy.show("master", file).decode()
        return next(line.split()[1] for line in text.splitlines()
                    if line.strip().startswith("digest:"))

    def last_message(self) -> str:
        return git("log", "-1", "--format=%B", "master", cwd=self.deploy.path)

    def commits(self) -> int:
        return int(git("rev-list", "--count", "master", cwd=self.deploy.path))


@pytest.fixture
def site(registry: RegistryServer, tmp_path: Path) -> Site:
    repo = f"holds/application-x-{uuid.uuid4().hex[:8]}"
    deploy = make_bare_repo(tmp_path / "remotes")
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        f"app: application-x\nimage: {registry.host}/{repo}\n"
        f"git: {{url: \"file://{deploy.path}\", branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n"
        f"  dev: {{file: {DEV}, tag: dev}}\n"
        f"  staging: {{file: {STAGING}, tag: staging}}\n")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"registries": [{"host": registry.host, "insecure": True}],
                                  "cache_dir": str(tmp_path / "cache")}))
    return Site(registry=registry, repo=repo, deploy=deploy, config=config, policies=policies)


def test_rollback_survives_cycles_while_the_tag_moves_until_release(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    a = site.push("dev", "A")
    site.push("staging", "S")
    site.cycle()
    b = site.push("dev", "B")
    site.cycle()
    assert site.digest_in(DEV) == b

    assert site.cli("rollback", "application-x", "dev", "--reason", "incident 4711",
                    "--by", "alice@example.com") == ExitCode.OK
    assert f"rolled back application-x/dev to {a} (from {b})" in capsys.readouterr().out
    assert site.digest_in(DEV) == a
    changed = git("show", "--name-only", "--format=", "master", cwd=site.deploy.path).split()
    assert sorted(changed) == sorted([DEV, HOLDS_FILE])  # the digest and the hold: one commit
    hold = parse_holds(site.deploy.show("master", HOLDS_FILE).decode()).get(
        "application-x", "dev")
    assert hold is not None and (hold.kind, hold.by, hold.digest) == ("rollback",
                                                                     "alice@example.com", a)
    assert parse_trailers(site.last_message()) == [{
        "app": "application-x", "env": "dev", "image": f"{site.registry.host}/{site.repo}",
        "tag": "dev", "digest": a, "previous_digest": b, "action": "rollback",
        "source": "person", "by": "alice@example.com", "reason": "incident 4711"}]

    count = site.commits()
    for seed in ("C1", "C2", "C3"):  # CI keeps pushing; the daemon keeps its hands off
        c = site.push("dev", seed)
        result = site.cycle()
        assert result.changes == [] and result.failures == []
        assert [(h.env, h.kind, h.wanted) for h in result.held] == [("dev", "rollback", c)]
    assert site.digest_in(DEV) == a and site.commits() == count
    capsys.readouterr()
    assert site.cli("status", "application-x", "--env", "dev", "--format", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["state"], row["git"]["digest"], row["wanted"]["digest"]) == (
        "rolled-back", a, c)
    assert row["hold"]["by"] == "alice@example.com" and row["hold"]["kind"] == "rollback"

    assert site.cli("release", "application-x", "dev", "--by", "bob") == ExitCode.OK
    assert parse_trailers(site.last_message())[0]["action"] == "release"
    result = site.cycle()
    assert [ch.digest for ch in result.changes] == [c] and result.held == []
    assert site.digest_in(DEV) == c
    trailers = parse_trailers(site.last_message())[0]
    assert (trailers["action"], trailers["source"], trailers["previous_digest"]) == (
        "update", "poll", a)


def test_hold_blocks_commits_and_is_reported_as_information(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.push("dev", "A")
    site.push("staging", "S")
    assert site.cli("hold", "application-x", "staging", "--reason", "freeze",
                    "--by", "carol") == ExitCode.OK
    trailers = parse_trailers(site.last_message())
    assert trailers == [{"app": "application-x", "env": "staging", "action": "hold",
                         "source": "person", "by": "carol", "reason": "freeze"}]
    capsys.readouterr()
    code = site.cli("once")
    out = capsys.readouterr().out
    assert code == ExitCode.OK  # held is not a failure
    assert "held application-x/staging by carol" in out and "FAILED" not in out
    assert site.digest_in(STAGING) == OLD_DIGEST  # dev moved, staging did not
    assert site.digest_in(DEV) != OLD_DIGEST


@pytest.mark.parametrize(("args", "code", "says"), [
    (["hold", "application-x", "dev", "--reason", "again"], ExitCode.CONFIG, "already held"),
    (["release", "application-x", "staging"], ExitCode.CONFIG, "is not held"),
    (["hold", "no-such-app", "dev", "--reason", "x"], ExitCode.CONFIG, "no policy defines"),
    (["hold", "application-x", "qa", "--reason", "x"], ExitCode.CONFIG, "no environment 'qa'"),
    (["rollback", "application-x", "staging", "--steps", "3"], ExitCode.CONFIG,
     "goes beyond"),
    (["rollback", "application-x", "staging", "--steps", "0"], ExitCode.CONFIG, "--steps"),
    (["rollback", "application-x", "staging", "--to", "sha256:abc"], ExitCode.USAGE, "--to"),
    (["rollback", "application-x", "staging", "--to", "sha256:" + "e" * 64],
     ExitCode.NOT_FOUND, "does not exist"),
    (["rollback", "application-x", "staging", "--to", "CURRENT"], ExitCode.CONFIG,
     "already runs"),
    (["rollback", "application-x", "staging", "--to", OLD_DIGEST], ExitCode.NOT_FOUND,
     "does not exist"),  # it ran there once, but the registry no longer has it
])
def test_bad_input_is_refused_and_nothing_is_written(
        site: Site, capsys: pytest.CaptureFixture[str], args: list[str], code: ExitCode,
        says: str) -> None:
    site.push("staging", "S1")
    site.cycle()
    s2 = site.push("staging", "S2")
    site.cycle()  # staging ran OLD, S1, S2: two earlier digests
    assert site.cli("hold", "application-x", "dev", "--reason", "first") == ExitCode.OK
    head = site.deploy.head()
    capsys.readouterr()
    assert site.cli(*[s2 if a == "CURRENT" else a for a in args]) == code
    assert says in capsys.readouterr().err
    assert site.deploy.head() == head


def test_rollback_steps_and_retag_move_git_and_the_tag_back(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    s1 = site.push("staging", "S1")
    site.cycle()
    site.push("staging", "S2")
    site.cycle()
    s3 = site.push("staging", "S3")
    site.cycle()
    assert site.cli("hold", "application-x", "staging", "--reason", "looking") == 0
    head = site.deploy.head()
    capsys.readouterr()
    # a person's hold is theirs: a rollback over it is refused unless asked for
    assert site.cli("rollback", "application-x", "staging", "--steps", "2",
                    "--by", "dave") == ExitCode.CONFIG
    assert "--replace-hold" in capsys.readouterr().err and site.deploy.head() == head
    # held first, then rolled back: the rollback replaces the hold in the same commit, so no
    # cycle can move staging between a release and the rollback
    assert site.cli("rollback", "application-x", "staging", "--steps", "2", "--retag",
                    "--by", "dave", "--replace-hold") == ExitCode.OK
    out = capsys.readouterr().out
    assert "replaces the earlier hold" in out and "looking" in out
    hold = parse_holds(site.deploy.show("master", HOLDS_FILE).decode()).get(
        "application-x", "staging")
    assert hold is not None and (hold.kind, hold.by) == ("rollback", "dave")
    assert site.digest_in(STAGING) == s1
    assert site.tag("staging") == s1 and "retag: promoted" in out
    assert parse_trailers(site.last_message())[0]["previous_digest"] == s3


def test_promote_into_a_held_environment_refuses_unless_forced(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    a = site.push("dev", "A")
    before = site.push("staging", "S")
    site.cycle()
    assert site.cli("hold", "application-x", "staging", "--reason", "release freeze") == 0
    capsys.readouterr()
    promote = ["promote", "application-x", "--from", "dev", "--to", "staging", "--digest", a]
    assert site.cli(*promote) == ExitCode.HELD
    assert "held by" in capsys.readouterr().err and site.tag("staging") == before

    assert site.cli(*promote, "--force") == ExitCode.OK
    out = capsys.readouterr().out
    assert "FORCED past the hold" in out and "release freeze" in out
    assert site.tag("staging") == a
    assert "recorded on the hold in commit" in out  # the audit trail in git
    trailers = parse_trailers(site.last_message())[0]
    assert (trailers["action"], trailers["source"]) == ("promote", "person")
    assert a in trailers["reason"]
    hold = parse_holds(site.deploy.show("master", HOLDS_FILE).decode()).get(
        "application-x", "staging")
    assert hold is not None and len(hold.forced) == 1 and a in hold.forced[0]
    result = site.cycle()  # the tag moved; git keeps what it holds while held
    assert [h.env for h in result.held] == ["staging"]
    assert site.digest_in(STAGING) == before


def test_a_webhook_cycle_s_commit_says_webhook(site: Site) -> None:
    site.push("dev", "A")
    site.push("staging", "S")
    settings = load_settings(str(site.config))
    apps = load_policies([str(site.policies)])

    async def go() -> CycleResult:
        runtime = Runtime(settings, secrets=SecretRegistry())
        try:
            return await reconcile(apps, dataclasses.replace(runtime.deps(), source="webhook"))
        finally:
            await runtime.aclose()

    assert len(asyncio.run(go()).changes) == 2
    assert [t["source"] for t in parse_trailers(site.last_message())] == ["webhook", "webhook"]


def test_a_second_default_rollback_is_refused_instead_of_restoring_the_bad_build(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.push("staging", "good")
    site.cycle()
    site.push("staging", "bad")
    site.cycle()
    assert site.cli("rollback", "application-x", "staging", "--reason", "bad") == ExitCode.OK
    good = site.digest_in(STAGING)
    head = site.deploy.head()
    capsys.readouterr()
    assert site.cli("rollback", "application-x", "staging", "--reason", "again") == \
        ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "would return to the digest that rollback moved away from" in err
    assert "--to DIGEST or --steps N" in err
    assert site.deploy.head() == head and site.digest_in(STAGING) == good


def test_a_misspelt_hold_stops_writes_instead_of_releasing_the_environment(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-edited holds file naming no app environment is a typo: the one it meant would
    silently move on. Nothing is written to that repository until it is fixed."""
    site.push("dev", "A")
    site.push("staging", "S")
    assert site.cli("hold", "application-x", "staging", "--reason", "freeze") == ExitCode.OK
    work = tmp_path / "hand"
    git("clone", "-q", str(site.deploy.path), str(work))
    holds = (work / HOLDS_FILE).read_text()
    (work / HOLDS_FILE).write_text(holds.replace("application-x:", "applicaton-x:"))
    git("-c", "user.name=Eve", "-c", "user.email=eve@example.com", "commit", "-qam",
        "typo", cwd=work)
    git("push", "-q", "origin", "HEAD:master", cwd=work)
    head = site.deploy.head()
    capsys.readouterr()
    assert site.cli("once") != ExitCode.OK
    out = capsys.readouterr().out
    assert "applicaton-x/staging, which no policy names" in out
    assert site.deploy.head() == head  # neither dev nor staging was written
