"""``promote``: the tested digest moves on, never the one CI pushed while tests ran.

A real registry on 127.0.0.1 and a bare deploy repository in a tmp dir; inputs are created
with the fixtures' plain HTTP and git helpers. Also checks the example chart's PostSync job
(as text: helm is not installed here, and is rendered only if it is).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from image_updater.cli import build_parser, main
from image_updater.config.holds import HOLDS_FILE
from image_updater.config.policies import load_policies
from image_updater.engine.promote import RetagResult, promote
from image_updater.errors import ConflictError
from image_updater.registry.base import MANIFEST_ACCEPT
from image_updater.registry.oci import OciRegistry
from image_updater.registry.options import RegistryOptions
from tests.fixtures.gitrepo import BareRepo, make_bare_repo, push_other_commit
from tests.fixtures.registry import RegistryServer, digest_of, push_image, push_index
from tests.fixtures.tools import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
CHART = ROOT / "examples" / "charts" / "application-x"
DEMO = ROOT / "examples" / "deploys" / "application-x"
ENVS = ("dev", "staging", "prod")


def values_file(env: str, digest: str) -> str:
    return (f"# application-x in {env}\n"
            "image:\n"
            "  repository: registry.example.com/application-x\n"
            f'  tag: "{env}"\n'
            f'  digest: "{digest}"   # set by image-updater\n')


@dataclass
class Setup:
    """Registry images and a deploy repository as the race leaves them."""

    server: RegistryServer
    repo: str
    bare: BareRepo
    config: Path
    policies: Path
    tested: str      # A: deployed to dev (git says so) and under test
    newer: str       # B: pushed to :dev by CI while A was being tested
    staging: str     # what :staging pointed at before the promotion

    def cli(self, *extra: str) -> list[str]:
        return ["promote", "application-x", "--from", "dev", "--to", "staging",
                "--config", str(self.config), "--policies", str(self.policies), *extra]

    def tag(self, tag: str) -> str | None:
        r = httpx.get(f"{self.server.url}/v2/{self.repo}/manifests/{tag}", timeout=10,
                      headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        return digest_of(r.content) if r.status_code == 200 else None


@pytest.fixture
def race(registry: RegistryServer, tmp_path: Path) -> Setup:
    repo = f"team/application-x-{uuid.uuid4().hex[:8]}"
    tested = push_image(registry.url, repo, "dev", seed="A")
    staging = push_image(registry.url, repo, "staging", seed="S")
    bare = make_bare_repo(tmp_path / "remotes", files={
        "application-x/values-dev.yaml": values_file("dev", tested),
        "application-x/values-staging.yaml": values_file("staging", staging),
        "application-x/values-prod.yaml": values_file("prod", ""),
    })
    newer = push_image(registry.url, repo, "dev", seed="B")  # CI, while A is under test
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        f"app: application-x\nimage: {registry.host}/{repo}\n"
        f"git: {{url: {bare.url}, branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n" + "".join(
            f"  {env}: {{file: application-x/values-{env}.yaml, tag: {env}}}\n"
            for env in ENVS))
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"registries": [{"host": registry.host, "insecure": True}],
                                  "cache_dir": str(tmp_path / "cache")}))
    return Setup(server=registry, repo=repo, bare=bare, config=config, policies=policies,
                 tested=tested, newer=newer, staging=staging)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the race --------------------------------------------------------------------------------


def test_promote_moves_the_tested_digest_not_the_newer_dev_tag(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(race.cli("--from-git"), capsys)

    assert code == 0, err
    assert race.tag("staging") == race.tested != race.newer
    assert race.tag("dev") == race.newer  # the source tag itself is left alone
    assert f"promoted {race.server.host}/{race.repo}:dev" in out
    assert f"points at {race.newer} now" in out
    assert "--from-git: this promoted what git says dev runs now" in out


def test_promote_with_the_tested_digest_moves_it(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(race.cli("--digest", race.tested), capsys)

    assert code == 0
    assert race.tag("staging") == race.tested
    assert f"(was {race.staging})" in out
    assert "--from-git" not in out


def test_promote_without_a_tested_digest_refuses_and_moves_nothing(
        race: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A job that forgot --digest must not promote git's head, which may be untested."""
    monkeypatch.delenv("IMAGE_UPDATER_DIGEST", raising=False)
    code, out, err = run(race.cli(), capsys)

    assert code == 2 and out == ""
    assert "--digest" in err and "--from-git" in err and "nobody tested in dev" in err
    assert race.tag("staging") == race.staging

    monkeypatch.setenv("IMAGE_UPDATER_DIGEST", race.tested)  # how the PostSync job passes it
    code, out, err = run(race.cli(), capsys)
    assert code == 0, err
    assert race.tag("staging") == race.tested


