"""status and history on a real registry and real git, through the real CLI.

A hand edit shows as ``drifted`` and as a hand edit; a new app's missing staging and prod
tags are ``waiting`` (and ``once`` exits 0); a merged pull request is attributed to its
merger; 10,000 image-updater commits are read back complete and in order; bad input gives
clear errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from image_updater.cli import main
from image_updater.config.policies import load_text
from image_updater.exit_codes import ExitCode
from image_updater.gitops.history import read_history
from image_updater.model import App
from tests.fixtures import history_repo
from tests.fixtures.gitrepo import (
    GIT_ENV,
    OLD_DIGEST,
    BareRepo,
    git,
    make_bare_repo,
    push_other_commit,
)
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

APP = "application-x"
PROD = "application-x/values-prod.yaml"
HAND = "sha256:" + "a" * 64


def policy_text(image: str, repo: BareRepo) -> str:
    return textwrap.dedent(f"""\
        app: {APP}
        image: {image}
        git: {{url: "file://{repo.path}", branch: master}}
        defaults: {{write: {{digest: image.digest}}}}
        environments:
          dev: {{file: application-x/values-dev.yaml, tag: dev}}
          staging: {{file: application-x/values-staging.yaml, tag: staging}}
          prod: {{file: {PROD}, tag: prod}}
        """)


def setup(tmp_path: Path, registry: RegistryServer, repository: str) -> tuple[BareRepo, list[str]]:
    deploy = make_bare_repo(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(policy_text(f"{registry.host}/{repository}", deploy))
    config = tmp_path / "settings.yaml"
    config.write_text(f"cache_dir: {tmp_path / 'cache'}\nregistries: [{{host: "
                      f"'{registry.host}', insecure: true}}]\n")
    return deploy, ["--config", str(config), "--policies", str(policies)]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == ExitCode.OK
    return json.loads(capsys.readouterr().out)


def test_new_app_without_staging_and_prod_tags_is_waiting_and_once_exits_0(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deploy, opts = setup(tmp_path, registry, "hist/new")
    dev = push_image(registry.url, "hist/new", "dev", seed="new-1")

    assert main(["once", *opts]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "waiting application-x/staging: tag staging does not exist yet" in out
    assert "FAILED" not in out and "ERROR" not in out
    rows = {r["env"]: r for r in run_json(capsys, "status", *opts)}
    assert {e: r["state"] for e, r in rows.items()} == {
        "dev": "in-sync", "staging": "waiting", "prod": "waiting"}
    assert rows["dev"]["git"]["digest"] == dev == rows["dev"]["wanted"]["digest"]
    assert rows["dev"]["git"]["how"] == "update (poll)"  # the commit says Source: poll
    assert rows["prod"]["wanted"] == {"digest": None, "tag": "prod"}
    assert deploy.show("master", PROD).decode().count(OLD_DIGEST) == 1

    assert main(["status", *opts]) == ExitCode.OK
    table = capsys.readouterr().out
    assert "tag prod does not exist yet" in table
    assert max(len(line) for line in table.splitlines()) <= 100


def test_hand_edit_is_drifted_in_status_and_a_hand_edit_in_history(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deploy, opts = setup(tmp_path, registry, "hist/hand")
    digests = {e: push_image(registry.url, "hist/hand", e, seed=f"hand-{e}")
               for e in ("dev", "staging", "prod")}
    assert main(["once", *opts]) == ExitCode.OK
    text = deploy.show("master", PROD).decode().replace(digests["prod"], HAND)
    edit = push_other_commit(str(deploy.path), tmp_path, {PROD: text}, "Pin prod by hand")

    rows = {r["env"]: r for r in run_json(capsys, "status", *opts)}
    assert rows["prod"]["state"] == "drifted"
    assert rows["prod"]["git"] | {"since": None} == {
        "digest": HAND, "tag": "prod", "commit": edit, "since": None,
        "by": "Other Engineer <other@example.com>", "how": "hand edit by Other Engineer"}
    assert rows["prod"]["wanted"]["digest"] == digests["prod"]
    assert rows["dev"]["state"] == rows["staging"]["state"] == "in-sync"

    history = run_json(capsys, "history", APP, "prod", *opts)
    assert [(h["action"], h["old_digest"], h["new_digest"]) for h in history] == [
        ("hand-edit", digests["prod"], HAND),
        ("update", OLD_DIGEST, digests["prod"]),
        ("hand-edit", None, OLD_DIGEST),  # the commit that created the file
    ]
    assert history[0]["commit"] == edit and history[0]["subject"] == "Pin prod by hand"
    assert len(run_json(capsys, "history", APP, *opts, "--limit", "2")) == 2

    # the next cycle writes the tag's digest again: pending → in sync, history grows
    assert main(["once", *opts]) == ExitCode.OK
    rows = {r["env"]: r for r in run_json(capsys, "status", *opts, "--env", "prod")}
    assert list(rows) == ["prod"] and rows["prod"]["state"] == "in-sync"


def test_a_values_file_the_cycle_cannot_write_is_failing_not_drifted(
        registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A renamed key is not a hand edit the next cycle repairs: status says what the cycle
    would say (failing, with the error), and a broken holds file still shows what runs."""
    deploy, opts = setup(tmp_path, registry, "hist/nokey")
    for env in ("dev", "staging", "prod"):
        push_image(registry.url, "hist/nokey", env, seed=f"nokey-{env}")
    assert main(["once", *opts]) == ExitCode.OK
    text = deploy.show("master", PROD).decode().replace("digest:", "digest_x:")
    push_other_commit(str(deploy.path), tmp_path, {PROD: text}, "Rename the key")
    rows = {r["env"]: r for r in run_json(capsys, "status", *opts)}
    assert rows["prod"]["state"] == "failing" and "has no key image.digest" in rows["prod"][
        "error"]

    dev_digest = rows["dev"]["git"]["digest"]
    push_other_commit(str(deploy.path), tmp_path,
                      {".image-updater/holds.yaml": "- not: a mapping of apps\n"}, "Break holds")
    rows = {r["env"]: r for r in run_json(capsys, "status", *opts)}
    assert rows["dev"]["state"] == "failing" and rows["dev"]["git"]["digest"] == dev_digest
    assert "holds.yaml" in rows["dev"]["error"]


