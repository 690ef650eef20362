"""Webhook authentication and parsing (pure): payload shapes of each registry."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from image_updater.config.settings import WebhookSettings
from image_updater.daemon.webhooks import WebhookError, parse_webhook, verify
from image_updater.secrets import SecretRegistry

SECRET = "s3cr3t-webhook-value"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> WebhookSettings:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    return WebhookSettings(secret_env="TEST_WEBHOOK_SECRET")


DISTRIBUTION = {"events": [
    {"action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "digest": "sha256:" + "a" * 64, "repository": "team/app",
                                  "tag": "dev"},
     "request": {"host": "127.0.0.1:5000"}},
    {"action": "pull", "target": {"repository": "team/other", "tag": "dev"}},
    {"action": "push", "target": {"repository": "team/blobonly", "digest": "sha256:" + "b" * 64}},
]}
DOCKERHUB = {"push_data": {"tag": "latest"}, "repository": {"repo_name": "nginx"}}
HARBOR = {"type": "PUSH_ARTIFACT", "event_data": {
    "resources": [{"digest": "sha256:" + "c" * 64, "tag": "v1",
                   "resource_url": "harbor.example.com/lib/app:v1"}],
    "repository": {"repo_full_name": "lib/app"}}}
GITHUB = {"action": "published", "package": {"name": "Payments-API", "package_type": "CONTAINER",
                                             "owner": {"login": "Example-Org"}}}
QUAY = {"repository": "org/app", "docker_url": "quay.io/org/app", "updated_tags": ["v1"]}
ECR = {"detail-type": "ECR Image Action", "source": "aws.ecr", "account": "123456789012",
       "region": "eu-west-1", "detail": {"action-type": "PUSH", "result": "SUCCESS",
                                         "repository-name": "application-x", "image-tag": "dev"}}
ECR_CLOUDEVENT = {"specversion": "1.0", "type": "aws.ecr", "data": ECR}

CASES: list[tuple[str, dict[str, Any], dict[str, str], list[tuple[str, str]]]] = [
    ("registry", DISTRIBUTION, {}, [("127.0.0.1:5000", "team/app")]),
    ("dockerhub", DOCKERHUB, {}, [("docker.io", "library/nginx")]),
    ("harbor", HARBOR, {}, [("harbor.example.com", "lib/app")]),
    ("github", GITHUB, {"x-github-event": "package"}, [("ghcr.io", "example-org/payments-api")]),
    ("github", GITHUB, {"x-github-event": "push"}, []),
    ("quay", QUAY, {}, [("quay.io", "org/app")]),
    ("ecr", ECR, {}, [("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "application-x")]),
    ("ecr", ECR_CLOUDEVENT, {},
     [("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "application-x")]),
]


@pytest.mark.parametrize(("source", "payload", "headers", "expected"), CASES)
def test_payloads_name_the_pushed_repositories(source: str, payload: dict[str, Any],
                                               headers: dict[str, str],
                                               expected: list[tuple[str, str]]) -> None:
    assert parse_webhook(source, headers, json.dumps(payload).encode()) == expected


@pytest.mark.parametrize(("body", "why"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (json.dumps({"events": [{"action": "push", "target": {"tag": "x"}}]}).encode(),
     "missing a field"),
    (json.dumps({"events": [{"action": "push", "target": {"tag": "x",
                                                          "repository": "../../etc"}}]}).encode(),
     "not a valid name"),
    (json.dumps({"events": [{"action": "push", "request": {"host": "evil host/x"},
                             "target": {"tag": "x", "repository": "a/b"}}]}).encode(),
     "registry host"),
])
def test_malformed_bodies_are_rejected_with_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(WebhookError) as info:
        parse_webhook("registry", {}, body)
    assert info.value.status == 400
    assert why in str(info.value)


def test_bearer_secret_is_accepted(settings: WebhookSettings) -> None:
    verify("registry", {"authorization": f"Bearer {SECRET}"}, b"{}", settings,
           secrets=SecretRegistry())


def test_hmac_signature_is_accepted(settings: WebhookSettings) -> None:
    body = b'{"a": 1}'
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    verify("github", {"x-hub-signature-256": f"sha256={sig}"}, body, settings,
           secrets=SecretRegistry())


def test_path_token_is_accepted(settings: WebhookSettings) -> None:
    verify(f"dockerhub/{SECRET}", {}, b"{}", settings, secrets=SecretRegistry())


@pytest.mark.parametrize(("source", "headers", "status"), [
    ("registry", {}, 401),
    ("registry", {"authorization": "Bearer wrong"}, 401),
    ("github", {"x-hub-signature-256": "sha256=" + "0" * 64}, 401),
    ("dockerhub/wrong-token", {}, 401),
    ("nosuch", {"authorization": f"Bearer {SECRET}"}, 404),
])
def test_unauthenticated_requests_are_refused(settings: WebhookSettings, source: str,
                                              headers: dict[str, str], status: int) -> None:
    with pytest.raises(WebhookError) as info:
        verify(source, headers, b"{}", settings, secrets=SecretRegistry())
    assert info.value.status == status
    assert SECRET not in str(info.value)


def test_without_a_configured_secret_every_webhook_is_refused() -> None:
    with pytest.raises(WebhookError) as info:
        verify("registry", {"authorization": "Bearer "}, b"{}", WebhookSettings(),
               secrets=SecretRegistry())
    assert info.value.status == 403
    assert "no secret is configured" in str(info.value)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_configured_but_unusable_secret_refuses_with_503_naming_the_file(
        tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "webhook-secret"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(WebhookError) as info:
        verify("registry", {"authorization": f"Bearer {SECRET}"}, b"{}",
               WebhookSettings(secret_file=str(path)), secrets=SecretRegistry())
    assert info.value.status == 503
    assert str(path) in str(info.value) and "webhooks.secret_file" in str(info.value)


def test_the_secret_is_read_at_each_request_and_registered(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secret"
    path.write_text("first-secret\n", encoding="utf-8")
    secrets, settings = SecretRegistry(), WebhookSettings(secret_file=str(path))
    verify("registry", {"authorization": "Bearer first-secret"}, b"{}", settings,
           secrets=secrets)
    path.write_text("rotated-secret\n", encoding="utf-8")
    with pytest.raises(WebhookError):
        verify("registry", {"authorization": "Bearer first-secret"}, b"{}", settings,
               secrets=secrets)
    verify("registry", {"authorization": "Bearer rotated-secret"}, b"{}", settings,
           secrets=secrets)
    assert secrets.mask("first-secret rotated-secret") == "*** ***"
