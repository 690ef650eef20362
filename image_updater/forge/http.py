"""One request helper shared by the forge adapters: auth, retries, rate limits, error mapping.

Retry rules (the why): a rate-limit answer means the forge refused the request, so
repeating it is always safe; a 5xx or a dropped connection may hide a request that
*was* carried out, so only idempotent methods are repeated then (a POST is repeated
only when the connection was never made). Waits use the injected ``sleep`` and never
exceed ``ForgeOptions.max_wait``; a longer wait raises ForgeRateLimitedError at once
with ``retry_after`` so the scheduler, not a blocked thread, does the waiting. The loop
itself and the ``Retry-After`` parser are the shared ones in ``image_updater.retry``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from image_updater.errors import (
    ConfigError,
    ForgeAuthError,
    ForgeError,
    ForgeRateLimitedError,
    ForgeUnavailableError,
    truncate,
)
from image_updater.forge.base import ForgeOptions
from image_updater.retry import Backoff, RetryLater, parse_retry_after, retry_sync
from image_updater.secrets import SecretRegistry, read_secret_env, read_secret_file

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]
Clock = Callable[[], float]

#: wait when a forge says "rate limited" without saying for how long (GitHub documents
#: "at least one minute" for secondary limits); doubled on each further attempt.
DEFAULT_RATE_LIMIT_WAIT = 60.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
# Failures where the request certainly never reached the forge: safe to repeat a POST.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


# --------------------------------------------------------------------------- tokens


class TokenSource(Protocol):
    def token(self) -> str:
        """The current token; read fresh so rotated secrets are picked up."""
        ...

    def describe(self) -> str:
        """Where the token comes from, for messages (never the token itself)."""
        ...


def check_token(value: str, where: str) -> str:
    """``value`` if it can go into a header; ConfigError naming ``where`` (never the value).

    Files and variables are read (and their trailing line endings stripped) by
    ``image_updater.secrets``; a space or line break left inside is a mistake in the secret.
    """
    if not value:
        raise ConfigError(f"the forge token from {where} is empty; put an access token there.")
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ConfigError(
            f"the forge token from {where} contains spaces, line breaks or non-ASCII "
            "characters; store only the token itself."
        )
    return value


@dataclass(frozen=True)
class EnvToken:
    name: str
    secrets: SecretRegistry = field(compare=False, repr=False)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    setting: str = "token_env"

    def token(self) -> str:
        value = read_secret_env(self.name, setting=self.setting, secrets=self.secrets,
                                environ=self.environ)
        return check_token(value, self.describe())

    def describe(self) -> str:
        return f"environment variable {self.name}"


@dataclass(frozen=True)
class FileToken:
    path: str
    secrets: SecretRegistry = field(compare=False, repr=False)
    setting: str = "token_file"

    def token(self) -> str:
        value = read_secret_file(self.path, setting=self.setting, secrets=self.secrets)
        return check_token(value, self.describe())

    def describe(self) -> str:
        return f"file {self.path}"


def token_source(
    options: ForgeOptions, *, secrets: SecretRegistry, environ: Mapping[str, str] | None = None
) -> TokenSource:
    """The env-var or file token source that ``options`` names; tokens read are added to
    ``secrets``."""
    setting = f"forges[{options.repository}]"
    if options.token_env is not None:
        return EnvToken(options.token_env, secrets, os.environ if environ is None else environ,
                        setting=f"{setting}.token_env")
    if options.token_file is not None:
        return FileToken(options.token_file, secrets, setting=f"{setting}.token_file")
    raise ConfigError(
        f"forge settings for {options.repository} name no token_env or token_file; set one."
    )


# ---------------------------------------------------------------------- rate limits


def parse_reset(value: str | None, *, now: float) -> float | None:
    """Seconds until an epoch-seconds reset header (GitHub ``X-RateLimit-Reset``, GitLab
    ``RateLimit-Reset``); at least 1 s so a slightly fast local clock still waits."""
    if value is None or not re.fullmatch(r"[0-9]{1,12}", value.strip()):
        return None
    return max(1.0, float(value.strip()) - now)


def rate_limit_delay(
    status: int, headers: Mapping[str, str], body: str, *, now: float, attempt: int = 0
) -> float | None:
    """How long to wait if this response is a rate limit, else None.

    429 is always a rate limit. A 403 is one only with rate-limit evidence: a
    ``Retry-After`` header, ``X-RateLimit-Remaining: 0`` or a "rate limit" message
    (GitHub's primary and secondary limits); any other 403 is a permission problem.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lower.get("retry-after"), now=now)
    exhausted = lower.get("x-ratelimit-remaining", "").strip() == "0"
    if status == 403 and not (
        retry_after is not None or exhausted or "rate limit" in body.lower()
    ):
        return None
    if status not in (403, 429):
        return None
    if retry_after is not None:
        return retry_after
    reset = parse_reset(lower.get("x-ratelimit-reset") or lower.get("ratelimit-reset"), now=now)
    if reset is not None:
        return reset
    return DEFAULT_RATE_LIMIT_WAIT * (2**attempt)


# -------------------------------------------------------------------------- helper


@dataclass(frozen=True, kw_only=True)
class Site:
    """What messages say about a forge."""

    label: str        # "GitHub"
    permission: str   # what the token needs, e.g. "Pull requests: write, Contents: write"


class ForgeHttp:
    """Sends requests for one repository on one forge and maps failures to ForgeError."""

    def __init__(
        self,
        options: ForgeOptions,
        *,
        site: Site,
        auth: Callable[[], Mapping[str, str]],
        describe_auth: Callable[[], str],
        headers: Mapping[str, str] | None = None,
        sleep: Sleep,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.options = options
        self.site = site
        self._auth = auth
        self._describe_auth = describe_auth
        self._sleep = sleep
        self._clock = clock
        base = options.api_url.rstrip("/") + "/"
        self._client = httpx.Client(
            base_url=base,
            headers={"User-Agent": "image-updater", **(headers or {})},
            timeout=options.timeout,
            transport=transport,
            follow_redirects=False,  # a redirect could carry our auth header elsewhere
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        auth: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request (with retries) and return its decoded JSON (None if empty)."""
        response = self._send(method, path, params=params, json=json, auth=auth)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ForgeError(
                f"{self._where()} answered {method} {path} with a body that is not JSON "
                f"({truncate(response.text)}); check that api_url points at the API root."
            ) from exc

    def paginate(
        self,
        path: str,
        params: Mapping[str, str | int],
        *,
        size_param: str,
        size: int,
        max_pages: int,
    ) -> list[Any]:
        """Collect list pages (``page`` = 1, 2, …) until a short page; at most ``max_pages``."""
        items: list[Any] = []
        for page in range(1, max_pages + 1):
            chunk = self.call("GET", path, params={**params, size_param: size, "page": page})
            if not isinstance(chunk, list):
                raise self.malformed(path, chunk)
            items.extend(chunk)
            if len(chunk) < size:
                return items
        log.warning(
            "%s listed more than %d pages for %s; only those were read.",
            self._where(), max_pages, path,
        )
        return items

    # -- one request, with retries

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None,
        json: Any,
        auth: Mapping[str, str] | None,
    ) -> httpx.Response:
        url = path.lstrip("/")
        path = "/" + url  # as shown in messages and logs
        tries = 0

        def attempt() -> httpx.Response:
            nonlocal tries
            tries += 1
            return self._attempt(method, url, path, tries, params=params, json=json, auth=auth)

        def on_retry(failed: int, total: int, reason: str, delay: float) -> None:
            log.warning(
                "%s failed %s %s (%s); will retry in %.1f s (attempt %d/%d).",
                self._where(), method, path, reason, delay, failed + 1, total,
            )

        return retry_sync(
            attempt, attempts=self.options.max_retries + 1, sleep=self._sleep,
            backoff=Backoff(base=self.options.backoff, maximum=self.options.max_wait),
            on_retry=on_retry,
        )

    def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        tries: int,
        *,
        params: Mapping[str, str | int] | None,
        json: Any,
        auth: Mapping[str, str] | None,
    ) -> httpx.Response:
        """One request: the response, a final error, or RetryLater with the final error."""
        headers = dict(auth if auth is not None else self._auth())
        try:
            response = self._client.request(method, url, params=params, json=json,
                                            headers=headers)
        except httpx.TransportError as exc:
            final = self._unreachable(method, path, exc, tries)
            if not (method in _IDEMPOTENT or isinstance(exc, _NOT_SENT)):
                raise final from exc
            raise RetryLater(type(exc).__name__, final=final) from exc
        if response.is_success:
            return response
        delay = rate_limit_delay(
            response.status_code, response.headers, response.text,
            now=self._clock(), attempt=tries - 1,
        )
        if delay is not None:
            limited = self._rate_limited(method, path, delay)
            if delay > self.options.max_wait:
                raise limited  # the scheduler waits, not a blocked thread
            raise RetryLater("rate limited", delay=delay, final=limited)
        error = self._error(method, path, response, tries)
        if response.status_code >= 500 and method in _IDEMPOTENT:
            raise RetryLater(f"HTTP {response.status_code}", final=error)
        raise error

    # -- errors

    def _where(self) -> str:
        return f"{self.site.label} at {self.options.api_url}"

    def _rate_limited(self, method: str, path: str, delay: float) -> ForgeRateLimitedError:
        return ForgeRateLimitedError(
            f"{self._where()} is rate limiting {method} {path} for repository "
            f"{self.options.repository}; it may be retried in {delay:.0f} s, the next cycle "
            "will try again.",
            retry_after=delay,
        )

    def _unreachable(
        self, method: str, path: str, exc: httpx.TransportError, tries: int
    ) -> ForgeUnavailableError:
        return ForgeUnavailableError(
            f"could not complete {method} {path} at {self._where()} for repository "
            f"{self.options.repository} ({type(exc).__name__}: {truncate(str(exc), 120)}) "
            f"after {tries} attempt(s); check api_url and the network, the next cycle will "
            "try again."
        )

    def malformed(self, path: str, payload: Any, why: str = "") -> ForgeError:
        """The error for a response that does not have the documented shape."""
        detail = f"{why}: " if why else ""
        return ForgeError(
            f"{self._where()} returned an unexpected document for {path} ({detail}"
            f"{truncate(repr(payload))}); is api_url the API root of a {self.site.label}?"
        )

    def _error(self, method: str, path: str, response: httpx.Response, tries: int) -> ForgeError:
        status = response.status_code
        said = truncate(_message_of(response))
        repo = self.options.repository
        if status == 401:
            return ForgeAuthError(
                f"{self._where()} rejected the token from {self._describe_auth()} for "
                f"repository {repo} (HTTP 401 on {method} {path}: {said}); check that it is "
                f"valid and not expired. It needs {self.site.permission}."
            )
        if status == 403:
            return ForgeAuthError(
                f"{self._where()} refused {method} {path} for repository {repo} (HTTP 403: "
                f"{said}); the token from {self._describe_auth()} needs "
                f"{self.site.permission}."
            )
        if status == 404:
            return ForgeError(
                f"{self._where()} answered 404 to {method} {path}: repository {repo} was not "
                f"found or the token from {self._describe_auth()} cannot see it (or the pull "
                "request is gone); check the repository name and the token's access."
            )
        if status >= 500:
            return ForgeUnavailableError(
                f"{self._where()} failed {method} {path} for repository {repo} with HTTP "
                f"{status} after {tries} attempt(s) ({said}); the next cycle will try again."
            )
        return ForgeError(
            f"{self._where()} refused {method} {path} for repository {repo} (HTTP {status}: "
            f"{said}); the request was not retried."
        )


def _message_of(response: httpx.Response) -> str:
    """The forge's own explanation: the JSON ``message`` field when there is one."""
    try:
        payload = response.json()
    except ValueError:
        return response.text
    if isinstance(payload, dict) and "message" in payload:
        message = payload["message"]
        errors = payload.get("errors")
        return f"{message} {errors}" if errors else str(message)
    return response.text


# ------------------------------------------------------------- reading forge JSON
# Forge responses are untrusted: adapters read fields through these, which raise
# MalformedError (caught and reported with the body quoted through truncate()).


class MalformedError(ValueError):
    pass


def field_at(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise MalformedError(f"missing field {'.'.join(path)}")
        obj = obj[key]
    return obj


def text_at(obj: Any, *path: str, nullable: bool = False) -> str:
    value = field_at(obj, *path)
    if value is None and nullable:
        return ""
    if not isinstance(value, str):
        raise MalformedError(f"field {'.'.join(path)} is not a string")
    return value


def number_at(obj: Any, *path: str) -> int:
    value = field_at(obj, *path)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MalformedError(f"field {'.'.join(path)} is not a positive integer")
    return value


def best_effort(what: str, number: int, step: Callable[[], object]) -> None:
    """Run a step that decorates an already-opened pull request.

    The pull request exists by now: failing the whole ``create`` would make the engine
    try to open it again, which the forge refuses as a duplicate. So a failed label,
    reviewer or assignee step is logged and the pull request is kept.
    """
    try:
        step()
    except ForgeError as exc:
        log.warning(
            "pull request #%d was opened but %s failed: %s The pull request is kept "
            "without it; check the policy's pull_request settings if this repeats.",
            number, what, exc,
        )
