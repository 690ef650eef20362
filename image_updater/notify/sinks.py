"""Webhook sinks: POST one rendered event, retrying what a retry can fix. httpx adapter.

A webhook URL is a secret (whoever has it can post to the channel), so it is read at each
delivery through :mod:`image_updater.secrets` (which registers it for masking) and never
appears in a message: errors and log lines name the sink, never where it posts. httpx's
own exceptions are reduced to their type name for the same reason (some quote the URL).

Retried: connection failures, timeouts, 408, 429 and 5xx (``Retry-After`` honoured, capped).
Not retried: other 4xx (a revoked Slack URL answers 404 ``no_service``), a secret that
cannot be read. Either way the event is given up with a :class:`NotifyError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from image_updater.errors import NotifyError, truncate
from image_updater.notify import payloads
from image_updater.notify.events import Event
from image_updater.retry import AsyncSleep, Backoff, RetryLater, parse_retry_after, retry_async

log = logging.getLogger("image_updater.notify")

#: a receiver's Retry-After is obeyed up to this many seconds
MAX_RETRY_AFTER = 120.0
_RETRIED = frozenset({408, 429})
DEFAULT_BACKOFF = Backoff(base=2.0, maximum=60.0)

#: an event rendered for one sink: the body bytes and the request headers
Rendered = tuple[bytes, dict[str, str]]
Render = Callable[[Event], Rendered]


class Sink(Protocol):
    name: str

    async def send(self, event: Event) -> None:
        """Deliver ``event`` or raise an ImageUpdaterError saying why not."""


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """How hard a sink tries: ``attempts`` in all, waits from ``backoff``, sleeping with
    ``sleep`` (a parameter so tests drive time)."""

    attempts: int = 5
    backoff: Backoff = DEFAULT_BACKOFF
    sleep: AsyncSleep = asyncio.sleep


def render_slack(event: Event) -> Rendered:
    return payloads.encode(payloads.slack(event)), {"Content-Type": "application/json"}


def render_teams(event: Event) -> Rendered:
    return payloads.encode(payloads.teams(event)), {"Content-Type": "application/json"}


def cloudevents_renderer(*, source: str, key: Callable[[], str],
                         new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> Render:
    """Structured-mode CloudEvents, signed with the key ``key()`` reads at each event."""

    def render(event: Event) -> Rendered:
        body = payloads.encode(payloads.cloudevent(event, source=source, event_id=new_id()))
        return body, {"Content-Type": payloads.CLOUDEVENTS_CONTENT_TYPE,
                      payloads.SIGNATURE_HEADER: payloads.signature(body, key())}

    return render


class WebhookSink:
    """Posts events to the URL ``url()`` returns (read at each delivery: rotation works).

    ``kind`` names the receiver in messages ("Slack"); the body is rendered once per
    event, so every retry posts the same bytes (and the same CloudEvents id).
    """

    def __init__(self, *, name: str, kind: str, url: Callable[[], str], render: Render,
                 client: httpx.AsyncClient, delivery: Delivery,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.kind = kind
        self._url = url
        self._render = render
        self._client = client
        self._delivery = delivery
        self._clock = clock

    async def send(self, event: Event) -> None:
        body, headers = self._render(event)
        await retry_async(lambda: self._post(body, headers), attempts=self._delivery.attempts,
                          backoff=self._delivery.backoff, sleep=self._delivery.sleep,
                          on_retry=self._on_retry)

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        url = self._url()
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
            raise RetryLater(failure, final=self._error(
                f"could not be reached ({failure})", "check that the receiver is up")) from None
        if response.is_success:
            return
        status = response.status_code
        said = truncate(response.text, 120)
        if status in _RETRIED or status >= 500:
            delay = parse_retry_after(response.headers.get("Retry-After"), now=self._clock(),
                                      cap=MAX_RETRY_AFTER)
            raise RetryLater(f"HTTP {status}", delay=delay, final=self._error(
                f"answered HTTP {status} ({said})", "check the receiver's health"))
        raise self._error(f"refused the event with HTTP {status} ({said})",
                          "check that the webhook URL is still valid and the payload accepted")

    def _error(self, what: str, fix: str) -> NotifyError:
        return NotifyError(f"The {self.kind} notification sink {self.name!r} {what}; {fix}. "
                           "The event is dropped; later events are still sent.")

    def _on_retry(self, attempt: int, attempts: int, reason: str, delay: float) -> None:
        log.warning("notification to sink %r failed (%s), attempt %d/%d; will retry in %.1f s",
                    self.name, reason, attempt, attempts, delay)
