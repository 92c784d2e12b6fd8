"""Retry scheduling and outcome classification: pure functions, the clock passed in.

The policy itself (presets, parsing a rule's `retry:`) is the rule's: rules/policy.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal

from hookctl.rules.policy import ACCEPTS, RetryPolicy

# Retry-After can stretch a count-based schedule, but a server asking for a day must not
# park a delivery that long: past this we retry anyway.
RETRY_AFTER_CAP = 3600.0

Outcome = Literal["success", "retry", "permanent"]


def next_attempt_at(
    policy: RetryPolicy,
    *,
    attempts: int,
    first_attempt_at: float,
    now: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """When to make the next attempt after `attempts` so far, or None when retries are used up.

    Interval policies are anchored at the first attempt (retry k at first + k*every), so slow
    attempts do not make the schedule drift; when we are late (a retry-loop that did not run)
    missed slots are skipped rather than fired back to back. Schedule policies count each delay
    from `now`, the end of the last attempt. Retry-After can only push an attempt later: up to
    the window's end for windowed policies (so the last attempt still happens), and by at most
    RETRY_AFTER_CAP for count-based ones.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1 (the first attempt has been made)")
    limit = policy.max_retries
    if limit is not None and attempts > limit:
        return None
    window_end = None if policy.window is None else first_attempt_at + policy.window
    if policy.schedule:
        scheduled = now + policy.schedule[attempts - 1]
    else:
        assert policy.every is not None
        slot = max(attempts, math.floor((now - first_attempt_at) / policy.every) + 1)
        scheduled = first_attempt_at + slot * policy.every
    if window_end is not None and scheduled > window_end:
        return None
    delay = scheduled - now
    if policy.jitter:
        delay *= 1 - policy.jitter + 2 * policy.jitter * rand()
    if retry_after is not None and retry_after > 0:
        if window_end is None:
            retry_after = min(retry_after, RETRY_AFTER_CAP)
        delay = max(delay, retry_after)
    when = now + delay
    return when if window_end is None else min(when, window_end)


def classify(status_code: int | None, *, accept: str = "2xx-3xx") -> Outcome:
    """What an attempt's status means: success, retry, or permanent (410 Gone: never retry)."""
    if accept not in ACCEPTS:
        raise ValueError(f"accept: expected {' or '.join(map(repr, ACCEPTS))}, got {accept!r}")
    if status_code is None:
        return "retry"
    if 200 <= status_code < 300 or (accept == "2xx-3xx" and 300 <= status_code < 400):
        return "success"
    if status_code == 410:
        return "permanent"
    return "retry"
