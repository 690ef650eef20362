"""Signed commits against real git, ssh-keygen and GnuPG: verified by ``git verify-commit``.

Keys are made fresh per module; the verifying side (allowed_signers for SSH, a keyring
holding only the public key for OpenPGP) is separate from image-updater's, as on a forge.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from image_updater.changes import Change, KeyChange
from image_updater.cli import main
from image_updater.commands import run_once
from image_updater.config.policies import load_text
from image_updater.config.settings import (
    ForgeSettings,
    GitSettings,
    RegistrySettings,
    Settings,
    SigningSettings,
)
from image_updater.errors import ConfigError
from image_updater.exit_codes import ExitCode
from image_updater.gitops.message import commit_message
from image_updater.gitops.repo import DeployRepo, Plan, Reader
from image_updater.gitops.signing import CommitSigner
from image_updater.secrets import SecretRegistry
from image_updater.wiring.runtime import Runtime
from tests.fixtures.forge_server import ForgeServer
from tests.fixtures.gitrepo import BRANCH, OLD_DIGEST, BareRepo, git, make_bare_repo
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("gpg") and shutil.which("ssh-keygen")),
                                 reason="needs gnupg and ssh-keygen (scripts/setup.sh)")]

DEV = "application-x/values-dev.yaml"
PROD = "application-x/values-prod.yaml"
NEW_DIGEST = "sha256:" + "b" * 64
EMAIL = "bot@example.com"
PASSPHRASE = "correct-horse-battery-staple-42"


@dataclass(frozen=True)
class Keys:
    ssh_key: Path            # image-updater's private SSH key (mode 0644, as a k8s mount may be)
    allowed_signers: Path    # the verifier's allowed_signers file
    gpg_key: Path            # exported OpenPGP secret key, protected by PASSPHRASE
    gpg_passphrase: Path
    gpg_public_home: Path    # the verifier's GnuPG home: the public key only
    ssh_encrypted: Path      # an SSH key that needs a passphrase


def _run(*argv: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(argv, env={**os.environ, **(env or {})}, input=stdin, text=True,
                          capture_output=True, check=True)
    return done.stdout


def _kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)},
                   capture_output=True, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    root = tmp_path_factory.mktemp("keys")
    ssh_key = root / "id_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", EMAIL, "-f", str(ssh_key))
    ssh_key.chmod(0o644)
    public = (root / "id_ed25519.pub").read_text().strip()
    allowed = root / "allowed_signers"
    allowed.write_text(f"{EMAIL} {public}\n")
    encrypted = root / "id_encrypted"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "a-passphrase", "-f", str(encrypted))

    maker, verifier = root / "maker", root / "verifier"
    maker.mkdir(mode=0o700)
    verifier.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(maker)}
    _run("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE,
         "--quick-gen-key", f"Image Updater <{EMAIL}>", "ed25519", "sign", "never", env=env)
    secret = _run("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE,
                  "--armor", "--export-secret-keys", env=env)
    gpg_key = root / "signing.asc"
    gpg_key.write_text(secret)
    _run("gpg", "--batch", "--import", env={"GNUPGHOME": str(verifier)},
         stdin=_run("gpg", "--armor", "--export", env=env))
    _kill_agent(maker)
    passphrase = root / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    yield Keys(ssh_key=ssh_key, allowed_signers=allowed, gpg_key=gpg_key,
               gpg_passphrase=passphrase, gpg_public_home=verifier, ssh_encrypted=encrypted)
    _kill_agent(verifier)


def ssh_signer(keys: Keys, tmp_path: Path) -> CommitSigner:
    return CommitSigner(format="ssh", key_file=keys.ssh_key, home=tmp_path / "signing",
                        secrets=SecretRegistry())


def gpg_signer(keys: Keys, tmp_path: Path, secrets: SecretRegistry | None = None
               ) -> CommitSigner:
    return CommitSigner(format="openpgp", key_file=keys.gpg_key,
                        passphrase_file=keys.gpg_passphrase, home=tmp_path / "signing",
                        secrets=secrets or SecretRegistry())


def verify(bare: BareRepo, keys: Keys, rev: str) -> subprocess.CompletedProcess[str]:
    """``git verify-commit`` as a forge or a reviewer would run it: public keys only."""
    return subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={keys.allowed_signers}", "verify-commit",
         rev], cwd=bare.path, env={**os.environ, "GNUPGHOME": str(keys.gpg_public_home)},
        capture_output=True, text=True, check=False)


def show_signature(bare: BareRepo, keys: Keys, rev: str) -> str:
    return subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={keys.allowed_signers}", "log", "-1",
         "--show-signature", "--format=%G?", rev], cwd=bare.path,
        env={**os.environ, "GNUPGHOME": str(keys.gpg_public_home)},
        capture_output=True, text=True, check=True).stdout


def plan_dev(read: Reader) -> Plan:
    text = read(DEV)
    assert text is not None and OLD_DIGEST in text
    change = Change(app="application-x", env="dev", file=DEV,
                    image="registry.example.com/team/application-x", tag="dev",
                    digest=NEW_DIGEST,
                    keys=(KeyChange(key="image.digest", old=OLD_DIGEST, new=NEW_DIGEST),),
                    why="tag dev moved")
    return Plan(files={DEV: text.replace(OLD_DIGEST, NEW_DIGEST)},
                message=commit_message([change]))


def deploy_repo(url: str, tmp_path: Path, signer: CommitSigner) -> DeployRepo:
    return DeployRepo(url=url, branch=BRANCH, cache_dir=tmp_path / "cache",
                      author_name="Image Updater", author_email=EMAIL, signer=signer)


# ---- direct commits ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ssh", "openpgp"])
def test_pushed_commit_carries_a_signature_git_verifies(kind: str, keys: Keys,
                                                        tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path / "remotes")
    unsigned = bare.head()
    signer = ssh_signer(keys, tmp_path) if kind == "ssh" else gpg_signer(keys, tmp_path)

    sha = deploy_repo(bare.url, tmp_path, signer).commit_and_push(plan_dev).sha

    assert sha is not None and bare.head() == sha
    checked = verify(bare, keys, sha)
    assert checked.returncode == 0, checked.stderr
    good = f'Good "git" signature for {EMAIL}' if kind == "ssh" else \
        f'Good signature from "Image Updater <{EMAIL}>"'
    assert good in checked.stderr
    shown = show_signature(bare, keys, sha)
    # %G?: G good, U good from a key nobody marked trusted (the verifier's fresh keyring)
    assert good in shown and shown.strip()[-1] in "GU"
    assert verify(bare, keys, unsigned or "").returncode != 0  # the check can fail
    # the session's private copies (key, passphrase) are gone after the commit
    assert [p.name for p in (tmp_path / "signing").iterdir()
            if p.name.startswith("session-")] == []


def test_a_rotated_openpgp_key_file_is_read_again(keys: Keys, tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path / "remotes")
    signer = gpg_signer(keys, tmp_path)
    signer.check()
    key_copy = tmp_path / "mounted.asc"
    key_copy.write_text("not a key any more\n")
    moved = CommitSigner(format="openpgp", key_file=key_copy, home=tmp_path / "signing",
                         passphrase_file=keys.gpg_passphrase, secrets=SecretRegistry())

    with pytest.raises(ConfigError, match=r"mounted\.asc"):
        deploy_repo(bare.url, tmp_path, moved).commit_and_push(plan_dev)

    assert bare.head() == git("rev-parse", BRANCH, cwd=bare.path)  # nothing unsigned pushed
    assert "Image-Updater" not in bare.log("-1", "--format=%B")


def test_a_passphrase_rotated_to_a_wrong_one_fails_the_commit_not_the_push(
        keys: Keys, tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path / "remotes")
    before = bare.head()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    signer = CommitSigner(format="openpgp", key_file=keys.gpg_key, passphrase_file=passphrase,
                          home=tmp_path / "signing", secrets=SecretRegistry())
    signer.check()
    passphrase.write_text("rotated-but-wrong-passphrase\n")  # read again at the commit

    with pytest.raises(ConfigError, match=r"Signing a commit for .* failed") as failed:
        deploy_repo(bare.url, tmp_path, signer).commit_and_push(plan_dev)

    assert bare.head() == before  # nothing unsigned reached the remote
    assert "rotated-but-wrong" not in str(failed.value)


def test_threads_sharing_one_signer_all_sign(keys: Keys, tmp_path: Path) -> None:
    signer = gpg_signer(keys, tmp_path)
    bares = [make_bare_repo(tmp_path / f"remotes-{i}") for i in range(3)]
    repos = [DeployRepo(url=b.url, branch=BRANCH, cache_dir=tmp_path / f"cache-{i}",
                        author_email=EMAIL, signer=signer) for i, b in enumerate(bares)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        shas = list(pool.map(lambda repo: repo.commit_and_push(plan_dev).sha, repos))

    for bare, sha in zip(bares, shas, strict=True):
        assert sha is not None and verify(bare, keys, sha).returncode == 0


# ---- a branch that refuses unsigned commits ------------------------------------------------

_PRE_RECEIVE = """#!/bin/sh
# Refuse any pushed commit that git cannot verify (a forge's "require signed commits").
zero=0000000000000000000000000000000000000000
while read old new ref; do
  [ "$new" = "$zero" ] && continue
  if [ "$old" = "$zero" ]; then range="$new --not --all"; else range="$old..$new"; fi
  for commit in $(git rev-list $range); do
    git verify-commit "$commit" >/dev/null 2>&1 || {
      echo "commit $commit is not signed by an allowed key" >&2; exit 1; }
  done
