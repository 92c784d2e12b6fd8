"""A rule's `breaker:` key: its endpoint's circuit breaker settings, validated.

    breaker:
      failures: 5        # consecutive failures that open the endpoint
      probe: 30s         # the first probe after opening ...
      probe_max: 5m      # ... each failed one doubling the wait, up to this
      disable_after: 24h # no success for this long: the endpoint is paused, one notice (or: never)
      on_gone: pause     # a 410 Gone pauses the endpoint (or: fail, the delivery fails for good)

`breaker: off` leaves the rule's attempts out of its endpoint's breaker. Every key is optional
(store/endpoint_records.py Breaker holds the defaults).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from hookctl.durations import parse_duration
from hookctl.store.endpoint_records import DEFAULT_BREAKER, Breaker

KEYS = ("failures", "probe", "probe_max", "disable_after", "on_gone")
_MAX_FAILURES = 1000


class BreakerError(ValueError):
    """A bad `breaker:` setting; `key` is the one at fault (None: the value as a whole)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_breaker(value: Any) -> Breaker:
    """The settings `breaker:` gives (off/false: disabled; on/true: the defaults)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return dataclasses.replace(DEFAULT_BREAKER, enabled=False)
    if value is True or (isinstance(value, str) and value.strip().lower() == "on"):
        return DEFAULT_BREAKER
    if not isinstance(value, Mapping):
        raise BreakerError(
            "expected a mapping such as {failures: 5, probe: 30s, disable_after: 24h}, or off"
        )
    for key in value:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BreakerError(f"unknown key {key!r} ({hint}allowed: {', '.join(KEYS)})", None)
    settings: dict[str, Any] = {}
    if "failures" in value:
        n = value["failures"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_FAILURES:
            raise BreakerError(
                f"expected a whole number from 1 to {_MAX_FAILURES}, got {n!r}", "failures"
            )
        settings["failures"] = n
    for key in ("probe", "probe_max"):
        if key in value:
            settings[key] = _duration(value[key], key)
    probe = settings.get("probe", DEFAULT_BREAKER.probe)
    probe_max = settings.get("probe_max", max(DEFAULT_BREAKER.probe_max, probe))
    if probe_max < probe:
        raise BreakerError("probe_max must not be shorter than probe", "probe_max")
    settings["probe_max"] = probe_max
    if "disable_after" in value:
        raw = value["disable_after"]
        if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("never", "off")):
            settings["disable_after"] = None
        else:
            settings["disable_after"] = _duration(raw, "disable_after")
    if "on_gone" in value:
        gone = value["on_gone"]
        if gone not in ("pause", "fail"):
            raise BreakerError(f"expected pause or fail, got {gone!r}", "on_gone")
        settings["on_gone"] = gone
    return dataclasses.replace(DEFAULT_BREAKER, **settings)


def _duration(value: Any, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise BreakerError(str(exc), key) from None
    if seconds <= 0:
        raise BreakerError(f"must be greater than 0, got {value!r}", key)
    return seconds


def describe_breaker(breaker: Breaker) -> str:
    """One line for `explain`: "opens after 5 failures; probe 30s, up to 5m; ..."."""
    from hookctl.durations import format_duration

    if not breaker.enabled:
        return "off (its attempts do not count for its endpoint's breaker)"
    disable = (
        f"paused after {format_duration(breaker.disable_after)} without success"
        if breaker.disable_after is not None
        else "never paused automatically"
    )
    gone = "410 pauses the endpoint" if breaker.on_gone == "pause" else "410 fails the delivery"
    return (
        f"opens after {breaker.failures} consecutive failures; first probe "
        f"{format_duration(breaker.probe)} after, up to every {format_duration(breaker.probe_max)}; "
        f"{disable}; {gone}"
    )
