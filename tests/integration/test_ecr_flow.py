"""The engine and the CLI on ECR (moto's server mode): commits from ECR, promote on ECR.

Credentials come from boto3's default chain (here: environment variables holding fake
keys), exactly as in a cluster with IRSA or an instance profile.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from image_updater.cli import main
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import EcrSettings, RegistrySettings, Settings
from tests.fixtures.gitrepo import OLD_DIGEST, VALUES_FILES, BareRepo, make_bare_repo
from tests.fixtures.moto import ACCESS_KEY, ECR_HOST, REGION, SECRET_KEY, MotoServer, fake_session
from tests.integration.test_ecr import push

pytestmark = pytest.mark.integration

ENVS = ("dev", "staging", "prod")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def ecr(moto_server: MotoServer) -> Any:
    client = fake_session().client("ecr", endpoint_url=moto_server.url)
    yield client
    client.close()


def settings(moto_server: MotoServer, tmp_path: Path) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"), registries=(RegistrySettings(
        host=ECR_HOST, ecr=EcrSettings(endpoint_url=moto_server.url)),))


def policy(repository: str, deploy: BareRepo, envs: tuple[str, ...] = ENVS) -> str:
    lines = "\n".join(f"  {e}: {{file: application-x/values-{e}.yaml}}" for e in envs)
    return (f"app: application-x\nimage: {ECR_HOST}/{repository}\n"
            f"git: {{url: \"file://{deploy.path}\"}}\nenvironments:\n{lines}\n")


def test_daemon_commits_dev_staging_and_prod_digests_from_ecr(
        aws_env: None, ecr: Any, moto_server: MotoServer, tmp_path: Path) -> None:
    repository = f"team/app-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repository)
    digests = {env: push(ecr, repository, env, seed=f"{repository}-{env}") for env in ENVS}
    deploy = make_bare_repo(tmp_path)
    apps, problems = load_text(policy(repository, deploy), "ecr.yaml")
    assert problems == []
    result = asyncio.run(run_once(settings(moto_server, tmp_path), apps))
    assert result.failures == []
    assert {c.env: c.digest for c in result.changes} == digests
    for env in ENVS:
        text = deploy.show("master", f"application-x/values-{env}.yaml").decode()
        assert f"digest: {digests[env]}" in text

    again = asyncio.run(run_once(settings(moto_server, tmp_path), apps))
    assert again.changes == [] and again.failures == []


def test_missing_repository_and_missing_tag_fail_clearly_without_writing(
        aws_env: None, ecr: Any, moto_server: MotoServer, tmp_path: Path) -> None:
    repository = f"team/partial-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repository)
    push(ecr, repository, "dev", seed="only-dev")
    deploy = make_bare_repo(tmp_path)
    missing = policy("team/does-not-exist", deploy, ("dev",)).replace(
        "app: application-x", "app: missing-repo")
    apps, problems = load_text(policy(repository, deploy, ("dev", "prod")) + "---\n" + missing,
                               "ecr.yaml")
    assert problems == []
    result = asyncio.run(run_once(settings(moto_server, tmp_path), apps))
    failures = {(f.app, f.env): f.message for f in result.failures}
    assert ("application-x", "prod") not in failures  # no prod tag yet: waiting, not failing
    assert [(w.app, w.env) for w in result.waiting] == [("application-x", "prod")]
    assert "team/does-not-exist" in failures[("missing-repo", "dev")]
    assert [c.env for c in result.changes] == ["dev"]
    assert deploy.show("master", "application-x/values-prod.yaml").decode() == \
        VALUES_FILES["application-x/values-prod.yaml"]
    assert OLD_DIGEST in deploy.show("master", "application-x/values-prod.yaml").decode()


def test_promote_on_ecr_moves_the_tested_digest(
        aws_env: None, ecr: Any, moto_server: MotoServer, tmp_path: Path) -> None:
    repository = f"team/promote-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repository)
    # CI tags each build with its commit too; that also keeps the tested image alive in
    # moto, which (unlike ECR) deletes an image whose last tag moves away.
    tested = push(ecr, repository, "build-1", seed="tested")
    assert push(ecr, repository, "dev", seed="tested") == tested
    deploy = make_bare_repo(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(policy(repository, deploy))
    config = tmp_path / "settings.yaml"
    config.write_text(json.dumps({"cache_dir": str(tmp_path / "cache"), "registries": [
        {"host": ECR_HOST, "ecr": {"endpoint_url": moto_server.url}}]}))
    args = ["--config", str(config), "--policies", str(policies)]
    assert main(["once", *args]) == 0  # staging and prod tags do not exist yet: waiting
    push(ecr, repository, "dev", seed="untested")  # CI moves on while tests run
    assert main(["promote", "application-x", "--from", "dev", "--to", "staging",
                 "--digest", tested, *args]) == 0
    image = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "staging"}])
    assert image["images"][0]["imageId"]["imageDigest"] == tested


def test_bad_credentials_give_a_clear_error_and_no_write(
        ecr: Any, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A role that cannot be assumed is an auth failure naming the registry, no secret."""
    repository = f"team/creds-{uuid.uuid4().hex[:8]}"
    ecr.create_repository(repositoryName=repository)
    push(ecr, repository, "dev", seed="creds")
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    deploy = make_bare_repo(tmp_path)
    apps, _ = load_text(policy(repository, deploy, ("dev",)), "ecr.yaml")
    head = deploy.head()
    result = asyncio.run(run_once(settings(moto_server, tmp_path), apps))
    (failure,) = result.failures
    assert failure.reason == "registry_auth", failure
    assert ECR_HOST in failure.message
    assert SECRET_KEY not in failure.message and ACCESS_KEY not in failure.message
    assert deploy.head() == head
