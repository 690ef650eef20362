"""One way to retry, shared by the registry and forge clients: tenacity, with our rules.

An attempt either returns, raises an error that retrying cannot fix (it propagates at
once), or raises :class:`RetryLater`: "worth another try, after ``delay`` seconds if the
server said so, else after the backoff". When the attempts run out, the ``final`` error
that the last ``RetryLater`` carries is raised, so each client keeps its own messages.

The sleep function, the clock and the jitter source are parameters, so tests drive time
and randomness by hand; tenacity only counts attempts and calls them.

``Retry-After`` is parsed here once for everybody: delta-seconds or an HTTP-date
(RFC 9110 §10.2.3), never negative, optionally capped.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import NoReturn, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

T = TypeVar("T")
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]
#: ``on_retry(attempt, attempts, reason, delay)``: called before each wait, for logging;
#: ``attempt`` is the number of the attempt that just failed (1-based).
OnRetry = Callable[[int, int, str, float], None]

_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")


def parse_retry_after(value: str | None, *, now: float, cap: float | None = None
                      ) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or unusable.

    ``now`` is wall-clock seconds (an HTTP-date is wall time). A date in the past waits 0;
    ``cap`` bounds the answer, so a server cannot park a client for a day. The header is
    untrusted: garbage, fractions, negative numbers and dates without a zone are ignored.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None  # no zone: cannot tell when that is
        seconds = max(0.0, when.timestamp() - now)
    return seconds if cap is None else min(seconds, cap)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff: retry ``n`` (0-based) waits up to ``base * 2**n``, at most
    ``maximum``. With ``jitter`` (a source of uniform numbers in [0, 1)) the wait is a
    random fraction of that ceiling ("full jitter"), so many clients do not retry in step."""

    base: float
    maximum: float
    jitter: Callable[[], float] | None = None

    def delay(self, retry: int) -> float:
        ceiling = min(self.maximum, self.base * 2 ** retry)
        return ceiling if self.jitter is None else self.jitter() * ceiling


class RetryLater(Exception):
    """Raised by an attempt that may succeed if repeated.

    ``reason`` is said in logs ("HTTP 503"); ``delay`` overrides the backoff (a server's
    ``Retry-After``); ``final`` is raised when no attempt is left.
    """

    def __init__(self, reason: str, *, final: BaseException, delay: float | None = None
                 ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.delay = delay


def retry_sync(attempt: Callable[[], T], *, attempts: int, backoff: Backoff,
               sleep: SyncSleep, on_retry: OnRetry | None = None) -> T:
    """Call ``attempt`` up to ``attempts`` times (at least once) while it raises RetryLater."""
    try:
        return attempt()  # the common case, without tenacity's bookkeeping (see _Rules)
    except RetryLater as exc:
        rules = _Rules(attempts, backoff, on_retry)
        sleep(rules.first_failure(exc))
    retrying = Retrying(sleep=sleep, stop=rules.stop, wait=rules.wait, retry=rules.retry,
                        before_sleep=rules.before_sleep, reraise=True)
    try:
        return retrying(attempt)
    except RetryLater as exc:
        _give_up(exc)


async def retry_async(attempt: Callable[[], Awaitable[T]], *, attempts: int, backoff: Backoff,
                      sleep: AsyncSleep, on_retry: OnRetry | None = None) -> T:
    """The ``async`` twin of :func:`retry_sync`."""
    try:
        return await attempt()
    except RetryLater as exc:
        rules = _Rules(attempts, backoff, on_retry)
        await sleep(rules.first_failure(exc))
    retrying = AsyncRetrying(sleep=sleep, stop=rules.stop, wait=rules.wait, retry=rules.retry,
                             before_sleep=rules.before_sleep, reraise=True)

    async def call() -> T:
        # tenacity awaits only what looks like a coroutine function; a lambda returning a
        # coroutine would otherwise be taken for a plain function.
        return await attempt()

    try:
        return await retrying(call)
    except RetryLater as exc:
        _give_up(exc)


class _Rules:
    """Our retry rules in tenacity's terms: retry RetryLater only, wait what it asks for
    (else the backoff), stop after ``attempts`` in all.

    The first attempt runs outside tenacity: setting up a tenacity call costs about 40 µs,
    as much as a tenth of a HEAD on a warm connection, and a poll sends one HEAD per
    tracked tag. So tenacity takes over from the second attempt, and its attempt numbers
    are one behind ours.
    """

    retry = retry_if_exception_type(RetryLater)

    def __init__(self, attempts: int, backoff: Backoff, on_retry: OnRetry | None) -> None:
        self.attempts = max(1, attempts)
        self.stop = stop_after_attempt(self.attempts - 1)
        self.backoff = backoff
        self.on_retry = on_retry

    def first_failure(self, later: RetryLater) -> float:
        """The wait after the first attempt failed; give up at once if it was the only one."""
        if self.attempts == 1:
            _give_up(later)
        delay = self._delay(later, 1)
        self._report(later, 1, delay)  # tenacity reports the later ones (before_sleep)
        return delay

    def wait(self, state: RetryCallState) -> float:
        return self._delay(_later(state), state.attempt_number + 1)

    def before_sleep(self, state: RetryCallState) -> None:
        self._report(_later(state), state.attempt_number + 1, state.upcoming_sleep)

    def _delay(self, later: RetryLater, failed: int) -> float:
        return later.delay if later.delay is not None else self.backoff.delay(failed - 1)

    def _report(self, later: RetryLater, failed: int, delay: float) -> None:
        if self.on_retry is not None:
            self.on_retry(failed, self.attempts, later.reason, delay)


def _later(state: RetryCallState) -> RetryLater:
    assert state.outcome is not None  # tenacity waits only after an attempt has ended
    error = state.outcome.exception()
    assert isinstance(error, RetryLater)  # the retry rule admits nothing else
    return error


def _give_up(exc: RetryLater) -> NoReturn:
    if exc.__cause__ is exc.final:
        raise exc.final  # the attempt's own error, retried as is: keep its cause
    raise exc.final from (exc.__cause__ or exc)
