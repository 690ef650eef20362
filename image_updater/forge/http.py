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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from image_updater.clocks import WallClock
from image_updater.errors import (
    ForgeAuthError,
    ForgeError,
    ForgeRateLimitedError,
    ForgeUnavailableError,
    truncate,
)
from image_updater.forge.base import ForgeOptions
from image_updater.forge.ratelimit import rate_limit_delay
from image_updater.retry import Backoff, RetryLater, retry_sync

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
# Failures where the request certainly never reached the forge: safe to repeat a POST.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


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
        clock: WallClock,
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
