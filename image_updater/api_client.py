"""The client of the daemon's promotion API: ``image-updater promote --server URL``.

A PostSync job that promotes through the daemon needs no git key and no registry
credentials: only an identity. That is a Kubernetes projected service-account token (read
from its file for every request: the kubelet rotates it) or a static API token in a file.
The answer's ``code`` is the exit code ``promote`` itself would have returned, so a job
behaves the same whichever way it promotes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from image_updater.errors import ConfigError, UnauthenticatedError
from image_updater.exit_codes import ExitCode
from image_updater.secrets import SecretRegistry, read_secret_file

#: where the example chart projects the service-account token (audience image-updater)
DEFAULT_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/tokens/image-updater"
PATH = "/api/v1/promotions"
#: when the body carries no (valid) exit code, the status decides
_EXIT_BY_STATUS = {200: ExitCode.OK, 400: ExitCode.USAGE, 401: ExitCode.AUTH,
                   403: ExitCode.AUTH, 404: ExitCode.NOT_FOUND, 409: ExitCode.CONFLICT,
                   413: ExitCode.USAGE, 422: ExitCode.UNVERIFIED, 423: ExitCode.HELD,
                   502: ExitCode.TEMPORARY, 503: ExitCode.TEMPORARY, 504: ExitCode.TEMPORARY}
#: a daemon restarting or briefly unreachable is retried; anything it answered is final
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Promotion:
    server: str
    app: str
    source: str
    target: str
    digest: str
    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    code: ExitCode
    message: str       # the line to print: the result on success, the error otherwise


def promote_remote(promotion: Promotion, *, token_file: str, secrets: SecretRegistry,
                   attempts: int = 3, backoff: float = 2.0, timeout: float = 60.0,
                   transport: httpx.BaseTransport | None = None,
                   sleep: Callable[[float], None] = time.sleep) -> Answer:
    """POST the promotion; connection failures and 502/503/504 are retried ``attempts``
    times (a replay is safe: the API is idempotent), reading the token again each time."""
    url = promotion.server.rstrip("/") + PATH
    body: dict[str, object] = {"app": promotion.app, "from": promotion.source,
                               "to": promotion.target, "digest": promotion.digest}
    if promotion.evidence:
        body["evidence"] = dict(promotion.evidence)
    answer = Answer(ExitCode.TEMPORARY, "")
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as client:
        for attempt in range(1, attempts + 1):
            token = _token(token_file, secrets)
            answer, status = _send(client, url, body, token)
            if status == 401:  # say which file the job read: a wrong mount or path, usually
                answer = Answer(answer.code, f"{answer.message} (the token was read from "
                                             f"{token_file})")
            retry = status is None or status in RETRY_STATUSES
            if not retry or attempt == attempts:
                break
            sleep(backoff * attempt)
    return answer


def _token(path: str, secrets: SecretRegistry) -> str:
    try:
        return read_secret_file(path, setting="--token-file", secrets=secrets).strip()
    except ConfigError as exc:
        raise UnauthenticatedError(f"{exc} A projected service-account token is mounted at "
                                   f"{DEFAULT_SERVICE_ACCOUNT_TOKEN} by the example chart.") \
            from None


def _send(client: httpx.Client, url: str, body: dict[str, object], token: str
          ) -> tuple[Answer, int | None]:
    """The answer and its HTTP status (None: the daemon was not reached)."""
    try:
        response = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Answer(ExitCode.TEMPORARY, f"cannot reach the image-updater daemon at {url} "
                      f"({type(exc).__name__}); nothing was promoted by this attempt."), None
    return _answer(response), response.status_code


def _answer(response: httpx.Response) -> Answer:
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        return Answer(_EXIT_BY_STATUS.get(response.status_code, ExitCode.INTERNAL),
                      f"the daemon answered {response.status_code} without a JSON body "
                      f"({response.text[:200]!r}); is --server the image-updater daemon?")
    code = data.get("code")
    exit_code = (ExitCode(code) if isinstance(code, int) and code in ExitCode._value2member_map_
                 else _EXIT_BY_STATUS.get(response.status_code, ExitCode.INTERNAL))
    return Answer(exit_code, str(data.get("message", ""))[:2000])


def service_account_token_path(given: str | None) -> str:
    """``--service-account-token`` without a path means the chart's projected token."""
    path = given or DEFAULT_SERVICE_ACCOUNT_TOKEN
    if not Path(path).exists():
        raise UnauthenticatedError(
            f"No service-account token at {path}; project one with audience image-updater "
            "(see deploy/examples/postsync-promote-job.yaml) or pass its path.")
    return path
