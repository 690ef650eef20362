"""The daemon's request queue: what the next cycle covers.

Requests coalesce: a full cycle covers everything asked for so far, and app requests that
arrive while a cycle runs are merged into the next one (a webhook for app A during a full
cycle costs one more cycle for A only). All methods are called on the daemon's loop.

A webhook's cycle starts ``settle`` seconds after it arrives, and when that cycle changes
nothing for an app, the app is checked once more ``recheck_after`` seconds later:
registries notify before a push is fully visible (distribution sends the manifest event
before it moves the tag), so the first look can still see the old digest or no tag at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from image_updater.model import App

log = logging.getLogger("image_updater.daemon")


class RequestQueue:
    """``settle`` (s): delay between a webhook and its cycle, so a burst of events is one
    cycle. ``recheck_after`` (s): when a webhook's cycle changed nothing for an app, look
    once more."""

    def __init__(self, *, settle: float, recheck_after: float) -> None:
        self.settle = settle
        self.recheck_after = recheck_after
        self._pending: set[str] | None = None     # None: nothing; empty set never stored
        self._full = False
        self._recheck: set[str] = set()  # webhook apps to look at again if nothing changed
        self._wake = asyncio.Event()

    def request_full(self) -> None:
        self._full = True
        self._wake.set()

    def request_apps(self, names: set[str]) -> None:
        """Reconcile only these apps after ``settle`` seconds (webhooks)."""
        if names:
            asyncio.get_running_loop().call_later(self.settle, self._enqueue, names, True)

    def queued(self) -> tuple[bool, frozenset[str]]:
        """What the next cycle covers: (a full cycle was requested, apps requested alone)."""
        return self._full, frozenset(self._pending or ())

    def wake(self) -> None:
        """Wake the worker without a request (shutdown)."""
        self._wake.set()

    async def wait(self) -> set[str]:
        """Until something is requested; the webhook apps to recheck after this cycle."""
        await self._wake.wait()
        self._wake.clear()
        recheck, self._recheck = self._recheck, set()
        return recheck

    def next_batch(self, apps: Sequence[App]) -> list[App] | None:
        """The apps the next cycle covers; everything requested so far is merged into it."""
        if self._full:
            self._full, self._pending = False, None
            return list(apps)
        if self._pending:
            names, self._pending = self._pending, None
            return [a for a in apps if a.name in names]
        return None

    def recheck(self, names: set[str], changed: Iterable[str]) -> None:
        """One more look at webhook apps whose cycle changed nothing (see the module doc)."""
        again = names - set(changed)
        if again:
            log.debug("no change yet for app(s) %s after their webhook; checking again in "
                      "%.1f s", ", ".join(sorted(again)), self.recheck_after)
            asyncio.get_running_loop().call_later(self.recheck_after, self._enqueue, again,
                                                  False)

    def _enqueue(self, names: set[str], recheck: bool) -> None:
        self._pending = (self._pending or set()) | names
        if recheck:
            self._recheck |= names
        self._wake.set()
