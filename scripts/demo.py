"""The whole flow on loopback: a real registry, a real deploy repository, the real CLI.

Run through ``./scripts/demo.sh`` (which installs everything first). Every step runs the
``image-updater`` command exactly as an operator would; nothing is faked except the smoke
tests (the demo says when a smoke test "passes") and the person who approves prod (the
demo merges the pull request on a local stand-in of the forge API).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.forge_server import ForgeServer  # noqa: E402
from tests.fixtures.registry import RegistryServer, push_image  # noqa: E402

APP = "application-x"
FORGE_TOKEN = "demo-forge-token"  # the local forge stand-in's token; not a real secret


def say(text: str) -> None:
    if sys.stdout.isatty():
        print(f"\n\033[1m==> {text}\033[0m", flush=True)
    else:  # a log file or a pipe: no escape codes
        print(f"\n==> {text}", flush=True)


def sh(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    proc = subprocess.run(args, cwd=cwd, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(args)}\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def updater(*args: str, work: Path) -> int:
    """Run the real CLI and show what it prints."""
    cmd = [sys.executable, "-m", "image_updater.cli", *args,
           "--config", str(work / "settings.yaml")]
    print("$ image-updater " + " ".join(args) + " --config settings.yaml", flush=True)
    proc = subprocess.run(cmd, cwd=work, text=True, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "DEMO_FORGE_TOKEN": FORGE_TOKEN})
    print((proc.stdout + proc.stderr).rstrip())
    return proc.returncode


def make_deploy_repo(work: Path) -> tuple[Path, Path]:
    bare = work / "deploys.git"
    seed = work / "seed"
    sh("git", "init", "-q", "--bare", "-b", "master", str(bare))
    shutil.copytree(ROOT / "examples" / "deploys", seed)
    sh("git", "init", "-q", "-b", "master", cwd=seed)
    sh("git", "add", ".", cwd=seed)
    sh("git", "-c", "user.name=Platform Team", "-c", "user.email=platform@example.com",
       "commit", "-qm", "application-x chart and values", cwd=seed)
    sh("git", "push", "-q", str(bare), "master", cwd=seed)
    return bare, seed


def write_config(work: Path, registry: RegistryServer, bare: Path, forge: ForgeServer) -> None:
    (work / "settings.yaml").write_text(json.dumps({
        "interval": 120,
        "cache_dir": str(work / "cache"),
        "registries": [{"host": registry.host, "insecure": True}],
        "git": {"author_name": "image-updater", "author_email": "image-updater@example.com"},
        # prod's approval goes through a pull request; here a local stand-in of GitHub's API
        "forges": [{"url_prefix": f"file://{bare}", "kind": "github",
                    "api_url": forge.api_url, "repository": "org/deploys",
                    "token_env": "DEMO_FORGE_TOKEN"}],
    }, indent=2))
    policies = work / "policies"
    policies.mkdir()
    text = (ROOT / "policies" / "application-x.yaml").read_text()
    text = text.replace("123456789012.dkr.ecr.eu-west-1.amazonaws.com", registry.host)
    text = text.replace("git@github.com:example-org/deploys.git", f"file://{bare}")
    # the local forge stand-in knows the users alice, bob and carol
    text = text.replace("reviewers: [platform-oncall]", "reviewers: [alice]")
    (policies / "application-x.yaml").write_text(text)


def show_last_commit(bare: Path) -> None:
    print(sh("git", "--git-dir", str(bare), "log", "-1", "--format=commit %h%n%B",
             "master").rstrip())
    print(sh("git", "--git-dir", str(bare), "show", "--format=", "master").rstrip())


def deployed_digest(bare: Path, env: str) -> str:
    text = sh("git", "--git-dir", str(bare), "show", f"master:{APP}/values-{env}.yaml")
    for line in text.splitlines():
        if line.strip().startswith("digest:"):
            return line.split(":", 1)[1].split("#")[0].strip().strip('"')
    return ""


def merge_pull_request(work: Path, bare: Path, forge: ForgeServer) -> None:
    (number, pr), = [(n, p) for n, p in forge.prs.items() if p.state == "open"]
    clone = work / "reviewer"
    sh("git", "clone", "-q", str(bare), str(clone))
    sh("git", "-c", "user.name=Release Manager", "-c", "user.email=rm@example.com", "merge",
       "-q", "--no-ff", "-m", f"Merge pull request #{number} from {pr.head}",
       f"origin/{pr.head}", cwd=clone)
    sh("git", "push", "-q", "origin", "HEAD:master", cwd=clone)
    forge.mark_merged(number)
    print(f"pull request #{number} approved and merged into master")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="image-updater-demo-"))
    say(f"working in {work}")
    with RegistryServer() as registry, ForgeServer("github", token=FORGE_TOKEN) as forge:
        say(f"a local registry (docker-registry serve) listens on {registry.url}")
        bare, _ = make_deploy_repo(work)
        say(f"deploy repository {bare} with {APP}'s values-dev/staging/prod.yaml")
        write_config(work, registry, bare, forge)
        say(f"a local stand-in of the GitHub API for prod's pull requests: {forge.api_url}")
        updater("validate", str(work / "policies"), work=work)

        say(f"CI pushes {APP}:dev (build 1)")
        d1 = push_image(registry.url, APP, "dev", seed="build-1")
        print(f"{APP}:dev -> {d1}")
        updater("once", "--policies", str(work / "policies"), work=work)
        print("(:staging and :prod do not exist until something is promoted to them: those "
              "environments are waiting, which is no failure; dev is committed)")
        say("the commit image-updater pushed to master (Argo CD deploys dev from it)")
        show_last_commit(bare)

        say(f"CI pushes a new {APP}:dev (build 2)")
        d2 = push_image(registry.url, APP, "dev", seed="build-2")
        print(f"{APP}:dev -> {d2}")
        updater("once", "--policies", str(work / "policies"), work=work)
        say("the second commit")
        show_last_commit(bare)

        say("a second pass changes nothing for dev (git is the only state)")
        updater("once", "--policies", str(work / "policies"), work=work)
        count = sh("git", "--git-dir", str(bare), "rev-list", "--count", "master").strip()
        print(f"master has {count} commits")

        policies = str(work / "policies")
        tested = deployed_digest(bare, "dev")
        say(f"Argo CD deployed dev; the PostSync smoke test passes for {tested[:19]}…")
        d3 = push_image(registry.url, APP, "dev", seed="build-3")
        print(f"meanwhile CI pushes {APP}:dev -> {d3[:19]}… (untested!)")
        updater("promote", APP, "--from", "dev", "--to", "staging", "--digest", tested,
                "--policies", policies, work=work)
        updater("once", "--policies", policies, work=work)
        say("staging got the TESTED digest, not the newer :dev (dev follows :dev as always)")
        show_last_commit(bare)

        staged = deployed_digest(bare, "staging")
        say(f"smoke tests pass in staging for {staged[:19]}…; promote to prod")
        updater("promote", APP, "--from", "staging", "--to", "prod", "--digest", staged,
                "--policies", policies, work=work)
        updater("once", "--policies", policies, work=work)
        say("prod needs approval: image-updater opened a pull request instead of committing")
        (pr,) = [p for p in forge.prs.values() if p.state == "open"]
        print(f"#{pr.number} {pr.title}\nbranch: {pr.head} -> {pr.base}\n\n{pr.body}")

        say("a person approves: the pull request is merged")
        merge_pull_request(work, bare, forge)
        print(f"values-prod.yaml now holds {deployed_digest(bare, 'prod')}")
        say("the next cycle finds prod at the digest and does nothing for it")
        updater("once", "--policies", policies, work=work)

        say("what runs where, since when, and how it got there")
        updater("status", "--policies", policies, work=work)
        say("what ran: every change of the app's environments, from git alone")
        updater("history", APP, "--policies", policies, work=work)
    shutil.rmtree(work, ignore_errors=True)
    say("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
