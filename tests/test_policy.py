"""Retry schedules, Retry-After, jitter, outcome classification and durations."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookctl.delivery.policy import RETRY_AFTER_CAP, classify, next_attempt_at
from hookctl.durations import format_duration, parse_duration
from hookctl.rules.policy import DEFAULT_POLICY, PRESETS, RetryPolicy, parse_policy

T = 1_700_000_000.0  # first attempt


def on_time_schedule(policy: RetryPolicy, rand: float = 0.5) -> list[float]:
    """Offsets from the first attempt of every retry, each made exactly when scheduled."""
    times: list[float] = []
    now = T
    for attempts in range(1, 1000):
        when = next_attempt_at(
            policy, attempts=attempts, first_attempt_at=T, now=now, rand=lambda: rand
        )
        if when is None:
            return times
        times.append(when - T)
        now = when
    raise AssertionError("schedule never ends")


# durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        ("1h 30m", 5400.0),
        ("90", 90.0),
        ("0.25", 0.25),
        ("0s", 0.0),
        (90, 90.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "abc", "5x", "-5s", "1m1h", "5 minutes", "nan", "ms", -1, True]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 30s, 5m, 2h, 1d"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_parse_duration_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("soon")
    assert str(info.value) == "invalid duration 'soon': use e.g. 30s, 5m, 2h, 1d"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1800, "30m"),
        (90, "1m30s"),
        (0.5, "500ms"),
        (0, "0s"),
        (86400, "24h"),
        (5400, "1h30m"),
        (90061.5, "25h1m1s500ms"),
        (172800, "2d"),
        (266400, "3d2h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=10**11))
def test_duration_round_trip(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


# presets


def test_default_is_eddydesk() -> None:
    assert DEFAULT_POLICY is PRESETS["eddydesk"]
    assert set(PRESETS) == {"eddydesk", "movidesk", "exponential", "none"}


def test_eddydesk_every_30m_for_24h() -> None:
    times = on_time_schedule(PRESETS["eddydesk"])
    assert len(times) == 48
    assert times == [1800.0 * k for k in range(1, 49)]
    assert times[-1] == 86400.0


def test_movidesk_four_retries_30s_apart() -> None:
    assert on_time_schedule(PRESETS["movidesk"]) == [30.0, 60.0, 90.0, 120.0]


def test_exponential_standard_webhooks_schedule() -> None:
    delays = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    times = on_time_schedule(PRESETS["exponential"], rand=0.5)  # 0.5: jitter factor exactly 1
    assert times == [float(sum(delays[: k + 1])) for k in range(len(delays))]


def test_none_never_retries() -> None:
    assert on_time_schedule(PRESETS["none"]) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("eddydesk", "every 30m for 24h"),
        ("movidesk", "4 retries every 30s"),
        ("exponential", "5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h (±10% jitter)"),
        ("none", "no retries"),
    ],
)
def test_describe_presets(name: str, text: str) -> None:
    assert PRESETS[name].describe() == text


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_by_name(name: str) -> None:
    assert parse_policy(name) is PRESETS[name]
    assert parse_policy(f" {name.upper()} ") is PRESETS[name]


@pytest.mark.parametrize(
    "policy",
    [
        *PRESETS.values(),
        RetryPolicy("custom", every=60.0, retries=3, window=600.0, jitter=0.2),
        RetryPolicy("custom", schedule=(1.0, 2.5)),
    ],
)
def test_dict_round_trip(policy: RetryPolicy) -> None:
    assert RetryPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown retry policy fields: colour"):
        RetryPolicy.from_dict({"name": "x", "every": 1, "retries": 1, "colour": "red"})


# custom forms


def test_custom_every_for() -> None:
    policy = parse_policy({"every": "1h", "for": "6h"})
    assert policy == RetryPolicy("custom", every=3600.0, window=21600.0)
    assert on_time_schedule(policy) == [3600.0 * k for k in range(1, 7)]
    assert policy.describe() == "every 1h for 6h"


def test_custom_every_retries_matches_movidesk() -> None:
    policy = parse_policy({"every": "30s", "retries": 4})
    assert on_time_schedule(policy) == on_time_schedule(PRESETS["movidesk"])
    assert policy.describe() == "4 retries every 30s"


def test_custom_every_retries_and_for_stops_at_whichever_first() -> None:
    policy = parse_policy({"every": "10s", "retries": 100, "for": "35s"})
    assert on_time_schedule(policy) == [10.0, 20.0, 30.0]
    assert policy.describe() == "100 retries every 10s for 35s"


def test_custom_schedule_with_jitter() -> None:
    policy = parse_policy({"schedule": ["5s", "1m", 600], "jitter": 0.1})
    assert policy.schedule == (5.0, 60.0, 600.0)
    assert policy.jitter == 0.1
    assert policy.describe() == "5s, 1m, 10m (±10% jitter)"
    assert on_time_schedule(policy) == [5.0, 65.0, 665.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"evry": "30s", "for": "1h"}, "unknown key 'evry' (did you mean 'every'? allowed: every,"),
        ({"every": "30s", "for": "1h", "colour": 1}, "unknown key 'colour' (allowed: every, for,"),
        ({}, "missing 'every'"),
        ({"for": "1h"}, "missing 'every'"),
        ({"every": "30s", "schedule": ["5s"]}, "use either 'every' or 'schedule', not both"),
        ({"every": "30s"}, "'every' needs 'for' (e.g. for: 24h) or 'retries'"),
        ({"every": 0, "for": "1h"}, "every: must be greater than 0"),
        ({"every": "0s", "retries": 3}, "every: must be greater than 0"),
        ({"every": "-5s", "for": "1h"}, "every: invalid duration '-5s'"),
        ({"every": "30s", "for": "forever"}, "for: invalid duration 'forever'"),
        ({"every": "30s", "for": 0}, "for: must be greater than 0"),
        ({"every": "1h", "for": "30m"}, "for: 30m is shorter than every: 1h"),
        ({"every": "30s", "retries": 0}, "retries: expected a whole number greater than 0, got 0"),
        ({"every": "30s", "retries": -1}, "retries: expected a whole number greater than 0"),
        ({"every": "30s", "retries": "4"}, "retries: expected a whole number greater than 0"),
        ({"every": "30s", "retries": True}, "retries: expected a whole number greater than 0"),
        ({"every": "30s", "retries": 2.5}, "retries: expected a whole number greater than 0"),
        ({"schedule": []}, "schedule: expected a non-empty list"),
        ({"schedule": "5s"}, "schedule: expected a non-empty list"),
        ({"schedule": ["5s", "0s"]}, "schedule[1]: must be greater than 0"),
        ({"schedule": ["5s", "later"]}, "schedule[1]: invalid duration 'later'"),
        ({"schedule": ["5s"], "for": "1h"}, "'for' cannot be combined with 'schedule'"),
        ({"schedule": ["5s"], "retries": 2}, "'retries' cannot be combined with 'schedule'"),
        ({"every": "30s", "retries": 4, "jitter": 1.5}, "jitter: expected a fraction"),
        ({"every": "30s", "retries": 4, "jitter": -0.1}, "jitter: expected a fraction"),
        ({"every": "30s", "retries": 4, "jitter": "10%"}, "jitter: expected a fraction"),
        ("eddydsk", "unknown retry policy 'eddydsk' (did you mean 'eddydesk'? presets: eddydesk,"),
        (
            "linear",
            "unknown retry policy 'linear' (presets: eddydesk, movidesk, exponential, none)",
        ),
        (42, "expected a preset name (eddydesk, movidesk, exponential, none) or a mapping"),
        (None, "got NoneType"),
    ],
)
def test_invalid_policies(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_policy(value)
    assert message in str(info.value)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError):
        RetryPolicy("x", every=30.0)  # no limit: would retry forever
    with pytest.raises(ValueError):
        RetryPolicy("x", every=30.0, schedule=(5.0,))
    with pytest.raises(ValueError):
        RetryPolicy("x", every=30.0, retries=1, jitter=1.0)


# next_attempt_at edge cases


def test_attempts_must_be_at_least_one() -> None:
    with pytest.raises(ValueError):
        next_attempt_at(DEFAULT_POLICY, attempts=0, first_attempt_at=T, now=T)


def test_slow_attempt_does_not_shift_interval_schedule() -> None:
    # The first attempt took 3 s; the retry stays on the 30-minute grid.
    assert next_attempt_at(DEFAULT_POLICY, attempts=1, first_attempt_at=T, now=T + 3) == T + 1800


def test_late_retry_loop_skips_missed_slots() -> None:
    # Retry 3 was due at +1h30m but the loop only ran at +5h00m10s: no burst of catch-ups.
    when = next_attempt_at(DEFAULT_POLICY, attempts=3, first_attempt_at=T, now=T + 18010)
    assert when == T + 19800
    late_count_based = next_attempt_at(
        PRESETS["movidesk"], attempts=2, first_attempt_at=T, now=T + 95
    )
    assert late_count_based == T + 120


def test_late_past_window_gives_up() -> None:
    assert next_attempt_at(DEFAULT_POLICY, attempts=10, first_attempt_at=T, now=T + 86401) is None


def test_retry_after_longer_than_schedule_is_honoured() -> None:
    when = next_attempt_at(
        DEFAULT_POLICY, attempts=1, first_attempt_at=T, now=T + 1, retry_after=3600
    )
    assert when == T + 3601


def test_retry_after_shorter_than_schedule_keeps_schedule() -> None:
    when = next_attempt_at(
        DEFAULT_POLICY, attempts=1, first_attempt_at=T, now=T + 1, retry_after=10
    )
    assert when == T + 1800


def test_retry_after_clamped_to_window_end() -> None:
    # Retry 47 at +23h30m gets a 503 asking for 2 h: the last attempt still happens, at +24h.
    now = T + 47 * 1800
    when = next_attempt_at(
        DEFAULT_POLICY, attempts=48, first_attempt_at=T, now=now, retry_after=7200
    )
    assert when == T + 86400


def test_retry_after_capped_for_count_based_policies() -> None:
    when = next_attempt_at(
        PRESETS["movidesk"], attempts=1, first_attempt_at=T, now=T, retry_after=86400
    )
    assert when == T + RETRY_AFTER_CAP
    when = next_attempt_at(
        PRESETS["exponential"],
        attempts=1,
        first_attempt_at=T,
        now=T,
        retry_after=120,
        rand=lambda: 0.5,
    )
    assert when == T + 120


def test_retry_after_does_not_extend_exhausted_retries() -> None:
    policy = PRESETS["movidesk"]
    assert next_attempt_at(policy, attempts=5, first_attempt_at=T, now=T, retry_after=5) is None


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_bounds(rand: float, factor: float) -> None:
    policy = parse_policy({"every": "100s", "retries": 3, "jitter": 0.2})
    when = next_attempt_at(policy, attempts=1, first_attempt_at=T, now=T, rand=lambda: rand)
    assert when == pytest.approx(T + 100 * factor, abs=1e-3)


def test_jitter_never_passes_window_end() -> None:
    policy = parse_policy({"every": "1h", "for": "2h", "jitter": 0.5})
    when = next_attempt_at(policy, attempts=2, first_attempt_at=T, now=T + 3600, rand=lambda: 0.99)
    assert when == T + 7200


# classify


@pytest.mark.parametrize(
    ("status", "accept", "outcome"),
    [
        (200, "2xx-3xx", "success"),
        (204, "2xx-3xx", "success"),
        (299, "2xx", "success"),
        (301, "2xx-3xx", "success"),
        (399, "2xx-3xx", "success"),
        (301, "2xx", "retry"),
        (None, "2xx-3xx", "retry"),
        (None, "2xx", "retry"),
        (410, "2xx-3xx", "permanent"),
        (410, "2xx", "permanent"),
        (400, "2xx-3xx", "retry"),
        (404, "2xx-3xx", "retry"),
        (429, "2xx-3xx", "retry"),
        (500, "2xx-3xx", "retry"),
        (503, "2xx", "retry"),
        (100, "2xx-3xx", "retry"),
    ],
)
def test_classify(status: int | None, accept: str, outcome: str) -> None:
    assert classify(status, accept=accept) == outcome


def test_classify_default_accepts_redirects() -> None:
    assert classify(302) == "success"


def test_classify_rejects_unknown_accept() -> None:
    with pytest.raises(ValueError, match="accept: expected '2xx-3xx' or '2xx', got '3xx'"):
        classify(200, accept="3xx")
