"""Politeness towards one registry: a requests-per-second budget and a concurrency cap.

The one rate limiter of the registry adapters: the OCI client takes a ``slot()`` (a
concurrency slot, then a token) per request; the ECR adapter, which caps concurrency
itself, calls ``acquire()`` (a token) per API call; the OCI client's bulk HEADs, sent from worker
threads, call ``wait_blocking()``. The clock and the sleep function are parameters so
tests can drive time by hand.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from image_updater.clocks import MonotonicClock

Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; one token per request.

    ``reserve()`` takes a token now and says how long to wait before using it. Tokens may
    go negative, which queues callers fairly; a lock keeps the balance right when worker
    threads reserve too. A burst of 1 spaces requests exactly ``1 / rate`` seconds apart.
    """

    def __init__(self, *, rate: float, burst: float, clock: MonotonicClock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class RateLimiter:
    """Per-registry limits: ``async with limiter.slot(): send one request``.

    ``requests_per_second`` 0 or None means unlimited. ``burst`` defaults to one second's
    worth of requests, which keeps small scans fast; ``max_concurrency`` None means the
    caller caps concurrency itself.
    """

    def __init__(self, *, requests_per_second: float | None, clock: MonotonicClock,
                 sleep: Sleep, max_concurrency: int | None = None,
                 burst: float | None = None) -> None:
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._sleep = sleep
        rate = requests_per_second or 0.0
        self._bucket = (TokenBucket(rate=rate, burst=burst or max(1.0, rate), clock=clock)
                        if rate > 0 else None)

    async def acquire(self) -> None:
        """Wait until the rate budget allows one more request."""
        if self._bucket is not None:
            delay = self._bucket.reserve()
            if delay > 0:
                await self._sleep(delay)

    def wait_blocking(self) -> None:
        """``acquire`` for a worker thread, whose concurrency its pool caps."""
        if self._bucket is not None:
            delay = self._bucket.reserve()
            if delay > 0:
                time.sleep(delay)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:
            await self.acquire()
            yield
            return
        async with self._semaphore:
            await self.acquire()
            yield
