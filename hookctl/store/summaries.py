"""The log's summaries from rows any backend read: one shape of `Stats`, computed once."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from hookctl.store.log_records import Stats, UrlFailures, UrlTiming


def stats_from(
    since: float | None,
    by_status: dict[str, int],
    by_rule: dict[str, dict[str, int]],
    urls: Mapping[str, dict[str, Any]],
    attempts: Iterable[tuple[str, float, Any]],
) -> Stats:
    """`Stats` from counts by status and rule, per-URL delivery counts (`url`, `deliveries`,
    `failed`, `failed_attempts`), and each attempt as (url, duration in ms, failed)."""
    attempts = list(attempts)
    durations = sorted(a[1] for a in attempts)
    timing: dict[str, list[float]] = defaultdict(list)
    for url, duration, failed in attempts:
        timing[url].append(duration)
        urls[url]["failed_attempts"] += int(failed)
    slowest = sorted(
        (UrlTiming(u, len(d), sum(d) / len(d), max(d)) for u, d in timing.items()),
        key=lambda s: s.avg_ms,
        reverse=True,
    )
    failing = sorted(
        (UrlFailures(**u) for u in urls.values() if u["failed"] or u["failed_attempts"]),
        key=lambda u: (-u.failed, -u.failed_attempts),
    )
    return Stats(
        since=since,
        deliveries=sum(by_status.values()),
        by_status=by_status,
        by_rule=by_rule,
        attempts=len(durations),
        duration_ms={f"p{p}": percentile(durations, p) for p in (50, 95, 99)},
        slowest_urls=slowest[:5],
        failing_urls=failing[:5],
    )


def percentile(ordered: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