def test_promote_refuses_a_digest_git_did_not_deploy(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(race.cli("--digest", race.newer), capsys)

    assert code == 4
    assert f"The job tested {race.newer}" in err and race.tested in err
    assert race.tag("staging") == race.staging


def test_a_rerun_of_the_job_is_already_promoted(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(race.cli("--digest", race.tested), capsys)[0] == 0
    code, out, _ = run(race.cli("--digest", race.tested), capsys)
    assert code == 0 and "already promoted" in out


def test_promote_follows_the_digest_git_holds_now(
        race: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # image-updater committed B for dev after the job started: git is the truth, and the
    # job (which tested A) must not promote.
    push_other_commit(race.bare.url, tmp_path,
                      {"application-x/values-dev.yaml": values_file("dev", race.newer)})

    refused = run(race.cli("--digest", race.tested), capsys)
    by_hand = run(race.cli("--from-git"), capsys)  # a person who chose git's head

    assert refused[0] == 4
    assert by_hand[0] == 0 and race.tag("staging") == race.newer


def test_target_tag_moved_while_git_was_read_is_a_conflict(race: Setup) -> None:
    """Compare-and-swap: the target tag is read before git, and must not move meanwhile."""
    app = load_policies([race.policies])[0]
    meddler = push_image(race.server.url, race.repo, None, seed="someone else")
    client = OciRegistry(RegistryOptions(host=race.server.host, insecure=True))

    def read_file(path: str) -> str | None:
        # someone moves :staging after promote looked at it, while git is being read
        body = httpx.get(f"{race.server.url}/v2/{race.repo}/manifests/{meddler}",
                         headers={"Accept": ", ".join(MANIFEST_ACCEPT)}, timeout=10).content
        httpx.put(f"{race.server.url}/v2/{race.repo}/manifests/staging", content=body,
                  headers={"Content-Type": json.loads(body)["mediaType"]},
                  timeout=10).raise_for_status()
        if path == HOLDS_FILE:  # promote asks whether staging is held: it is not
            return None
        return race.bare.show("master", path).decode()

    async def go() -> RetagResult:
        try:
            return await promote(app, app.env("dev"), app.env("staging"), digest=None,
                                 registry_for=lambda host: client, read_file=read_file)
        finally:
            await client.aclose()

    with pytest.raises(ConflictError) as caught:
        asyncio.run(go())
    assert meddler in str(caught.value) and race.staging in str(caught.value)
    assert race.tag("staging") == meddler


def test_unknown_environment_and_app_are_configuration_errors(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    wrong_env = run([*race.cli()[:4], "--to", "qa", *race.cli("--from-git")[6:]], capsys)
    wrong_app = run(["promote", "application-y", "--from", "dev", "--to", "staging",
                     "--from-git", "--config", str(race.config), "--policies",
                     str(race.policies)], capsys)

    assert wrong_env[0] == 1 and "has no environment 'qa'" in wrong_env[2]
    assert wrong_app[0] == 1 and "no policy defines app(s) application-y" in wrong_app[2]
    assert race.tag("staging") == race.staging


def test_nothing_deployed_yet_is_refused_clearly(
        race: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["promote", "application-x", "--from", "prod", "--to", "staging",
                        "--from-git", "--config", str(race.config), "--policies",
                        str(race.policies)], capsys)
    assert code == 1 and "holds no image digest" in err


# -- the example chart -----------------------------------------------------------------------


def _values(path: Path) -> dict[str, object]:
    data = YAML(typ="safe").load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_postsync_job_is_an_argo_cd_hook_deleted_before_recreation_and_on_success() -> None:
    text = (CHART / "templates" / "postsync-promote.yaml").read_text()
    assert re.search(r"^    argocd\.argoproj\.io/hook: PostSync$", text, re.M)
    assert re.search(r"^    argocd\.argoproj\.io/hook-delete-policy: "
                     r"BeforeHookCreation,HookSucceeded$", text, re.M)
    condition = re.search(r"\{\{-? if (.*?) -?\}\}", text)
    assert condition and ".Values.smokeTest.promoteTo" in condition.group(1)
    # the smoke tests run before the promotion: as an init container
    assert text.index("initContainers:") < text.index("- name: promote")


def test_postsync_job_command_is_one_the_cli_accepts() -> None:
    text = (CHART / "templates" / "postsync-promote.yaml").read_text()
    block = text.split("args:\n", 1)[1].split("\n          env:", 1)[0]
    samples = {".Values.promoter.app": "application-x", ".Values.environment": "dev",
               ".Values.smokeTest.promoteTo": "staging",
               ".Values.image.digest": "sha256:" + "a" * 64,
               ".Values.promoter.server": "http://image-updater.image-updater.svc:8080"}

    def fill(item: str) -> str:
        for key, value in samples.items():
            if key in item:
                return value
        assert "{{" not in item, item
        return item

    args = [fill(line.strip()[2:]) for line in block.splitlines()
            if line.strip().startswith("- ")]
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.app, parsed.source, parsed.target, parsed.digest) == (
        "promote", "application-x", "dev", "staging", "sha256:" + "a" * 64)
    assert parsed.server and parsed.service_account_token  # the daemon promotes for the job


@pytest.mark.parametrize("root", [CHART, DEMO], ids=["chart", "demo"])
def test_values_files_have_one_shape_and_promote_along_the_chain(root: Path) -> None:
    chain = dict(zip(ENVS, (*ENVS[1:], ""), strict=True))
    for env in ENVS:
        values = _values(root / f"values-{env}.yaml")
        image = values["image"]
        assert isinstance(image, dict)
        assert {"repository", "tag", "digest"} <= set(image)
        assert image["tag"] == env and image["digest"] == ""
        smoke = values["smokeTest"]
        assert isinstance(smoke, dict) and smoke["promoteTo"] == chain[env]
    chart_image = _values(CHART / "values-dev.yaml")["image"]
    demo_image = _values(DEMO / "values-dev.yaml")["image"]
    assert isinstance(chart_image, dict) and isinstance(demo_image, dict)
    assert chart_image["repository"] == demo_image["repository"]


def test_deployment_pins_the_digest_when_one_is_set() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "{{ .Values.image.repository }}@{{ .Values.image.digest }}" in helpers
    assert 'include "application-x.image"' in (CHART / "templates" /
                                                "deployment.yaml").read_text()


@pytest.mark.parametrize(("env", "jobs"), [("dev", 1), ("staging", 1), ("prod", 0)])
def test_chart_renders_a_promote_job_except_in_prod(env: str, jobs: int) -> None:
    digest = "sha256:" + "b" * 64
    out = subprocess.run(
        [require_tool("helm"), "template", "application-x", str(CHART),
         "-f", str(CHART / f"values-{env}.yaml"), "--set", f"image.digest={digest}"],
        capture_output=True, text=True, check=True).stdout
    docs = [d for d in YAML(typ="safe").load_all(out) if d]
    assert sum(d["kind"] == "Job" for d in docs) == jobs
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/application-x@{digest}"


def test_promote_from_a_platform_pinned_environment_moves_the_tested_manifest(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dev pins linux/amd64, so git holds that child's digest: that manifest is what ran
    the tests, and it moves on alone, with a note that the tag is now single-platform."""
    repo = f"team/pinned-{uuid.uuid4().hex[:8]}"
    index, children = push_index(registry.url, repo, "dev", seed="multi")
    bare = make_bare_repo(tmp_path / "remotes", files={
        "application-x/values-dev.yaml": values_file("dev", children["amd64"]),
        "application-x/values-staging.yaml": values_file("staging", ""),
    })
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        f"app: application-x\nimage: {registry.host}/{repo}\n"
        f"git: {{url: {bare.url}, branch: master}}\n"
        "defaults: {strategy: digest, write: {digest: image.digest}}\n"
        "environments:\n"
        "  dev: {file: application-x/values-dev.yaml, tag: dev, platform: linux/amd64}\n"
        "  staging: {file: application-x/values-staging.yaml, tag: staging}\n")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"registries": [{"host": registry.host, "insecure": True}],
                                  "cache_dir": str(tmp_path / "cache")}))

    code, out, err = run(["promote", "application-x", "--from", "dev", "--to", "staging",
                          "--digest", children["amd64"], "--config", str(config),
                          "--policies", str(policies)], capsys)

    assert code == 0, err
    staging = httpx.get(f"{registry.url}/v2/{repo}/manifests/staging", timeout=10,
                        headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
    assert digest_of(staging.content) == children["amd64"] != index
    assert "only that platform's manifest was promoted" in out
