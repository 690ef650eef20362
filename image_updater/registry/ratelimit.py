"""Politeness towards one registry: a concurrency cap and a requests-per-second budget.

The clock and the sleep function are parameters so tests can drive time by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

#: seconds on a monotonic clock (``time.monotonic``): only differences mean anything
MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; one token per request.

    ``reserve()`` takes a token now and says how long to wait before using it. Tokens may
    go negative, which queues callers fairly without a lock: asyncio runs ``reserve`` to
    completion, so two callers never see the same balance.
    """

    def __init__(self, *, rate: float, burst: float, clock: MonotonicClock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def reserve(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class RateLimiter:
    """Per-registry limits: ``async with limiter.slot(): send one request``."""

    def __init__(self, *, max_concurrency: int, requests_per_second: float, clock: MonotonicClock,
                 sleep: Sleep) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._sleep = sleep
        # A burst of one second's worth of requests keeps small scans fast.
        self._bucket = (TokenBucket(rate=requests_per_second,
                                    burst=max(1.0, requests_per_second), clock=clock)
                        if requests_per_second > 0 else None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._semaphore:
            if self._bucket is not None:
                delay = self._bucket.reserve()
                if delay > 0:
                    await self._sleep(delay)
            yield
