"""Processes sharing cache_dir: real git, real processes, one deploy repository.

``once`` or ``promote`` run in the daemon's pod share the daemon's working clones; each
cycle must still see a clone nobody else moves, deletes or half-writes under it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from image_updater.errors import GitUnavailableError
from image_updater.gitops.repo import DeployRepo
from tests.fixtures.gitrepo import BRANCH, VALUES_FILES, BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5


@pytest.fixture
def bare(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path / "remotes")


def worker(bare: BareRepo, cache: Path, name: str, round_: int, start_at: float,
           *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.clone_worker", bare.url, str(cache), name,
         str(round_), str(start_at), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_two_processes_share_one_clone_for_five_rounds(bare: BareRepo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for round_ in range(1, ROUNDS + 1):
        start_at = time.time() + 1.0  # both interpreters are up and waiting by then
        # Round 3 breaks the clone: it is deleted and cloned again, under the lock only.
        extra = ("--corrupt",) if round_ == 3 else ()
        procs = [worker(bare, cache, "alpha", round_, start_at, *extra),
                 worker(bare, cache, "beta", round_, start_at)]
        for proc in procs:
            finish(proc)
        for name in ("alpha", "beta"):
            assert bare.show(BRANCH, f"{name}.txt") == f"round {round_}\n".encode()
    subjects = bare.log("--format=%s", BRANCH).splitlines()
    expected = {f"{n} round {r}" for n in ("alpha", "beta") for r in range(1, ROUNDS + 1)}
    assert expected <= set(subjects)
    assert len(subjects) == len(expected) + 1  # plus the initial commit: nothing twice
    assert [p.name for p in cache.iterdir()] and all(
        not (p / ".git" / "index.lock").exists() for p in cache.iterdir() if p.is_dir())


def test_a_waiting_process_says_who_holds_the_clone(bare: BareRepo, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    holder = worker(bare, cache, "holder", 1, 0.0, "--hold", "1.5")
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    repo = DeployRepo(url=bare.url, branch=BRANCH, cache_dir=cache, lock_timeout=60)
    with caplog.at_level(logging.INFO, logger="image_updater.gitops.clonelock"):
        repo.sync()  # waits for the holder, then sees its commit
    finish(holder)
    waited = [r.getMessage() for r in caplog.records if "is in use by" in r.getMessage()]
    assert len(waited) == 1
    assert f"process {holder.pid} " in waited[0] and "worker holder, round 1" in waited[0]
    assert "the sync waits up to 60 s" in waited[0]
    assert repo.read("holder.txt") == "round 1\n"


def test_a_process_gives_up_after_lock_timeout_and_deletes_nothing(bare: BareRepo,
                                                                   tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    holder = worker(bare, cache, "holder", 1, 0.0, "--hold", "3")
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    repo = DeployRepo(url=bare.url, branch=BRANCH, cache_dir=cache, lock_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(GitUnavailableError) as info, repo.locked("the test's cycle"):
        raise AssertionError("the lock was taken while another process held it")
    assert time.monotonic() - started < 2.5
    assert info.value.temporary
    message = str(info.value)
    assert f"in use by process {holder.pid} " in message and "git.lock_timeout" in message
    assert "the test's cycle is given up" in message
    finish(holder)
    # The holder's clone was left alone and its commit landed.
    assert git("rev-parse", "HEAD", cwd=repo.path) == bare.head()
    assert bare.show(BRANCH, "holder.txt") == b"round 1\n"


def test_two_once_processes_beside_each_other_commit_every_update(
        registry: RegistryServer, tmp_path: Path) -> None:
    """The common case: ``once --app`` run by hand (kubectl exec) while another cycle runs."""
    apps = ("application-x", "application-y")
    deploy = make_bare_repo(tmp_path, files={
        f"{app}/values-dev.yaml": VALUES_FILES["application-x/values-dev.yaml"] for app in apps})
    policies = tmp_path / "policies"
    policies.mkdir()
    for app in apps:
        (policies / f"{app}.yaml").write_text(
            f"app: {app}\nimage: {registry.host}/shared-cache/{app}\n"
            f"git: {{url: \"file://{deploy.path}\", branch: master}}\n"
            f"environments:\n  dev: {{file: {app}/values-dev.yaml}}\n")
    config = tmp_path / "settings.yaml"
    config.write_text(json.dumps({"cache_dir": str(tmp_path / "cache"),
                                  "registries": [{"host": registry.host, "insecure": True}]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_CONFIG_NOSYSTEM": "1"}
    for round_ in range(1, ROUNDS + 1):
        digests = {app: push_image(registry.url, f"shared-cache/{app}", "dev",
                                   seed=f"{tmp_path.name} round {round_}") for app in apps}
        procs = [subprocess.Popen(
            [sys.executable, "-m", "image_updater.cli", "once", "--app", app,
             "--config", str(config), "--policies", str(policies)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for app in apps]
        for proc in procs:
            finish(proc)
        for app in apps:
            values = deploy.show(BRANCH, f"{app}/values-dev.yaml").decode()
            assert f"digest: {digests[app]}" in values, (round_, app)
    commits = int(git("rev-list", "--count", BRANCH, cwd=deploy.path))
    assert commits == 1 + ROUNDS * len(apps)
