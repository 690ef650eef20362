"""Planted credentials never reach the daemon's output, its /metrics, or its cache on disk.

The real CLI runs (``image-updater run``, JSON logs at DEBUG, the most talkative level)
with a registry password, a wrong registry password, a git token file, a forge token and a
webhook secret, through a reconcile, an authentication failure, a failing forge call and
every kind of webhook. Then everything it printed is searched for each secret in plain and
base64 forms (Basic auth sends ``base64(user:password)``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.daemon import DaemonProcess, policy_text
from tests.fixtures.gitrepo import make_bare_repo
from tests.fixtures.http_stub import HttpStub, Reply
from tests.fixtures.registry import RegistryServer, push_image

pytestmark = pytest.mark.integration

USER = "deployer"


def planted(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def forms(secret: str) -> set[str]:
    """The secret as text, and the base64 forms it takes in headers and config files."""
    out = {secret}
    for raw in (secret.encode(), f"{USER}:{secret}".encode()):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(raw).decode()
            out |= {text, text.rstrip("=")}
    return out


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    password = planted("registry-password")
    path = tmp_path_factory.mktemp("htpasswd") / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, password], capture_output=True, text=True,
                          check=True).stdout
    path.write_text(line)
    yield path, password


def auth_registry(htpasswd: Path) -> RegistryServer:
    return RegistryServer(extra_config={"auth": {"htpasswd": {"realm": "test",
                                                              "path": str(htpasswd)}}})


def test_no_planted_secret_is_ever_printed(
        htpasswd_file: tuple[Path, str], tmp_path: Path) -> None:
    htpasswd, registry_password = htpasswd_file
    wrong_password, git_token = planted("wrong-password"), planted("git-token")
    forge_token, webhook_secret = planted("forge-token"), planted("hook-secret")
    (tmp_path / "git-token").write_text(git_token + "\n")
    env = {"IU_REG_PASSWORD": registry_password, "IU_WRONG_PASSWORD": wrong_password,
           "IU_FORGE_TOKEN": forge_token, "IU_WEBHOOK_SECRET": webhook_secret}
    deploy = make_bare_repo(tmp_path)
    # the forge refuses the token (as for a revoked one): its error path gets logged too
    forge = HttpStub()
    forge.add("GET", "/repos/org/deploy/pulls", Reply(status=401, body=b'{"message": "Bad '
                                                       b'credentials"}'))

    with auth_registry(htpasswd) as good, auth_registry(htpasswd) as other, forge:
        with httpx.Client(auth=(USER, registry_password), timeout=10) as client:
            for tag in ("dev", "prod"):
                push_image(good.url, "team/app", tag, seed=tag, client=client)
            push_image(other.url, "team/other", "dev", seed="o", client=client)
        config = tmp_path / "settings.yaml"
        config.write_text(json.dumps({
            "listen": "127.0.0.1:0", "interval": 3600, "jitter": 0, "log_level": "debug",
            "cache_dir": str(tmp_path / "cache"),
            "registries": [
                {"host": good.host, "insecure": True, "max_retries": 0,
                 "credentials": {"username": USER, "password_env": "IU_REG_PASSWORD"}},
                {"host": other.host, "insecure": True, "max_retries": 0,
                 "credentials": {"username": USER, "password_env": "IU_WRONG_PASSWORD"}}],
            "git": {"token_file": str(tmp_path / "git-token")},
            "forges": [{"url_prefix": "file://", "kind": "github", "repository": "org/deploy",
                        "api_url": forge.url, "token_env": "IU_FORGE_TOKEN"}],
            "webhooks": {"secret_env": "IU_WEBHOOK_SECRET"},
        }))
        policies = tmp_path / "policies"
        policies.mkdir()
        url = f"file://{deploy.path}"
        (policies / "app.yaml").write_text(policy_text(
            "app", f"{good.host}/team/app", url,
            "dev: {file: application-x/values-dev.yaml}\n"
            "prod: {file: application-x/values-prod.yaml, approval: pull-request}"))
        (policies / "other.yaml").write_text(policy_text(
            "other", f"{other.host}/team/other", url,
            "dev: {file: application-x/values-staging.yaml}"))

        with DaemonProcess(tmp_path, config, [policies], env=env) as proc:
            proc.wait_for_record(lambda r: r["msg"].startswith("cycle for all apps done"),
                                 timeout=30, what="the start-up cycle")
            statuses = send_webhooks(proc.url, good.host, webhook_secret)
            proc.wait_for_record(lambda r: r["msg"].startswith("cycle for app(s) app done"),
                                 timeout=30, what="the webhook's cycle")
            metrics = httpx.get(proc.url + "/metrics", timeout=5).text
            forge_url = forge.url
            code = proc.terminate()
            output = proc.output()
            records = proc.records()

    # the scenario really happened, so the search below means something
    assert code == 0
    assert statuses == [202, 401, 401, 202, 202, 400, 401]
    reasons = {(r.get("app"), r.get("env")): r["msg"] for r in records if r["level"] == "ERROR"}
    assert "refused" in reasons[("other", "dev")].lower()               # wrong password
    assert forge_url in reasons[("app", "prod")]                        # forge refused token
    assert any(forge_token in r.headers.get("authorization", "") for r in forge.requests)
    assert any(r["msg"].startswith("committed application-x/values-dev.yaml") for r in records)
    assert 'result="401"' in metrics and 'result="accepted"' in metrics

    cache_files = "".join(p.read_text(errors="replace") for p in (tmp_path / "cache").rglob("*")
                          if p.is_file() and p.stat().st_size < 1 << 20 and ".git/objects"
                          not in str(p))
    for secret in (registry_password, wrong_password, git_token, forge_token, webhook_secret):
        for form in forms(secret):
            assert form not in output, f"a secret ({secret[:10]}…) was printed"
            assert form not in metrics, f"a secret ({secret[:10]}…) is in /metrics"
            assert form not in cache_files, f"a secret ({secret[:10]}…) was written to the cache"


def test_once_never_prints_a_token_that_a_forge_echoes_back(
        registry: RegistryServer, tmp_path: Path) -> None:
    """``once`` prints failures outside logging; they are masked with the same registry the
    credential sources fill, even when a forge quotes the token in its error message."""
    forge_token = planted("forge-token")  # no well-known format: only the registry masks it
    token_file = tmp_path / "forge-token"
    token_file.write_text(forge_token + "\n")
    deploy = make_bare_repo(tmp_path)
    push_image(registry.url, "echo/app", "prod", seed="echo")
    forge = HttpStub()
    forge.add("GET", "/repos/org/deploy/pulls", Reply(status=401, body=json.dumps(
        {"message": f"Bad credentials {forge_token}"}).encode()))
    config = tmp_path / "settings.yaml"
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "app.yaml").write_text(policy_text(
        "app", f"{registry.host}/echo/app", f"file://{deploy.path}",
        "prod: {file: application-x/values-prod.yaml, approval: pull-request}"))
    with forge:
        config.write_text(json.dumps({
            "cache_dir": str(tmp_path / "cache"), "log_format": "json",
            "registries": [{"host": registry.host, "insecure": True}],
            "forges": [{"url_prefix": "file://", "kind": "github", "repository": "org/deploy",
                        "api_url": forge.url, "token_file": str(token_file)}]}))
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            [sys.executable, "-m", "image_updater.cli", "once", "--config", str(config),
             "--policies", str(policies)],
            capture_output=True, text=True, timeout=60, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)})
        sent = [r.headers.get("authorization", "") for r in forge.requests]

    assert done.returncode == 5, done.stderr  # the forge refused: authentication
    assert "FAILED app/prod" in done.stdout and "Bad credentials ***" in done.stdout
    assert any(forge_token in header for header in sent)  # the token really was used
    for form in forms(forge_token):
        assert form not in done.stdout and form not in done.stderr


def send_webhooks(base: str, registry_host: str, secret: str) -> list[int]:
    """Each way a webhook can authenticate or fail; returns the status codes."""
    event = json.dumps({"events": [{"action": "push", "request": {"host": registry_host},
                                    "target": {"repository": "team/app", "tag": "dev"}}]})
    body = event.encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    attempts = [
        ("/webhooks/registry", {"Authorization": f"Bearer {secret}"}, body),
        ("/webhooks/registry", {"Authorization": "Bearer not-the-secret"}, body),
        ("/webhooks/registry", {"Authorization": f"Bearer {secret}x"}, body),  # near miss
        ("/webhooks/registry", {"X-Hub-Signature-256": signature}, body),
        (f"/webhooks/dockerhub/{secret}", {}, json.dumps(
            {"repository": {"repo_name": "team/app"}}).encode()),
        ("/webhooks/registry", {"Authorization": f"Bearer {secret}"},
         b'{"events": "' + secret.encode() + b'"'),                   # malformed, quoting it
        ("/webhooks/dockerhub/" + secret[::-1], {}, body),            # wrong path token
    ]
    with httpx.Client(timeout=5) as client:
        return [client.post(base + path, headers=headers, content=payload).status_code
                for path, headers, payload in attempts]
