"""The clock types every adapter takes as a parameter, so tests pass their own.

Two kinds, named for what they return, because mixing them is a silent bug: a wall clock
compared with a monotonic one gives nonsense without an error.
"""

from __future__ import annotations

from collections.abc import Callable

#: seconds since the epoch (``time.time``): for dates a server sends (Retry-After, token
#: ``issued_at``, rate-limit resets) and for timestamps shown to people
WallClock = Callable[[], float]
#: seconds on a monotonic clock (``time.monotonic``): only differences mean anything
MonotonicClock = Callable[[], float]