done
"""


@pytest.mark.parametrize("kind", ["ssh", "openpgp"])
def test_a_remote_that_refuses_unsigned_commits_accepts_ours(kind: str, keys: Keys,
                                                             tmp_path: Path) -> None:
    bare = make_bare_repo(tmp_path / "remotes")
    hook = bare.path / "hooks" / "pre-receive"
    hook.write_text(_PRE_RECEIVE)
    hook.chmod(0o755)
    git("config", "gpg.ssh.allowedSignersFile", str(keys.allowed_signers), cwd=bare.path)
    os.environ["GNUPGHOME"] = str(keys.gpg_public_home)  # the hook's gpg sees only public keys
    try:
        work = tmp_path / "unsigned"
        git("clone", "-q", bare.url, str(work))
        (work / "README").write_text("unsigned\n")
        git("add", "README", cwd=work)
        git("commit", "-q", "-m", "An unsigned change", cwd=work)
        refused = subprocess.run(["git", "push", "origin", f"HEAD:{BRANCH}"], cwd=work,
                                 capture_output=True, text=True, check=False)
        assert refused.returncode != 0 and "is not signed" in refused.stderr  # the hook works

        signer = ssh_signer(keys, tmp_path) if kind == "ssh" else gpg_signer(keys, tmp_path)
        sha = deploy_repo(bare.url, tmp_path, signer).commit_and_push(plan_dev).sha
    finally:
        del os.environ["GNUPGHOME"]

    assert sha is not None and bare.head() == sha


# ---- pull request branches, through the runtime ------------------------------------------

def test_pull_request_branch_commit_is_signed(registry: RegistryServer, keys: Keys,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    token = "forge-token-for-signing-tests-7a1e"
    monkeypatch.setenv("TEST_FORGE_TOKEN", token)
    deploy = make_bare_repo(tmp_path)
    repo_name = "signing-github/application-x"
    apps, problems = load_text(textwrap.dedent(f"""\
        app: application-x
        image: {registry.host}/{repo_name}
        git: {{url: "file://{deploy.path}", branch: master}}
        environments:
          prod:
            file: {PROD}
            approval: pull-request
        """), "gate.yaml")
    assert problems == []
    push_image(registry.url, repo_name, "prod", seed="signed-1")
    with ForgeServer("github", token=token) as forge:
        settings = Settings(
            cache_dir=str(tmp_path / "cache"),
            registries=(RegistrySettings(host=registry.host, insecure=True),),
            git=GitSettings(author_email=EMAIL, signing=SigningSettings(
                format="openpgp", key_file=str(keys.gpg_key),
                passphrase_file=str(keys.gpg_passphrase))),
            forges=(ForgeSettings(url_prefix=f"file://{deploy.path}", kind="github",
                                  api_url=forge.api_url, repository="org/deploys",
                                  token_env="TEST_FORGE_TOKEN"),))
        result = asyncio.run(run_once(settings, apps))
        assert forge.violations == []

    assert result.failures == [] and len(result.pull_requests) == 1
    branch = "image-updater/application-x-prod"
    sha = git("rev-parse", f"refs/heads/{branch}", cwd=deploy.path)
    checked = verify(deploy, keys, sha)
    assert checked.returncode == 0, checked.stderr
    assert verify(deploy, keys, BRANCH).returncode != 0  # master is untouched and unsigned


# ---- a key that cannot sign stops the start ----------------------------------------------

def _settings(tmp_path: Path, **signing: str) -> Settings:
    return Settings(cache_dir=str(tmp_path / "cache"),
                    git=GitSettings(signing=SigningSettings(**signing)))  # type: ignore[arg-type]


def test_bad_keys_are_settings_errors_when_the_runtime_starts(keys: Keys, tmp_path: Path) -> None:
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not-the-passphrase\n")
    cases: list[tuple[dict[str, str], str]] = [
        ({"format": "ssh", "key_file": str(tmp_path / "absent")}, r"absent .* does not exist"),
        ({"format": "ssh", "key_file": str(tmp_path)}, r"cannot be read"),
        ({"format": "ssh", "key_file": str(not_a_key)}, r"not-a-key.*without a passphrase"),
        ({"format": "ssh", "key_file": str(keys.ssh_encrypted)}, r"id_encrypted"),
        ({"format": "ssh", "key_file": str(keys.ssh_key) + ".pub"},
         r"holds a public key; signing needs the private key \(e\.g\. id_ed25519, not"),
        ({"format": "openpgp", "key_file": str(not_a_key)}, r"not-a-key"),
        ({"format": "openpgp", "key_file": str(keys.gpg_key)}, r"passphrase_file"),
        ({"format": "openpgp", "key_file": str(keys.gpg_key), "passphrase_file": str(wrong)},
         r"passphrase_file holds the passphrase"),
        ({"format": "openpgp", "key_file": str(keys.gpg_key),
          "passphrase_file": str(tmp_path / "nope")}, r"nope .* does not exist"),
    ]
    for signing, message in cases:
        with pytest.raises(ConfigError, match=message):
            Runtime(_settings(tmp_path, **signing), secrets=SecretRegistry())


def test_a_good_key_starts_and_the_passphrase_never_reaches_logs_or_errors(
        keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    secrets = SecretRegistry()
    runtime = Runtime(_settings(tmp_path, format="openpgp", key_file=str(keys.gpg_key),
                                passphrase_file=str(keys.gpg_passphrase)), secrets=secrets)

    assert runtime.signer is not None
    assert secrets.mask(PASSPHRASE) == "***"  # registered, so any log line is masked
    assert PASSPHRASE not in caplog.text
    assert "Commits are signed with the openpgp key" in caplog.text


def test_validate_config_reports_a_key_that_cannot_sign(
        keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "app.yaml"
    policy.write_text(textwrap.dedent("""\
        app: application-x
        image: registry.example.com/team/application-x
        git: {url: "https://git.example.com/deploy.git", branch: master}
        environments:
          dev: {file: application-x/values-dev.yaml}
        """))
    good = tmp_path / "good.yaml"
    good.write_text(f"git:\n  signing:\n    format: ssh\n    key_file: {keys.ssh_key}\n"
                    f"cache_dir: {tmp_path / 'cache'}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"git:\n  signing:\n    format: ssh\n    key_file: {tmp_path / 'gone'}\n")

    assert main(["validate", "--config", str(good), str(policy)]) == ExitCode.OK
    assert main(["validate", "--config", str(bad), str(policy)]) == ExitCode.CONFIG
    missing = r"gone \(setting git\.signing\.key_file\) does not exist"
    assert re.search(missing, capsys.readouterr().out)
    # the daemon stops at start, before serving anything
    assert main(["run", "--config", str(bad), "--policies", str(policy)]) == ExitCode.CONFIG
    assert re.search(missing, capsys.readouterr().err)
