"""A rule's delivery policy: its `retry:` (presets, parsing, the form stored with a delivery)
and the `accept:` choices (which answers count as delivered).

When a policy schedules the next attempt, and what an answer means, is delivery's
(delivery/policy.py); this is the model a rule holds, beside the rule model.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookctl.durations import format_duration, parse_duration

# `accept:`: which status codes mean delivered. Here, not in webhook.py, because the retry-loop
# classifies answers with it and must not import the templating the webhook spec needs.
ACCEPTS = ("2xx-3xx", "2xx")


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed delivery: an explicit schedule, or a fixed interval with limits."""

    name: str
    schedule: tuple[float, ...] = ()  # delays after attempt 1, 2, ...
    every: float | None = None  # fixed interval, anchored at the first attempt
    retries: int | None = None  # max attempts after the first
    window: float | None = None  # `for:` total time from the first attempt
    jitter: float = 0.0  # fraction: delay * uniform(1 - jitter, 1 + jitter)

    def __post_init__(self) -> None:
        # Stored policies come back through from_dict, so the invariants live here too.
        if self.schedule and self.every is not None:
            raise ValueError("a retry policy has either a schedule or an interval, not both")
        if self.schedule and (self.retries is not None or self.window is not None):
            raise ValueError("a retry schedule cannot also have retries or a window")
        if any(d <= 0 for d in self.schedule):
            raise ValueError("retry schedule delays must be greater than 0")
        if self.every is not None:
            if self.every <= 0:
                raise ValueError("retry interval must be greater than 0")
            if self.retries is None and self.window is None:
                raise ValueError("a retry interval needs retries or a window")
        elif not self.schedule and (self.retries or self.window is not None):
            raise ValueError("retries and window need a retry interval")
        if self.retries is not None and self.retries < 0:
            raise ValueError("retries must not be negative")
        if self.window is not None and self.window <= 0:
            raise ValueError("retry window must be greater than 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be a fraction from 0 up to (not including) 1")

    @property
    def max_retries(self) -> int | None:
        """How many retries at most, or None when only the window limits them."""
        if self.schedule:
            return len(self.schedule)
        if self.every is None:
            return 0
        return self.retries

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form stored with each delivery (unset fields left out)."""
        data: dict[str, Any] = {"name": self.name}
        if self.schedule:
            data["schedule"] = list(self.schedule)
        for key in ("every", "retries", "window"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.jitter:
            data["jitter"] = self.jitter
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """Rebuild a policy from to_dict's output."""
        # "breaker" beside them is the breaker's settings (rules/breaker.py), not the policy's.
        unknown = set(data) - {
            "name",
            "schedule",
            "every",
            "retries",
            "window",
            "jitter",
            "breaker",
        }
        if unknown:
            raise ValueError(f"unknown retry policy fields: {', '.join(sorted(unknown))}")
        return cls(
            name=data["name"],
            schedule=tuple(float(d) for d in data.get("schedule", ())),
            every=None if data.get("every") is None else float(data["every"]),
            retries=data.get("retries"),
            window=None if data.get("window") is None else float(data["window"]),
            jitter=float(data.get("jitter", 0.0)),
        )

    def describe(self) -> str:
        """A short human summary: "every 30m for 24h", "4 retries every 30s", "5s, 5m, ..."."""
        if self.schedule:
            text = ", ".join(format_duration(d) for d in self.schedule)
        elif self.every is None:
            text = "no retries"
        else:
            text = f"every {format_duration(self.every)}"
            if self.retries is not None:
                noun = "retry" if self.retries == 1 else "retries"
                text = f"{self.retries} {noun} {text}"
            if self.window is not None:
                text += f" for {format_duration(self.window)}"
        if self.jitter:
            text += f" (±{self.jitter:.0%} jitter)"
        return text


PRESETS: dict[str, RetryPolicy] = {
    "eddydesk": RetryPolicy("eddydesk", every=1800.0, window=86400.0),
    "movidesk": RetryPolicy("movidesk", every=30.0, retries=4),
    # Standard Webhooks / Svix style back-off; jitter spreads a burst of failures apart.
    "exponential": RetryPolicy(
        "exponential",
        schedule=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0),
        jitter=0.1,
    ),
    "none": RetryPolicy("none"),
}
DEFAULT_POLICY = PRESETS["eddydesk"]
_POLICY_KEYS = ("every", "for", "retries", "schedule", "jitter")


def parse_policy(value: Any) -> RetryPolicy:
    """A policy from a preset name or a mapping such as {every: 30m, for: 24h}."""
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, str):
        return _preset(value)
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected a preset name ({', '.join(PRESETS)}) or a mapping such as "
            f"{{every: 30m, for: 24h}}, got {type(value).__name__}"
        )
    for key in value:
        if key not in _POLICY_KEYS:
            close = difflib.get_close_matches(str(key), _POLICY_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown key {key!r} ({hint}allowed: {', '.join(_POLICY_KEYS)})")
    has_every, has_schedule = "every" in value, "schedule" in value
    if has_every and has_schedule:
        raise ValueError("use either 'every' or 'schedule', not both")
    if not has_every and not has_schedule:
        raise ValueError("missing 'every' (e.g. every: 30m, for: 24h) or 'schedule' (e.g. [5s])")
    jitter = _jitter(value["jitter"]) if "jitter" in value else 0.0
    if has_schedule:
        for key in ("for", "retries"):
            if key in value:
                raise ValueError(f"{key!r} cannot be combined with 'schedule'")
        return RetryPolicy("custom", schedule=_schedule(value["schedule"]), jitter=jitter)
    if "for" not in value and "retries" not in value:
        raise ValueError("'every' needs 'for' (e.g. for: 24h) or 'retries' (e.g. retries: 4)")
    every = _positive_duration(value["every"], "every")
    window = _positive_duration(value["for"], "for") if "for" in value else None
    if window is not None and window < every:
        raise ValueError(
            f"for: {format_duration(window)} is shorter than every: {format_duration(every)}, "
            "so no retry would happen"
        )
    retries = _retries(value["retries"]) if "retries" in value else None
    return RetryPolicy("custom", every=every, retries=retries, window=window, jitter=jitter)


def _preset(name: str) -> RetryPolicy:
    policy = PRESETS.get(name.strip().lower())
    if policy is not None:
        return policy
    close = difflib.get_close_matches(name.strip().lower(), PRESETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown retry policy {name!r} ({hint}presets: {', '.join(PRESETS)})")


def _positive_duration(value: Any, key: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"{key}: must be greater than 0, got {value!r}")
    return seconds


def _schedule(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("schedule: expected a non-empty list of delays such as [5s, 1m, 10m]")
    return tuple(_positive_duration(d, f"schedule[{i}]") for i, d in enumerate(value))


def _retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"retries: expected a whole number greater than 0, got {value!r}")
    return value


def _jitter(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"jitter: expected a fraction from 0 to below 1 (e.g. 0.1), got {value!r}")
    return float(value)