def test_a_merged_pull_request_is_attributed_to_its_merger(tmp_path: Path) -> None:
    deploy = make_bare_repo(tmp_path)
    work = tmp_path / "merger"
    git("clone", "-q", str(deploy.path), str(work))
    git("checkout", "-q", "-b", "image-updater/application-x-prod", cwd=work)
    new = "sha256:" + "b" * 64
    path = work / PROD
    path.write_text(path.read_text().replace(OLD_DIGEST, new))
    git("commit", "-qam", f"image-updater: application-x prod\n\nImage-Updater-App: {APP}\n"
        f"Image-Updater-Env: prod\nImage-Updater-Digest: {new}\n", cwd=work)
    git("checkout", "-q", "master", cwd=work)
    merger = {"GIT_AUTHOR_NAME": "Release Manager", "GIT_AUTHOR_EMAIL": "rm@example.com"}
    subprocess.run(["git", "merge", "-q", "--no-ff", "-m",
                    "Merge pull request #7 from org/image-updater/application-x-prod",
                    "image-updater/application-x-prod"], cwd=work, check=True,
                   env={**os.environ, **GIT_ENV, **merger})
    git("push", "-q", "origin", "master", cwd=work)

    (entry, created) = read_history(deploy.path, "master", load_app(deploy), "prod")
    assert (entry.action, entry.by, entry.old_digest, entry.new_digest) == (
        "pull-request", "Release Manager <rm@example.com>", OLD_DIGEST, new)
    assert entry.how == "PR merged by Release Manager"
    assert created.action == "hand-edit" and created.old_digest is None


def test_new_trailers_name_the_action_source_and_previous_digest(tmp_path: Path) -> None:
    deploy = make_bare_repo(tmp_path)
    back = "sha256:" + "c" * 64
    text = history_repo.values("prod", back)
    push_other_commit(str(deploy.path), tmp_path, {PROD: text, ".image-updater/holds.yaml":
                                                   "application-x: {prod: {kind: rollback}}\n"},
                      f"image-updater: roll back application-x prod\n\n"
                      f"Image-Updater-App: {APP}\nImage-Updater-Env: prod\n"
                      f"Image-Updater-Digest: {back}\nImage-Updater-Action: rollback\n"
                      f"Image-Updater-Previous-Digest: {OLD_DIGEST}\n"
                      "Image-Updater-Source: person\n")
    push_other_commit(str(deploy.path), tmp_path, {".image-updater/holds.yaml": "{}\n"},
                      f"image-updater: release application-x prod\n\n"
                      f"Image-Updater-App: {APP}\nImage-Updater-Env: prod\n"
                      "Image-Updater-Action: release\nImage-Updater-Source: person\n")
    app = load_app(deploy)
    assert [(e.action, e.source, e.old_digest, e.new_digest) for e in read_history(
        deploy.path, "master", app, "prod", holds_file=".image-updater/holds.yaml")] == [
        ("release", "person", None, None),
        ("rollback", "person", OLD_DIGEST, back),
        ("hand-edit", None, None, OLD_DIGEST)]


def test_history_of_10000_image_updater_commits_is_complete_and_ordered(tmp_path: Path
                                                                      ) -> None:
    n = 10_000
    repo = history_repo.make_history_repo(tmp_path / "big.git", n)
    started = time.perf_counter()
    entries = read_history(repo, "master", load_app(BareRepo(repo)))
    elapsed = time.perf_counter() - started
    updates = entries[:-3]
    assert len(updates) == n and [e.action for e in entries[-3:]] == ["hand-edit"] * 3
    for k, entry in enumerate(updates):
        i = n - k  # newest first
        assert (entry.env, entry.new_digest, entry.old_digest) == (
            history_repo.ENVS[i % 3], history_repo.digest_of(i), history_repo.expected_previous(i))
    assert elapsed < 10, f"reading took {elapsed:.1f} s (bench/history.py targets 2 s)"


def test_bad_input_is_a_clear_error(registry: RegistryServer, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, opts = setup(tmp_path, registry, "hist/bad")
    assert main(["history", "nope", *opts]) == ExitCode.CONFIG
    assert "no policy defines app(s) nope; known apps: application-x" in capsys.readouterr().err
    assert main(["history", APP, "qa", *opts]) == ExitCode.CONFIG
    assert "App application-x has no environment 'qa' (it has: dev, staging, prod)" in \
        capsys.readouterr().err
    assert main(["status", APP, "--env", "qa", *opts]) == ExitCode.CONFIG
    assert "has no environment 'qa'" in capsys.readouterr().err
    assert main(["history", APP, "--limit", "0", *opts]) == ExitCode.CONFIG
    assert "--limit must be a positive number" in capsys.readouterr().err


def load_app(repo: BareRepo) -> App:
    apps, problems = load_text(policy_text("registry.example.com/team/application-x", repo),
                               "p.yaml")
    assert problems == []
    return apps[0]
