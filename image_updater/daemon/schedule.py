"""The daemon's clock-driven jobs, behind one small seam.

In production APScheduler's :class:`AsyncIOScheduler` runs them on the daemon's event loop.
Every job is a coroutine function, which APScheduler's asyncio executor runs on the loop
itself: plain functions would run in the loop's default thread pool, which git and boto3
calls keep busy during a cycle, so the heartbeat would stall behind them (failing /healthz).
Tests pass their own :class:`Schedule` and decide when time passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger


@dataclass(frozen=True)
class Job:
    """Run ``run`` every ``every`` seconds (plus up to ``jitter`` seconds)."""

    id: str
    every: float
    run: Callable[[], Awaitable[None]]
    jitter: float = 0.0


class Schedule(Protocol):
    def start(self, jobs: Sequence[Job]) -> None:
        """Start firing ``jobs``; called on the daemon's loop."""
        ...

    def stop(self) -> None: ...


class IntervalSchedule:
    """APScheduler on the running loop: one interval trigger per job; a run that is late
    (the loop was busy) is coalesced, never queued up."""

    def __init__(self) -> None:
        self._scheduler: AsyncIOScheduler | None = None

    def start(self, jobs: Sequence[Job]) -> None:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        for job in jobs:
            scheduler.add_job(job.run, IntervalTrigger(seconds=job.every,
                                                       jitter=job.jitter or None),
                              id=job.id, max_instances=1, coalesce=True)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
