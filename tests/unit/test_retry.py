"""The shared retry helper and Retry-After parser: time and randomness are injected."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from image_updater.retry import Backoff, RetryLater, parse_retry_after, retry_async, retry_sync

NOW = 1_750_000_000.0


class Final(Exception):
    pass


@pytest.mark.parametrize(("value", "cap", "expected"), [
    (None, None, None), ("", None, None), ("0", None, 0.0), (" 120 ", None, 120.0),
    ("3600", 60.0, 60.0),                                    # capped
    ("1e3", None, None), ("12.5", None, None), ("-5", None, None), ("soon", None, None),
    (email.utils.formatdate(NOW + 12, usegmt=True), None, 12.0),
    (email.utils.formatdate(NOW + 900, usegmt=True), 60.0, 60.0),
    (email.utils.formatdate(NOW - 900, usegmt=True), None, 0.0),  # in the past: now
    ("Mon, 16 Jun 2025 15:07:00", None, None),                # no zone: unusable
    ("Sun Nov  6 08:49:37 1994", None, None),                 # asctime has no zone either
])
def test_parse_retry_after(value: str | None, cap: float | None,
                           expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW, cap=cap) == expected


@given(st.text(max_size=60), st.floats(0.1, 1e6))
def test_parse_retry_after_never_fails_and_respects_the_cap(value: str, cap: float) -> None:
    seconds = parse_retry_after(value, now=NOW, cap=cap)
    assert seconds is None or 0.0 <= seconds <= cap


def test_backoff_full_jitter_and_ceiling() -> None:
    fixed = Backoff(base=0.5, maximum=3.0)
    assert [fixed.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    half = Backoff(base=0.5, maximum=3.0, jitter=lambda: 0.5)
    assert [half.delay(n) for n in range(4)] == [0.25, 0.5, 1.0, 1.5]


class Script:
    """An attempt that fails with the scripted RetryLater delays, then returns "ok"."""

    def __init__(self, *delays: float | None) -> None:
        self.delays = list(delays)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.delays:
            raise RetryLater(f"failure {self.calls}", delay=self.delays.pop(0),
                             final=Final(f"gave up after {self.calls}"))
        return "ok"


def test_sync_retries_wait_the_asked_delay_or_the_backoff_and_report_each() -> None:
    slept: list[float] = []
    reports: list[tuple[int, int, str, float]] = []
    attempt = Script(None, 7.0, None)
    result = retry_sync(attempt, attempts=4, backoff=Backoff(base=1.0, maximum=10.0),
                        sleep=slept.append, on_retry=lambda *r: reports.append(r))
    assert result == "ok" and attempt.calls == 4
    assert slept == [1.0, 7.0, 4.0]  # backoff(0), Retry-After, backoff(2)
    assert reports == [(1, 4, "failure 1", 1.0), (2, 4, "failure 2", 7.0),
                       (3, 4, "failure 3", 4.0)]


@pytest.mark.parametrize("attempts", [0, 1, 3])
def test_sync_raises_the_final_error_when_attempts_run_out(attempts: int) -> None:
    slept: list[float] = []
    attempt = Script(*[None] * 10)
    with pytest.raises(Final, match=f"gave up after {max(1, attempts)}$") as info:
        retry_sync(attempt, attempts=attempts, backoff=Backoff(base=1.0, maximum=10.0),
                   sleep=slept.append)
    assert attempt.calls == max(1, attempts) and len(slept) == max(1, attempts) - 1
    assert isinstance(info.value.__cause__, RetryLater)


def test_other_errors_are_not_retried() -> None:
    def attempt() -> str:
        raise KeyError("permanent")

    with pytest.raises(KeyError):
        retry_sync(attempt, attempts=5, backoff=Backoff(base=1.0, maximum=1.0),
                   sleep=lambda s: pytest.fail("must not sleep"))


def test_async_retries_use_the_injected_sleep() -> None:
    slept: list[float] = []
    script = Script(None, None)

    async def attempt() -> str:
        return script()

    async def sleep(delay: float) -> None:
        slept.append(delay)

    backoff = Backoff(base=2.0, maximum=30.0, jitter=lambda: 0.25)
    assert asyncio.run(retry_async(attempt, attempts=3, backoff=backoff, sleep=sleep)) == "ok"
    assert slept == [0.5, 1.0]
    with pytest.raises(Final):
        asyncio.run(retry_async(lambda: _fail_async(), attempts=2, backoff=backoff,
                                sleep=sleep))


async def _fail_async() -> str:
    raise RetryLater("HTTP 503", final=Final("no"))
