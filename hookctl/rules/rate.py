"""A rule's `rate:` (issue 15): at most N requests a second or a minute to the rule's endpoint.

Parsed here for rules (one-line errors, exit 3) and again by the pipeline from the text each
delivery stores, so a retry-loop that never loads the rules still knows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_PER_SECOND = 1000  # faster than this is no limit a receiver states; and slots stay >= 1 ms
_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
EXAMPLE = "expected a rate such as 5/s or 30/m (requests per second or per minute)"


@dataclass(frozen=True)
class Rate:
    """`count` requests per `per` seconds: sent one every `interval` seconds, never in a burst."""

    count: int
    per: float  # 1.0 (a second) or 60.0 (a minute)

    @property
    def interval(self) -> float:
        """Seconds between two requests to the endpoint."""
        return self.per / self.count

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.per == 1.0 else 'm'}"


@lru_cache(maxsize=256)  # the pipeline parses each claim's stored text: a handful of values
def parse_rate(value: Any) -> Rate:
    """`5/s`, `30/m` (also `/sec`, `/min`, `/second`, `/minute`) as a Rate; ValueError says why."""
    if not isinstance(value, str):
        raise ValueError(EXAMPLE)
    match = _RATE.match(value.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{EXAMPLE}, got {value!r}")
    count, per = int(match.group(1)), _UNITS[match.group(2)]
    if count < 1:
        raise ValueError(f"a rate of {value!r} sends nothing; give at least 1")
    if count / per > MAX_PER_SECOND:
        raise ValueError(f"{value!r} is faster than {MAX_PER_SECOND}/s, the most a rate may be")
    return Rate(count, per)
