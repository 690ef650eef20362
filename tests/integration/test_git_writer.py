"""The git writer against real git: bare repositories in tmp dirs and a real ``git daemon``."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image_updater.changes import Change, KeyChange
from image_updater.errors import (
    ConfigError,
    GitAuthError,
    GitError,
    GitUnavailableError,
    PushRejectedError,
    ValuesError,
)
from image_updater.gitops.credentials import GitAuth, redact_url
from image_updater.gitops.message import commit_message
from image_updater.gitops.repo import DeployRepo, Plan, Reader
from image_updater.secrets import SecretRegistry
from tests.fixtures.gitrepo import (
    BRANCH,
    OLD_DIGEST,
    VALUES_FILES,
    BareRepo,
    GitDaemon,
    GitHttpServer,
    git,
    make_bare_repo,
    push_other_commit,
)
from tests.fixtures.registry import free_port

pytestmark = pytest.mark.integration

DEV = "application-x/values-dev.yaml"
PROD = "application-x/values-prod.yaml"
NEW_DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def bare(tmp_path: Path) -> BareRepo:
    return make_bare_repo(tmp_path / "remotes")


@pytest.fixture
def daemon(bare: BareRepo) -> Iterator[GitDaemon]:
    with GitDaemon(bare.path.parent) as server:
        yield server


def deploy_repo(url: str, tmp_path: Path, **kwargs: object) -> DeployRepo:
    return DeployRepo(url=url, branch=kwargs.pop("branch", BRANCH),  # type: ignore[arg-type]
                      cache_dir=tmp_path / "cache", author_name="Image Updater",
                      author_email="bot@example.com", clock=lambda: NOW,
                      backoff_base=0.5, jitter=lambda: 0.5, **kwargs)  # type: ignore[arg-type]


def change(env: str = "dev", digest: str = NEW_DIGEST) -> Change:
    return Change(app="application-x", env=env, file=f"application-x/values-{env}.yaml",
                  image="registry.example.com/team/application-x", tag=env, digest=digest,
                  keys=(KeyChange(key="image.digest", old=OLD_DIGEST, new=digest),),
                  why=f"tag {env} now points at {digest}")


def with_digest(text: str, digest: str) -> str:
    # stands in for the values editor: one line changes, comments stay
    return re.sub(r"(\n  digest: )sha256:[0-9a-f]{64}", rf"\g<1>{digest}", text)


def set_digest(path: str = DEV, digest: str = NEW_DIGEST,
               before: Callable[[int], None] | None = None) -> tuple[Callable[[Reader], Plan],
                                                                      list[str]]:
    """A plan callback; ``before(call_number)`` runs first (to inject races). Returns the seen
    texts too, so tests can check what each attempt was derived from."""
    seen: list[str] = []

    def plan(read: Reader) -> Plan:
        if before is not None:
            before(len(seen) + 1)
        text = read(path)
        assert text is not None
        seen.append(text)
        env = path.rsplit("-", 1)[1].removesuffix(".yaml")
        return Plan(files={path: with_digest(text, digest)},
                    message=commit_message([change(env, digest)]))

    return plan, seen


# ---- committing --------------------------------------------------------------------------

def test_commit_changes_exactly_one_line_with_trailers_and_author(bare: BareRepo,
                                                                  tmp_path: Path) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    plan, _ = set_digest()

    result = repo.commit_and_push(plan)

    assert result.sha is not None and (result.attempts, result.rejected_count) == (1, 0)
    assert bare.head() == result.sha
    stat = git("show", "--stat", "--format=", result.sha, cwd=bare.path)
    assert f"{DEV} | 2 +-" in stat
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in stat
    assert bare.show(result.sha, DEV) == with_digest(VALUES_FILES[DEV], NEW_DIGEST).encode()
    people = bare.log("-1", "--format=%an <%ae>|%cn <%ce>|%at", result.sha)
    assert people == f"Image Updater <bot@example.com>|Image Updater <bot@example.com>|" \
                     f"{int(NOW.timestamp())}"
    trailers = bare.log("-1", "--format=%(trailers:key=Image-Updater-Digest,valueonly)")
    assert trailers.strip() == NEW_DIGEST


def test_bytes_are_preserved_exactly_crlf_and_no_final_newline(tmp_path: Path) -> None:
    original = b"# windows file\r\nimage:\r\n  digest: " + OLD_DIGEST.encode() + b"\r\n  x: 1"
    bare = make_bare_repo(tmp_path / "remotes", files={DEV: original})
    repo = deploy_repo(bare.url, tmp_path)
    plan, seen = set_digest()

    result = repo.commit_and_push(plan)

    assert seen == [original.decode()]  # read() hands over the text untouched, \r included
    assert result.sha is not None
    assert bare.show(result.sha, DEV) == original.replace(OLD_DIGEST.encode(),
                                                          NEW_DIGEST.encode())


def test_no_change_means_no_commit(bare: BareRepo, tmp_path: Path) -> None:
    before = bare.head()
    repo = deploy_repo(bare.url, tmp_path)

    result = repo.commit_and_push(lambda read: Plan(files={DEV: read(DEV) or ""}, message="x"))
    empty = repo.commit_and_push(lambda read: Plan(files={}, message=""))

    assert (result.sha, result.attempts, result.rejected_count) == (None, 1, 0)
    assert empty.sha is None
    assert bare.head() == before


def test_many_files_and_a_message_over_an_argument_limit_land_in_one_commit(
        bare: BareRepo, tmp_path: Path) -> None:
    """A cycle moving a thousand environments: one commit, its message longer than the
    128 KiB one command-line argument may hold; reads see each file's new blob after it."""
    files = {f"app-{i:04d}/values.yaml": f"digest: sha256:{i:064x}\n" for i in range(1000)}
    message = "image-updater: 1000 updates\n\n" + "".join(
        f"- app-{i:04d}: {'x' * 150}\n" for i in range(1000))
    assert len(message.encode()) > 128 * 1024
    repo = deploy_repo(bare.url, tmp_path)

    result = repo.commit_and_push(fixed(files, message))

    assert result.sha is not None and bare.head() == result.sha
    assert git("log", "-1", "--format=%B", BRANCH, cwd=bare.path).strip() == message.strip()
    changed = git("show", "--name-only", "--format=", BRANCH, cwd=bare.path).split()
    assert sorted(changed) == sorted(files)
    assert repo.read("app-0999/values.yaml") == files["app-0999/values.yaml"]
    again = repo.commit_and_push(fixed({"app-0999/values.yaml": "digest: ~\n"}, "m"))
    assert again.sha is not None and repo.read("app-0999/values.yaml") == "digest: ~\n"


