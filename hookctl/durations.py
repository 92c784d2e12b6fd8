"""Durations as rules and messages write them: `500ms`, `30s`, `1h30m`, `1d`.

Parsed for rule fields (`timeout`, `retry.every`, `--every`) and formatted for everything that
shows one (policies, "timed out after 3s", the log), so both sides spell them alike. At the
bottom of the package: rules, delivery, transport and the CLI all use it.
"""

from __future__ import annotations

import math
import re

_DURATION_ERROR = "invalid duration {!r}: use e.g. 30s, 5m, 2h, 1d"
_NUMBER = r"(\d+(?:\.\d+)?)"
# Units largest first, each at most once; `m(?!s)` keeps "500ms" from reading as minutes.
_DURATION = re.compile(
    rf"^(?:{_NUMBER}d)?\s*(?:{_NUMBER}h)?\s*(?:{_NUMBER}m(?!s))?\s*(?:{_NUMBER}s)?\s*(?:{_NUMBER}ms)?$"
)
_UNIT_MILLIS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def parse_duration(value: str | int | float) -> float:
    """Seconds from "500ms", "30s", "5m", "2h", "1d", "1h30m" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_ERROR.format(value))
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(_DURATION_ERROR.format(value))
        return float(value)
    if not isinstance(value, str):
        raise ValueError(_DURATION_ERROR.format(value))
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(_DURATION_ERROR.format(value))
        return seconds
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(_DURATION_ERROR.format(value))
    # Summed in milliseconds, so "1s500ms" is exactly 1.5 rather than 1.5000000000000002.
    millis = sum(
        float(part) * size
        for part, (_, size) in zip(match.groups(), _UNIT_MILLIS, strict=True)
        if part is not None
    )
    return millis / 1000


def format_duration(seconds: float) -> str:
    """A compact spelling, to the millisecond: 1800 -> "30m", 90 -> "1m30s", 86400 -> "24h"."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts = []
    # Days only from two on: "24h" is how helpdesk docs (and people) state a retry window.
    units = _UNIT_MILLIS if millis >= 2 * 86_400_000 else _UNIT_MILLIS[1:]
    for suffix, size in units:
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)
