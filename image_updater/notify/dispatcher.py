"""Delivery in the background: one bounded queue and one worker task per sink.

:meth:`Dispatcher.publish` never waits: it routes each event and puts it on the queue of
every sink that wants it, or drops it (counted in ``image_updater_notifications_dropped``,
logged) when that queue is full. So a receiver that is down, slow or answering 500 costs a
cycle nothing; only its own queue fills. A worker per sink keeps a dead Teams workflow from
delaying Slack.

Workers start with :meth:`Dispatcher.start` on the running loop; :meth:`Dispatcher.aclose`
gives queued events up to ``grace`` seconds to go out, then cancels what is left (a command
that exits flushes briefly; the daemon flushes on shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from image_updater.errors import ImageUpdaterError
from image_updater.notify.events import Event, Route, sinks_for
from image_updater.notify.sinks import Sink
from image_updater.observability.metrics import Metrics

log = logging.getLogger("image_updater.notify")


class Dispatcher:
    """Routes events to ``sinks`` (by name) per ``routes``; at most ``queue_size`` events
    wait per sink. ``on_close`` releases what the sinks share (the HTTP client)."""

    def __init__(self, *, sinks: Mapping[str, Sink], routes: Sequence[Route], metrics: Metrics,
                 queue_size: int, on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.sinks = dict(sinks)
        self.routes = tuple(routes)
        self.metrics = metrics
        self._queues: dict[str, asyncio.Queue[Event]] = {
            name: asyncio.Queue(maxsize=queue_size) for name in self.sinks}
        self._workers: list[asyncio.Task[None]] = []
        self._on_close = on_close

    def publish(self, events: Iterable[Event]) -> None:
        """Queue ``events`` for their sinks; never blocks (a full queue drops). Call on the
        dispatcher's loop."""
        for event in events:
            for name in sinks_for(event, self.routes):
                self._put(name, event)

    def _put(self, name: str, event: Event) -> None:
        try:
            self._queues[name].put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.notifications_dropped.labels(sink=name).inc()
            log.warning("notification %s for %s/%s dropped: the queue of sink %r is full "
                        "(%d waiting; is the receiver down?)", event.kind, event.app,
                        event.env, name, self._queues[name].qsize())

    def start(self) -> None:
        """Start one worker task per sink on the running loop."""
        self._workers = [asyncio.create_task(self._work(name), name=f"notify:{name}")
                         for name in self.sinks]

    async def _work(self, name: str) -> None:
        sink, queue = self.sinks[name], self._queues[name]
        while True:
            event = await queue.get()
            try:
                await sink.send(event)
                result = "ok"
            except ImageUpdaterError as exc:
                log.warning("notification %s for %s/%s not delivered: %s", event.kind,
                            event.app, event.env, exc)
                result = "failed"
            except Exception:  # a bug here must not stop later notifications
                log.exception("notification %s for %s/%s to sink %r failed unexpectedly (a "
                              "bug; please report it)", event.kind, event.app, event.env, name)
                result = "failed"
            finally:
                queue.task_done()
            self.metrics.notification_deliveries.labels(sink=name, result=result).inc()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every queued event to be handled; True if all were."""
        waiting = asyncio.gather(*(q.join() for q in self._queues.values()))
        try:
            await asyncio.wait_for(waiting, timeout=timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, grace: float = 0.0) -> None:
        """Flush for up to ``grace`` s, then stop the workers and release the client."""
        if self._workers and grace > 0 and not await self.flush(grace):
            left = sum(q.qsize() for q in self._queues.values())
            log.warning("stopping with %d notification(s) not delivered within %.0f s; they "
                        "are dropped", left, grace)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._on_close is not None:
            with contextlib.suppress(Exception):  # closing a client must not hide the result
                await self._on_close()