# ---- races -------------------------------------------------------------------------------

def test_race_replans_on_the_new_head_and_lands_on_top(bare: BareRepo, daemon: GitDaemon,
                                                       tmp_path: Path) -> None:
    theirs: list[str] = []

    def other_engineer(call: int) -> None:
        if call == 1:  # after our sync, before our push
            theirs.append(push_other_commit(bare.url, tmp_path, {"README.md": "hello\n"}))

    sleeps: list[float] = []
    repo = deploy_repo(daemon.url("deploy.git"), tmp_path)
    plan, seen = set_digest(before=other_engineer)

    result = repo.commit_and_push(plan, sleep=sleeps.append)

    assert (result.attempts, result.rejected_count) == (2, 1)
    assert len(seen) == 2
    assert sleeps == [0.5 * 0.75]  # base 0.5 s, jitter 0.5 → factor 0.75
    assert bare.head() == result.sha
    parents = git("rev-list", "--parents", "-n", "1", str(result.sha), cwd=bare.path).split()
    assert parents[1:] == theirs
    assert bare.show(str(result.sha), "README.md") == b"hello\n"
    ours = bare.show(str(result.sha), DEV).decode()
    assert ours == with_digest(VALUES_FILES[DEV], NEW_DIGEST)
    assert ours.count(NEW_DIGEST) == 1
    stat = git("show", "--stat", "--format=", str(result.sha), cwd=bare.path)
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in stat


