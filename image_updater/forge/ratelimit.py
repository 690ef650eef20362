"""Reading a forge's rate-limit answer: whether a response is one, and how long to wait."""

from __future__ import annotations

import re
from collections.abc import Mapping

from image_updater.retry import parse_retry_after

#: wait when a forge says "rate limited" without saying for how long (GitHub documents
#: "at least one minute" for secondary limits); doubled on each further attempt.
DEFAULT_RATE_LIMIT_WAIT = 60.0


def parse_reset(value: str | None, *, now: float) -> float | None:
    """Seconds until an epoch-seconds reset header (GitHub ``X-RateLimit-Reset``, GitLab
    ``RateLimit-Reset``); at least 1 s so a slightly fast local clock still waits."""
    if value is None or not re.fullmatch(r"[0-9]{1,12}", value.strip()):
        return None
    return max(1.0, float(value.strip()) - now)


def rate_limit_delay(
    status: int, headers: Mapping[str, str], body: str, *, now: float, attempt: int = 0
) -> float | None:
    """How long to wait if this response is a rate limit, else None.

    429 is always a rate limit. A 403 is one only with rate-limit evidence: a
    ``Retry-After`` header, ``X-RateLimit-Remaining: 0`` or a "rate limit" message
    (GitHub's primary and secondary limits); any other 403 is a permission problem.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    retry_after = parse_retry_after(lower.get("retry-after"), now=now)
    exhausted = lower.get("x-ratelimit-remaining", "").strip() == "0"
    if status == 403 and not (
        retry_after is not None or exhausted or "rate limit" in body.lower()
    ):
        return None
    if status not in (403, 429):
        return None
    if retry_after is not None:
        return retry_after
    reset = parse_reset(lower.get("x-ratelimit-reset") or lower.get("ratelimit-reset"), now=now)
    if reset is not None:
        return reset
    return DEFAULT_RATE_LIMIT_WAIT * (2**attempt)
