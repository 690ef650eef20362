"""The whole flow on loopback: a real registry, a real deploy repository, the real CLI.

Run through ``./scripts/demo.sh`` (which installs everything first). Every step runs the
``image-updater`` command exactly as an operator would; nothing is faked except the smoke
tests (the demo says when a smoke test "passes"), cosign (the demo's CI signs with
scripts/cosign_signing.py, which writes cosign's own formats) and the person who approves
prod (the demo merges the pull request on a local stand-in of the forge API). After dev, the
daemon (``image-updater run``) runs in the background and the PostSync jobs promote through
its API with only a token file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.cosign_signing import KeyPair, make_key_pair, sign_image  # noqa: E402
from tests.fixtures.daemon import DaemonProcess, wait_until  # noqa: E402
from tests.fixtures.forge_server import ForgeServer  # noqa: E402
from tests.fixtures.registry import RegistryServer, push_image  # noqa: E402

APP = "application-x"
FORGE_TOKEN = "demo-forge-token"  # the local forge stand-in's token; not a real secret
API_TOKEN = "api-tokens/postsync"  # the PostSync jobs' token file, relative to the work dir


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


def postsync_job(app: str, source: str, target: str, digest: str, daemon: DaemonProcess, *,
                 work: Path, evidence: dict[str, str]) -> int:
    """A PostSync job's promotion through the daemon: its environment holds no git key and no
    registry or forge credentials, only the path of its API token file."""
    args = ["promote", app, "--from", source, "--to", target, "--digest", digest,
            "--server", daemon.url, "--token-file", API_TOKEN]
    for key, value in evidence.items():
        args += ["--evidence", f"{key}={value}"]
    print("$ image-updater " + " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, "-m", "image_updater.cli", *args], cwd=work,
                          text=True, capture_output=True,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                               "HOME": str(work / "job-home")})
    print((proc.stdout + proc.stderr).rstrip())
    return proc.returncode


def ci_push(registry: RegistryServer, key: KeyPair, build: str, *, note: str = "") -> str:
    """CI pushes ``:dev`` and signs exactly the digest it pushed, as ``cosign sign`` does."""
    digest = push_image(registry.url, APP, "dev", seed=build)
    print(f"{APP}:dev -> {digest}{note}")
    print(f"$ cosign sign --key cosign.key {registry.host}/{APP}@{digest[:19]}…")
    sign_image(registry.url, APP, digest, key)
    return digest


def make_signing_key(work: Path) -> KeyPair:
    """CI's key pair in cosign's formats; the policies get the public half."""
    key = make_key_pair(work / "ci", name="cosign",
                        password=secrets.token_hex(16).encode())
    keys = work / "policies" / "keys"
    keys.mkdir(parents=True)
    shutil.copy(key.public_path, keys / "ci.pub")
    print("$ cosign generate-key-pair && cp cosign.pub policies/keys/ci.pub")
    return key


def write_config(work: Path, registry: RegistryServer, bare: Path, forge: ForgeServer) -> None:
    (work / "settings.yaml").write_text(json.dumps({
        "interval": 120,
        "listen": "127.0.0.1:0",  # the daemon's port: the promotion API and the status page
        "cache_dir": str(work / "cache"),
        "registries": [{"host": registry.host, "insecure": True}],
        "git": {"author_name": "image-updater", "author_email": "image-updater@example.com"},
        # prod's approval goes through a pull request; here a local stand-in of GitHub's API
        "forges": [{"url_prefix": f"file://{bare}", "kind": "github",
                    "api_url": forge.api_url, "repository": "org/deploys",
                    "token_env": "DEMO_FORGE_TOKEN"}],
        # the PostSync jobs' static token may promote application-x to staging and prod
        "api": {"tokens": [{"name": "postsync", "file": str(work / API_TOKEN),
                            "apps": [APP], "envs": ["staging", "prod"]}]},
    }, indent=2))
    (work / API_TOKEN).parent.mkdir()
    (work / API_TOKEN).write_text(secrets.token_urlsafe(24))
    policies = work / "policies"
    policies.mkdir()
    text = (ROOT / "policies" / "application-x.yaml").read_text()
    text = text.replace("123456789012.dkr.ecr.eu-west-1.amazonaws.com", registry.host)
    text = text.replace("git@github.com:example-org/deploys.git", f"file://{bare}")
    # the local forge stand-in knows the users alice, bob and carol
    text = text.replace("reviewers: [platform-oncall]", "reviewers: [alice]")
    # staging and prod take only what CI signed; dev takes any build
    text = text.replace("\nenvironments:\n", "\n  verify: {cosign: {keys: [keys/ci.pub]}}"
                        "\nenvironments:\n")
    text = text.replace("    tag: dev\n", "    tag: dev\n    verify: false\n")
    (policies / "application-x.yaml").write_text(text)


def show_last_commit(bare: Path, *paths: str) -> None:
    """The newest commit on master (touching ``paths``, when given): message and diff."""
    print(sh("git", "--git-dir", str(bare), "log", "-1", "--format=commit %h%n%B",
             "master", *paths).rstrip())
    print(sh("git", "--git-dir", str(bare), "log", "-1", "-p", "--format=", "master",
             *paths).rstrip())


def commit_count(bare: Path) -> int:
    return int(sh("git", "--git-dir", str(bare), "rev-list", "--count", "master"))


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
    try:
        with RegistryServer() as registry, ForgeServer("github", token=FORGE_TOKEN) as forge:
            run_flow(work, registry, forge)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("demo finished")
    return 0


def run_flow(work: Path, registry: RegistryServer, forge: ForgeServer) -> None:
    say(f"a local registry (docker-registry serve) listens on {registry.url}")
    bare, _ = make_deploy_repo(work)
    say(f"deploy repository {bare} with {APP}'s values-dev/staging/prod.yaml")
    write_config(work, registry, bare, forge)
    say(f"a local stand-in of the GitHub API for prod's pull requests: {forge.api_url}")
    say("CI's cosign key: staging and prod take only digests it signed (policy `verify:`)")
    key = make_signing_key(work)
    policies = str(work / "policies")
    updater("validate", policies, work=work)
    dev_flow(work, registry, key, bare, policies)
    refuse_unsigned(work, registry, bare, policies)

    say("the daemon runs from here on; PostSync jobs promote through its API")
    print(f"(settings.yaml: api.tokens: the token in {API_TOKEN} may promote {APP} to "
          "staging and prod)")
    print("$ image-updater run --config settings.yaml --policies policies --log-format json "
          ">daemon.stdout 2>daemon.stderr &")
    with DaemonProcess(work, work / "settings.yaml", [work / "policies"],
                       env={"DEMO_FORGE_TOKEN": FORGE_TOKEN}) as daemon:
        print(f"listening on {daemon.url} (promotion API, status page, /metrics)")
        try:
            promote_flow(work, registry, key, bare, forge, daemon)
            show_status_api(daemon)
        except BaseException:  # the work dir goes away: show why the daemon did not deliver
            print(f"the daemon's log, last lines:\n{daemon.output()[-3000:]}", file=sys.stderr)
            raise
        say("the daemon stops on SIGTERM")
        print(f"exit code {daemon.terminate()}")

    say("the next cycle finds prod at the digest and does nothing for it")
    updater("once", "--policies", policies, work=work)
    say("what runs where, since when, and how it got there")
    updater("status", "--policies", policies, work=work)
    say("what ran: every change of the app's environments, from git alone")
    updater("history", APP, "--policies", policies, work=work)


def dev_flow(work: Path, registry: RegistryServer, key: KeyPair, bare: Path,
             policies: str) -> None:
    say(f"CI pushes {APP}:dev (build 1) and signs it")
    ci_push(registry, key, "build-1")
    updater("once", "--policies", policies, work=work)
    print("(:staging and :prod do not exist until something is promoted to them: those "
          "environments are waiting, which is no failure; dev is committed)")
    say("the commit image-updater pushed to master (Argo CD deploys dev from it)")
    show_last_commit(bare)

    say(f"CI pushes a new {APP}:dev (build 2) and signs it")
    ci_push(registry, key, "build-2")
    updater("once", "--policies", policies, work=work)
    say("the second commit")
    show_last_commit(bare)

    say("a second pass changes nothing for dev (git is the only state)")
    updater("once", "--policies", policies, work=work)
    print(f"master has {commit_count(bare)} commits")


def refuse_unsigned(work: Path, registry: RegistryServer, bare: Path, policies: str) -> None:
    say(f"someone pushes an UNSIGNED build straight to {APP}:staging (a laptop, a leaked "
        "registry password)")
    before = commit_count(bare)
    digest = push_image(registry.url, APP, "staging", seed="laptop-build")
    print(f"{APP}:staging -> {digest}  (no cosign signature)")
    code = updater("once", "--policies", policies, work=work)
    print(f"exit code {code}; master still has {commit_count(bare)} commits (was {before}), "
          "values-staging.yaml unchanged: nothing was written")


def promote_flow(work: Path, registry: RegistryServer, key: KeyPair, bare: Path,
                 forge: ForgeServer, daemon: DaemonProcess) -> None:
    tested = deployed_digest(bare, "dev")
    revision = sh("git", "--git-dir", str(bare), "rev-parse", "--short", "master").strip()
    say(f"Argo CD deployed dev; the PostSync smoke test passes for {tested[:19]}…")
    ci_push(registry, key, "build-3", note="  (meanwhile CI pushes an untested build)")
    say("dev's PostSync job promotes the TESTED digest: a token file, no git or registry keys")
    postsync_job(APP, "dev", "staging", tested, daemon, work=work,
                 evidence={"job": f"{APP}-promote-to-staging", "argocd/sync-revision": revision})
    wait_until(lambda: deployed_digest(bare, "staging") == tested, timeout=60,
               what="the daemon's commit of values-staging.yaml")
    say("the daemon committed staging at once: the TESTED digest, with the job's evidence")
    show_last_commit(bare, "--", f"{APP}/values-staging.yaml")

    staged = deployed_digest(bare, "staging")
    say(f"smoke tests pass in staging for {staged[:19]}…; staging's PostSync job promotes to prod")
    postsync_job(APP, "staging", "prod", staged, daemon, work=work,
                 evidence={"job": f"{APP}-promote-to-prod"})
    wait_until(lambda: any(p.state == "open" for p in forge.prs.values()), timeout=60,
               what="the daemon's pull request for prod")
    say("prod needs approval: image-updater opened a pull request instead of committing")
    (pr,) = [p for p in forge.prs.values() if p.state == "open"]
    print(f"#{pr.number} {pr.title}\nbranch: {pr.head} -> {pr.base}\n\n{pr.body}")
    print("the pull request's commit carries the prod job's evidence:")
    print(sh("git", "--git-dir", str(bare), "log", "-1",
             "--format=%(trailers:key=Image-Updater-Evidence)", pr.head).rstrip())

    say("a person approves: the pull request is merged")
    merge_pull_request(work, bare, forge)
    print(f"values-prod.yaml now holds {deployed_digest(bare, 'prod')}")


def show_status_api(daemon: DaemonProcess) -> None:
    say(f"the status page: open {daemon.url}/ in a browser; scripts read the same as JSON")
    print(f"$ curl -s {daemon.url}/api/v1/status")

    def ready() -> httpx.Response | None:  # 503 until the daemon's first snapshot
        response = httpx.get(f"{daemon.url}/api/v1/status", timeout=10)
        return response if response.status_code == 200 else None

    doc = wait_until(ready, timeout=60, what="the daemon's first status snapshot").json()
    print(json.dumps(doc[0], indent=2))
    print(f"… and {len(doc) - 1} more; one line each:")
    print(f"$ curl -s {daemon.url}/api/v1/status | jq -c '.[] | {{env, state, how: .git.how}}'")
    for row in doc:
        print(json.dumps({"env": row["env"], "state": row["state"], "how": row["git"]["how"]},
                         separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())