def test_race_that_makes_our_change_unnecessary_commits_nothing(bare: BareRepo,
                                                                daemon: GitDaemon,
                                                                tmp_path: Path) -> None:
    theirs: list[str] = []

    def same_fix_by_someone_else(call: int) -> None:
        if call == 1:
            text = with_digest(VALUES_FILES[DEV], NEW_DIGEST)
            theirs.append(push_other_commit(bare.url, tmp_path, {DEV: text}))

    repo = deploy_repo(daemon.url("deploy.git"), tmp_path)
    plan, _ = set_digest(before=same_fix_by_someone_else)

    result = repo.commit_and_push(plan, sleep=lambda _: None)

    assert (result.sha, result.attempts, result.rejected_count) == (None, 2, 1)
    assert bare.head() == theirs[0]


def test_losing_every_race_raises_a_temporary_push_rejected(bare: BareRepo,
                                                             tmp_path: Path) -> None:
    def always_first(call: int) -> None:
        push_other_commit(bare.url, tmp_path, {"README.md": f"edit {call}\n"})

    sleeps: list[float] = []
    repo = deploy_repo(bare.url, tmp_path)
    plan, seen = set_digest(before=always_first)

    with pytest.raises(PushRejectedError) as info:
        repo.commit_and_push(plan, max_attempts=3, sleep=sleeps.append)

    assert info.value.temporary
    assert "retried next cycle" in str(info.value) and BRANCH in str(info.value)
    assert len(seen) == 3 and sleeps == [0.375, 0.75]  # exponential: 0.5 s then 1.0 s, times 0.75
    assert bare.show(BRANCH, DEV) == VALUES_FILES[DEV].encode()


# ---- the cache clone ---------------------------------------------------------------------

def test_sync_cleans_a_dirty_cache(bare: BareRepo, tmp_path: Path) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    head = repo.sync()
    clone = repo.path
    (clone / "stray.txt").write_text("left over\n")
    (clone / "nested" / "dir").mkdir(parents=True)
    (clone / "nested" / "dir" / "f").write_text("x\n")
    (clone / DEV).write_text("modified\n")
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-am", "local only",
        cwd=clone)
    git("checkout", "-q", "--detach", "HEAD", cwd=clone)
    (clone / PROD).write_text("also modified\n")

    assert repo.sync() == head

    assert git("status", "--porcelain", "--ignored", cwd=clone) == ""
    assert git("rev-parse", "HEAD", cwd=clone) == head
    assert git("symbolic-ref", "--short", "HEAD", cwd=clone) == BRANCH
    assert not (clone / "stray.txt").exists() and not (clone / "nested").exists()
    assert (clone / DEV).read_bytes() == VALUES_FILES[DEV].encode()
    assert repo.read(DEV) == VALUES_FILES[DEV]


@pytest.mark.parametrize("damage", ["no-git-dir", "garbage-head", "no-objects"])
def test_a_corrupt_cache_is_recloned(bare: BareRepo, tmp_path: Path, damage: str) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    head = repo.sync()
    gitdir = repo.path / ".git"
    if damage == "no-git-dir":
        shutil.rmtree(gitdir)
    elif damage == "garbage-head":
        (gitdir / "HEAD").write_text("garbage\n")
    else:
        shutil.rmtree(gitdir / "objects")

    fresh = deploy_repo(bare.url, tmp_path)  # a new process finds the damaged cache
    assert fresh.path == repo.path
    assert fresh.sync() == head
    assert fresh.read(DEV) == VALUES_FILES[DEV]


def test_the_cache_is_reused_and_named_after_the_url(bare: BareRepo, tmp_path: Path) -> None:
    first = deploy_repo(bare.url, tmp_path)
    first.sync()
    marker = first.path / ".git" / "reused-marker"
    marker.write_text("1")

    second = deploy_repo(bare.url, tmp_path)
    second.sync()

    assert marker.exists()  # same clone, not a new one
    assert first.path.name.startswith("deploy-")
    assert deploy_repo(bare.url, tmp_path, branch="other").path != first.path


# ---- pull request branches ---------------------------------------------------------------

