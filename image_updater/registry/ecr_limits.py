"""A client-side cap on request rate, shared by all calls to one ECR registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Spaces calls at least ``1 / rate`` seconds apart (a token bucket holding one token).

    botocore's adaptive retry mode already slows down once AWS throttles; this cap keeps a
    daemon with many apps from reaching the account-wide ECR quota in the first place.
    """

    def __init__(self, rate: float | None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = float("-inf")

    async def acquire(self) -> None:
        if not self._interval:
            return
        now = self._monotonic()
        # Reserve the slot before sleeping, so concurrent callers queue behind each other
        # without a lock (all callers run on one event loop).
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)
