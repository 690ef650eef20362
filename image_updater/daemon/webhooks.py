"""Registry webhooks: authenticate, parse, and say which repositories were pushed.

A webhook only *triggers* a reconcile of the apps watching a repository; the digest in the
payload is never used (it is untrusted input): the cycle re-reads the registry.

Authentication, any one of (the secret comes from ``webhooks.secret_env``/``secret_file``):

- ``Authorization: Bearer <secret>`` (or the bare secret): distribution's
  ``notifications.endpoints[].headers``, Harbor's "auth header", EventBridge API destinations;
- ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>``: GitHub package events;
- a path token, ``/webhooks/<source>/<secret>``: Docker Hub and Quay, which cannot send headers.

All comparisons are constant-time. Without a configured secret every webhook is refused
(403); a configured secret that cannot be read (missing file, unset variable, empty) refuses
every webhook with 503 and a message naming the file or variable. The secret is read at each
request by ``image_updater.secrets``, so a rotated secret works at once and is masked in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from image_updater.config.settings import WebhookSettings
from image_updater.errors import ConfigError
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

SOURCES = ("registry", "dockerhub", "harbor", "github", "quay", "ecr")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")

Image = tuple[str, str]  # (registry host, or "" when the payload does not say; repository)


class WebhookError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_secret(settings: WebhookSettings, *, secrets: SecretRegistry,
                environ: Mapping[str, str] | None = None) -> str | None:
    """The shared secret (added to ``secrets``), or None when none is configured.

    Raise ConfigError naming the file or variable when one is configured but unusable.
    """
    if settings.secret_file:
        return read_secret_file(settings.secret_file, setting="webhooks.secret_file",
                                secrets=secrets)
    if settings.secret_env:
        return read_secret_env(settings.secret_env, setting="webhooks.secret_env",
                               secrets=secrets, environ=environ)
    return None


def split_source(path_rest: str) -> tuple[str, str]:
    """``"dockerhub/TOKEN"`` → ``("dockerhub", "TOKEN")``; ``"registry"`` → ``("registry", "")``."""
    source, _, token = path_rest.partition("/")
    return source, token


def verify(source_path: str, headers: Mapping[str, str], body: bytes,
           settings: WebhookSettings, *, secrets: SecretRegistry) -> None:
    """Raise WebhookError(401/403/404/503) unless the request is authentic."""
    source, token = split_source(source_path)
    if source not in SOURCES:
        raise WebhookError(404, f"unknown webhook source {source[:40]!r}; use one of "
                                f"{', '.join(SOURCES)}")
    try:
        secret = load_secret(settings, secrets=secrets)  # at each request: it may be rotated
    except ConfigError as exc:
        raise WebhookError(503, f"webhooks cannot be checked: {exc}") from exc
    if secret is None:
        raise WebhookError(403, "webhooks are disabled: no secret is configured "
                                "(set webhooks.secret_env or webhooks.secret_file)")
    if _authentic(secret, headers, body, token):
        return
    # Worded without a literal "Authorization: …" so the log redaction leaves the hint readable.
    raise WebhookError(401, "webhook authentication failed: send the shared secret as a Bearer "
                            "token in the Authorization header, sign the body with an "
                            "X-Hub-Signature-256 HMAC, or append the secret as the last path "
                            "segment")


def _authentic(secret: str, headers: Mapping[str, str], body: bytes, token: str) -> bool:
    expected = secret.encode()
    auth = headers.get("authorization", "")
    presented = auth[7:] if auth.lower().startswith("bearer ") else auth
    ok = bool(presented) and hmac.compare_digest(presented.strip().encode(), expected)
    signature = headers.get("x-hub-signature-256", "")
    if signature.startswith("sha256="):
        mac = hmac.new(expected, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(signature[7:].encode(), mac.encode()) or ok
    if token:
        ok = hmac.compare_digest(token.encode(), expected) or ok
    return ok


def parse_webhook(source_path: str, headers: Mapping[str, str], body: bytes) -> list[Image]:
    """The (registry, repository) pairs a webhook reports as pushed. Raise WebhookError(400)."""
    source, _ = split_source(source_path)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookError(400, f"body is not JSON: {exc}") from exc
    except RecursionError:  # e.g. 100,000 nested brackets: well within the size cap
        raise WebhookError(400, "body is nested too deeply to be a webhook") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "body must be a JSON object")
    try:
        images = _PARSERS[source](payload, headers)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise WebhookError(400, f"{source} payload is missing a field: {exc!r:.80}") from exc
    return [_checked(host, repo) for host, repo in images]


def _checked(host: str, repository: str) -> Image:
    if not isinstance(repository, str) or len(repository) > 255 or not _REPO_RE.fullmatch(
            repository):
        raise WebhookError(400, f"repository {str(repository)[:80]!r} is not a valid name")
    if host and (not isinstance(host, str) or not _HOST_RE.fullmatch(host)):
        raise WebhookError(400, f"registry host {str(host)[:80]!r} is not valid")
    return host or "", repository  # a JSON null (or 0, []) host means "not said", like ""


def _distribution(p: dict[str, Any], _h: Mapping[str, str]) -> list[Image]:
    out = []
    for event in p["events"]:
        target = event.get("target") or {}
        if event.get("action") != "push" or not target.get("tag"):
            continue  # blob pushes and digest-only pushes do not move a tag
        host = (event.get("request") or {}).get("host", "")
        out.append((host, target["repository"]))
    return out


def _dockerhub(p: dict[str, Any], _h: Mapping[str, str]) -> list[Image]:
    name = p["repository"]["repo_name"]
    return [("docker.io", name if "/" in name else f"library/{name}")]


def _harbor(p: dict[str, Any], _h: Mapping[str, str]) -> list[Image]:
    if p.get("type") not in ("PUSH_ARTIFACT", "pushImage"):
        return []
    data = p["event_data"]
    repo = data["repository"]["repo_full_name"]
    hosts = {r.get("resource_url", "").split("/", 1)[0] for r in data.get("resources", [])}
    return [(h, repo) for h in sorted(hosts) if h] or [("", repo)]


def _github(p: dict[str, Any], h: Mapping[str, str]) -> list[Image]:
    if h.get("x-github-event") not in ("package", "registry_package"):
        return []
    pkg = p.get("package") or p["registry_package"]
    if pkg.get("package_type", "").lower() != "container":
        return []
    owner = pkg["owner"]["login"].lower()
    return [("ghcr.io", f"{owner}/{pkg['name'].lower()}")]


def _quay(p: dict[str, Any], _h: Mapping[str, str]) -> list[Image]:
    host = str(p.get("docker_url", "quay.io/")).split("/", 1)[0]
    return [(host, p["repository"])]


def _ecr(p: dict[str, Any], _h: Mapping[str, str]) -> list[Image]:
    event = p.get("data", p) if p.get("specversion") else p  # CloudEvents wrap the event
    if isinstance(event, dict) and "detail" not in event and "repository-name" in event:
        event = {"detail": event, "account": p.get("account", ""), "region": p.get("region", "")}
    detail = event["detail"]
    if detail.get("action-type") != "PUSH" or detail.get("result") != "SUCCESS":
        return []
    account, region = str(event.get("account", "")), str(event.get("region", ""))
    host = f"{account}.dkr.ecr.{region}.amazonaws.com" if account and region else ""
    return [(host, detail["repository-name"])]


_PARSERS: dict[str, Callable[[dict[str, Any], Mapping[str, str]], list[Image]]] = {
    "registry": _distribution, "dockerhub": _dockerhub, "harbor": _harbor, "github": _github,
    "quay": _quay, "ecr": _ecr,
}