def test_push_branch_force_updates_and_is_seen_remotely(bare: BareRepo, daemon: GitDaemon,
                                                        tmp_path: Path) -> None:
    repo = deploy_repo(daemon.url("deploy.git"), tmp_path)
    branch = "image-updater/application-x-prod"
    base = bare.head()
    assert repo.remote_branch_sha(branch) is None

    first = repo.push_branch(branch, fixed({PROD: with_digest(VALUES_FILES[PROD], NEW_DIGEST)},
                                           commit_message([change("prod")])))
    again = repo.push_branch(branch, fixed({PROD: with_digest(VALUES_FILES[PROD], NEW_DIGEST)},
                                           commit_message([change("prod")])))
    other = "sha256:" + "b" * 64
    moved = repo.push_branch(branch, fixed({PROD: with_digest(VALUES_FILES[PROD], other)},
                                           commit_message([change("prod", other)])))

    assert again == first  # same change on the same base: no force-push noise
    assert moved != first
    assert repo.remote_branch_sha(branch) == moved == bare.head(branch)
    # a force update: the new commit sits on the base, not on the previous branch commit
    assert git("rev-parse", f"{moved}^", cwd=bare.path) == base
    assert bare.show(moved, PROD).decode().count(other) == 1
    assert bare.head() == base  # the watched branch is untouched

    assert repo.delete_remote_branch(branch) is True
    assert repo.remote_branch_sha(branch) is None
    assert repo.delete_remote_branch(branch) is False


def test_push_branch_refuses_the_watched_branch(bare: BareRepo, tmp_path: Path) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    with pytest.raises(ConfigError, match="pull request branch"):
        repo.push_branch(BRANCH, fixed({DEV: "x\n"}, "msg"))
    with pytest.raises(ConfigError, match="not a valid git branch name"):
        repo.push_branch("-delete-me", fixed({DEV: "x\n"}, "msg"))


def test_push_branch_plans_on_the_base_as_it_is_at_push_time(bare: BareRepo,
                                                              tmp_path: Path) -> None:
    """An engineer's edit to the same values file after our last read survives in the
    pull request branch: the plan is derived from the base at push time, not before."""
    repo = deploy_repo(bare.url, tmp_path)
    repo.sync()
    stale = repo.read(PROD)
    assert stale is not None
    edited = stale.replace("replicaCount: 1", "replicaCount: 5")
    assert edited != stale
    theirs = push_other_commit(bare.url, tmp_path, {PROD: edited}, "Scale prod to 5")
    seen: list[str | None] = []

    def plan(read: Reader) -> Plan:
        text = read(PROD)
        seen.append(text)
        assert text is not None
        return Plan(files={PROD: with_digest(text, NEW_DIGEST)},
                    message=commit_message([change("prod")]))

    sha = repo.push_branch("image-updater/application-x-prod", plan)

    assert seen == [edited]
    assert git("rev-parse", f"{sha}^", cwd=bare.path) == theirs
    on_branch = bare.show(sha, PROD).decode()
    assert "replicaCount: 5" in on_branch and NEW_DIGEST in on_branch
    assert bare.head() == theirs  # the watched branch keeps only their commit


def fixed(files: dict[str, str], message: str) -> Callable[[Reader], Plan]:
    """A plan that does not depend on what the base holds."""
    return lambda _read: Plan(files=files, message=message)


# ---- reading history back ----------------------------------------------------------------

def test_log_trailers_reconstructs_history_from_git(bare: BareRepo, tmp_path: Path) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    first = repo.commit_and_push(set_digest(DEV)[0]).sha
    second_digest = "sha256:" + "c" * 64
    second = repo.commit_and_push(set_digest(PROD, second_digest)[0]).sha
    push_other_commit(bare.url, tmp_path, {"README.md": "not ours\n"})
    repo.sync()

    records = repo.log_trailers()
    only_dev = repo.log_trailers(DEV)

    assert [r.sha for r in records] == [second, first]
    assert records[0].trailers == ({"app": "application-x", "env": "prod",
                                    "image": "registry.example.com/team/application-x",
                                    "tag": "prod", "digest": second_digest,
                                    "previous_digest": OLD_DIGEST, "action": "update",
                                    "source": "poll"},)
    assert [r.sha for r in only_dev] == [first]
    assert only_dev[0].trailers[0]["digest"] == NEW_DIGEST


