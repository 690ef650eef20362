"""The seed's whole flow, end to end, through the real CLI entry points.

Real registry, real deploy repository, the forge as a local API-shape server:
CI pushes :dev → dev commit → smoke test (stand-in) → promote dev→staging → staging commit
→ promote staging→prod → pull request → merge (a real git merge) → next cycle is a no-op;
then a second release supersedes an unmerged prod pull request.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_updater.cli import main
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

APP = "seed/application-x"
TOKEN = "seed-flow-forge-token"
ENVS = ("dev", "staging", "prod")


class Seed:
    def __init__(self, registry: RegistryServer, forge: ForgeServer, tmp: Path) -> None:
        self.registry, self.forge, self.tmp = registry, forge, tmp
        self.deploy: BareRepo = make_bare_repo(tmp)
        self.policies = tmp / "policies"
        self.policies.mkdir()
        envs = "\n".join(f"  {e}: {{file: application-x/values-{e}.yaml"
                         + (", approval: pull-request}" if e == "prod" else "}") for e in ENVS)
        (self.policies / "application-x.yaml").write_text(
            f"app: application-x\nimage: {registry.host}/{APP}\n"
            f"git: {{url: \"file://{self.deploy.path}\", branch: master}}\n"
            f"environments:\n{envs}\n")
        self.config = tmp / "settings.yaml"
        self.config.write_text(json.dumps({
            "cache_dir": str(tmp / "cache"),
            "registries": [{"host": registry.host, "insecure": True}],
            "forges": [{"url_prefix": f"file://{self.deploy.path}", "kind": "github",
                        "api_url": forge.api_url, "repository": "org/deploys",
                        "token_env": "SEED_FORGE_TOKEN"}]}))

    def cli(self, *args: str) -> int:
        return main([*args, "--config", str(self.config), "--policies", str(self.policies)])

    def once(self) -> int:
        return self.cli("once")

    def values(self, env: str, rev: str = "master") -> str:
        return self.deploy.show(rev, f"application-x/values-{env}.yaml").decode()

    def deployed(self, env: str) -> str:
        for line in self.values(env).splitlines():
            if line.strip().startswith("digest:"):
                return line.split()[1]
        raise AssertionError(f"no digest in values-{env}.yaml")

    def tag(self, env: str) -> str | None:
        import httpx

        r = httpx.head(f"{self.registry.url}/v2/{APP}/manifests/{env}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        return r.headers.get("docker-content-digest") if r.status_code == 200 else None

    def commits(self) -> int:
        return int(git("rev-list", "--count", "master", cwd=self.deploy.path))

    def open_prs(self) -> list[int]:
        return [n for n, p in self.forge.prs.items() if p.state == "open"]

    def merge(self, number: int) -> None:
        work = Path(tempfile.mkdtemp(dir=self.tmp))
        head = self.forge.prs[number].head
        git("clone", "-q", str(self.deploy.path), str(work))
        git("merge", "-q", "--no-ff", "-m", f"Merge #{number}", f"origin/{head}", cwd=work)
        git("push", "-q", "origin", "HEAD:master", cwd=work)
        self.forge.mark_merged(number)


@pytest.fixture
def seed(registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Seed]:
    monkeypatch.setenv("SEED_FORGE_TOKEN", TOKEN)
    with ForgeServer("github", token=TOKEN) as forge:
        yield Seed(registry, forge, tmp_path)
        assert forge.violations == []


def test_the_whole_seed_flow(seed: Seed) -> None:
    # 1. CI pushes :dev; the daemon commits values-dev.yaml (staging/prod tags do not exist yet)
    build_1 = push_image(seed.registry.url, APP, "dev", seed="build-1")
    seed.once()
    assert seed.deployed("dev") == build_1

    # 2. smoke tests run against build 1 while CI pushes build 2: build 2 is untested
    tested = seed.deployed("dev")
    build_2 = push_image(seed.registry.url, APP, "dev", seed="build-2")
    assert seed.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                    "--digest", tested) == 0
    assert seed.tag("staging") == build_1, "only the tested digest may move on"
    seed.once()
    assert seed.deployed("staging") == build_1
    assert seed.deployed("dev") == build_2  # dev keeps following :dev

    # 3. smoke tests pass in staging; promote to prod, which needs approval
    before = seed.commits()
    assert seed.cli("promote", "application-x", "--from", "staging", "--to", "prod",
                    "--digest", seed.deployed("staging")) == 0
    assert seed.tag("prod") == build_1
    prod_before = seed.values("prod")
    seed.once()
    assert seed.commits() == before, "prod is never committed to master directly"
    assert seed.values("prod") == prod_before
    (number,) = seed.open_prs()
    assert f"Image-Updater-Digest: {build_1}" in seed.forge.prs[number].body
    staging_commit = git("log", "-1", "--format=%H", "--grep", "Image-Updater-Env: staging",
                         "master", cwd=seed.deploy.path)
    assert (f"`staging` runs this digest (`application-x/values-staging.yaml`, since commit "
            f"{staging_commit[:12]})") in seed.forge.prs[number].body

    # 4. a person merges: the next cycle is a no-op
    seed.merge(number)
    assert seed.deployed("prod") == build_1
    head = seed.deploy.head()
    assert seed.once() == 0
    assert seed.deploy.head() == head
    assert seed.open_prs() == []


def test_a_second_release_supersedes_an_unmerged_prod_pull_request(seed: Seed) -> None:
    for env, name in (("staging", "release-1"), ("prod", "release-1")):
        push_image(seed.registry.url, APP, env, seed=name)
    push_image(seed.registry.url, APP, "dev", seed="release-1")
    seed.once()
    (number,) = seed.open_prs()
    first_branch = seed.deploy.show("image-updater/application-x-prod",
                                    "application-x/values-prod.yaml").decode()

    release_2 = push_image(seed.registry.url, APP, "dev", seed="release-2")
    seed.once()
    assert seed.cli("promote", "application-x", "--from", "dev", "--to", "staging",
                    "--digest", seed.deployed("dev")) == 0
    seed.once()
    assert seed.cli("promote", "application-x", "--from", "staging", "--to", "prod",
                    "--digest", seed.deployed("staging")) == 0
    seed.once()

    assert seed.open_prs() == [number], "the same pull request is updated, not a second one"
    pr = seed.forge.prs[number]
    assert f"Image-Updater-Digest: {release_2}" in pr.body
    branch_now = seed.deploy.show("image-updater/application-x-prod",
                                  "application-x/values-prod.yaml").decode()
    assert branch_now != first_branch and release_2 in branch_now
    seed.merge(number)
    assert seed.deployed("prod") == release_2
    head = seed.deploy.head()
    seed.once()
    assert seed.deploy.head() == head