# ---- bad input and failures --------------------------------------------------------------

@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", ".git/config",
                                  "application-x/.GIT/hooks/pre-commit", "", "a\\b", "a//b"])
def test_bad_paths_are_rejected(bare: BareRepo, tmp_path: Path, path: str) -> None:
    repo = deploy_repo(bare.url, tmp_path)
    before = bare.head()
    with pytest.raises(ConfigError, match="file path"):
        repo.read(path)
    with pytest.raises(ConfigError, match="file path"):
        repo.commit_and_push(lambda read: Plan(files={path: "x\n"}, message="m"))
    assert bare.head() == before


def test_reading_a_symlink_or_directory_is_refused(tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path / "remotes", files=VALUES_FILES)
    work = tmp_path / "link-work"
    git("clone", "-q", bare.url, str(work))
    (work / "escape.yaml").symlink_to("/etc/hostname")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "a link", cwd=work)
    git("push", "-q", "origin", "HEAD", cwd=work)
    repo = deploy_repo(bare.url, tmp_path)

    with pytest.raises(ValuesError, match=r"escape\.yaml"):
        repo.read("escape.yaml")
    with pytest.raises(ValuesError, match="not a regular file"):
        repo.read("application-x")
    assert repo.read("application-x/values-missing.yaml") is None
    with pytest.raises(ValuesError, match="symbolic link"):
        repo.commit_and_push(lambda read: Plan(files={"escape.yaml/x": "x\n"}, message="m"))


def test_a_missing_branch_is_named(bare: BareRepo, tmp_path: Path) -> None:
    repo = deploy_repo(bare.url, tmp_path, branch="release")
    with pytest.raises(GitError, match="branch release does not exist") as info:
        repo.sync()
    assert not info.value.temporary


def test_an_unreachable_remote_is_temporary_and_named(tmp_path: Path) -> None:
    url = f"git://127.0.0.1:{free_port()}/deploy.git"  # nothing listens there
    repo = deploy_repo(url, tmp_path, network_timeout=20.0)

    with pytest.raises(GitUnavailableError) as info:
        repo.sync()

    assert isinstance(info.value, GitError) and info.value.temporary
    assert url in str(info.value) and "retried next cycle" in str(info.value)


def test_credentials_in_the_url_are_refused_without_being_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        deploy_repo("https://bot:s3cret-token@127.0.0.1:1/deploy.git", tmp_path)
    assert "s3cret-token" not in str(info.value)
    assert "https://127.0.0.1:1/deploy.git" in str(info.value)


def test_an_unreadable_token_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    repo = deploy_repo(f"git://127.0.0.1:{free_port()}/x.git", tmp_path,
                       auth=GitAuth.token(token_file=missing, secrets=SecretRegistry()))
    with pytest.raises(ConfigError, match=str(missing)) as info:
        repo.sync()
    assert "git.token_file" in str(info.value)


# ---- HTTPS token authentication ----------------------------------------------------------

TOKEN = "tok-3f9c1d2e7b-never-show-me"


@pytest.fixture
def http_remote(bare: BareRepo) -> Iterator[GitHttpServer]:
    with GitHttpServer(bare.path.parent, username="deployer", token=TOKEN) as server:
        yield server


def test_token_auth_pushes_without_the_token_in_argv_logs_or_urls(
        bare: BareRepo, http_remote: GitHttpServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    trace = tmp_path / "git-trace.log"
    # GIT_TRACE records the argv of every git process and of the helpers it runs
    monkeypatch.setenv("GIT_TRACE", str(trace))
    caplog.set_level(logging.DEBUG)
    repo = deploy_repo(http_remote.url("deploy.git"), tmp_path,
                       auth=GitAuth.token(token_file=token_file, username="deployer",
                                          secrets=SecretRegistry()))

    result = repo.commit_and_push(set_digest()[0])

    assert result.sha is not None and bare.head() == result.sha
    assert any(r.startswith("POST /deploy.git/git-receive-pack 200") for r in http_remote.requests)
    traced = trace.read_text()
    assert "password=$IMAGE_UPDATER_GIT_TOKEN" in traced  # the helper ran, given a name only
    assert TOKEN not in traced
    assert TOKEN not in caplog.text
    assert TOKEN not in (repo.path / ".git" / "config").read_text()


def test_a_wrong_token_is_an_auth_error_that_never_shows_it(
        bare: BareRepo, http_remote: GitHttpServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "wrong-token-0123456789")
    repo = deploy_repo(http_remote.url("deploy.git"), tmp_path,
                       auth=GitAuth.token(token_env="DEPLOY_TOKEN", username="deployer",
                                          secrets=SecretRegistry()))

    with pytest.raises(GitAuthError) as info:
        repo.sync()

    message = str(info.value)
    assert "wrong-token-0123456789" not in message and TOKEN not in message
    assert "DEPLOY_TOKEN" in message and http_remote.url("deploy.git") in message
    assert not info.value.temporary
    assert any(r.endswith(" 401") for r in http_remote.requests)


def test_a_remote_that_never_answers_is_killed_after_the_timeout(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never speaks
    try:
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/deploy.git"
        repo = deploy_repo(url, tmp_path, network_timeout=1.0)
        with pytest.raises(GitUnavailableError, match="did not complete") as info:
            repo.sync()
        assert info.value.temporary and url in str(info.value)
    finally:
        silent.close()


# ---- credential options (pure) -----------------------------------------------------------

def test_ssh_options_are_quoted_strict_and_never_prompt(tmp_path: Path) -> None:
    key = tmp_path / "my keys" / "id_ed25519"
    auth = GitAuth.ssh(key_file=key, known_hosts_file=tmp_path / "known hosts")
    command = auth.environment()["GIT_SSH_COMMAND"]
    assert shlex.split(command) == [
        "ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={tmp_path / 'known hosts'}", "-o", "BatchMode=yes"]
    assert auth.config() == []
    assert str(key) in auth.describe()


@pytest.mark.parametrize("kwargs", [
    {}, {"token_file": "/t", "token_env": "T"}, {"token_env": "NOT A NAME"},
    {"token_env": "T", "username": "user;rm -rf /"},
])
def test_bad_token_settings_are_config_errors(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        GitAuth.token(secrets=SecretRegistry(), **kwargs)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://bot:tok@git.example.com/org/d.git", "https://git.example.com/org/d.git"),
    ("https://tok@git.example.com:8443/d.git", "https://git.example.com:8443/d.git"),
    ("git@github.com:org/d.git", "git@github.com:org/d.git"),
    ("git://127.0.0.1:9418/d.git", "git://127.0.0.1:9418/d.git"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_pending_branch_survives_unrelated_base_commits_but_follows_its_file(
        bare: BareRepo, tmp_path: Path) -> None:
    """Rewriting a pending pull request's branch dismisses its approvals: an unrelated commit
    to the base (say, the daemon's own dev commit) must leave it alone; a change to the file
    it edits must not be reverted by it, so then the branch moves onto the new base."""
    repo = deploy_repo(bare.url, tmp_path)
    branch = "image-updater/application-x-prod"

    def plan(read: Reader) -> Plan:
        text = read(PROD)
        assert text is not None
        return Plan(files={PROD: with_digest(text, NEW_DIGEST)},
                    message=commit_message([change("prod")]))

    first = repo.push_branch(branch, plan)
    push_other_commit(bare.url, tmp_path, {DEV: with_digest(VALUES_FILES[DEV], NEW_DIGEST)})
    assert repo.push_branch(branch, plan) == first == bare.head(branch)

    scaled = VALUES_FILES[PROD].replace("replicaCount: 1", "replicaCount: 4")
    theirs = push_other_commit(bare.url, tmp_path, {PROD: scaled}, "Scale prod")
    moved = repo.push_branch(branch, plan)
    assert moved != first and moved == bare.head(branch)
    assert git("rev-parse", f"{moved}^", cwd=bare.path) == theirs
    assert "replicaCount: 4" in bare.show(moved, PROD).decode()
