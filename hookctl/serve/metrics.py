"""Prometheus figures: what `serve` counts as it runs, and what the store holds at a scrape.

Live counters are fed from one place, `Metrics.notify(event)`, with the pipeline's observer
events; the store's gauges come from `StoreCollector`, which `hookctl stats --prometheus` uses
alone (reading the store as it prints), so cron users get the same queue figures in the same
format. `serve` reads them through `Gauges`: refreshed before a scrape when older than
LEVELS_AGE (queue depth, due, oldest due, endpoint health) or COUNTS_AGE (deliveries by rule and status), so a
busy scraper or several costs the store one cheap read a second, not one each.
Encoding is prometheus_client's, never hand-written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hookctl.delivery import observe
from hookctl.serve import reads

if TYPE_CHECKING:
    from hookctl.store.contract import Store
    from hookctl.store.log_records import QueueLevels

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Attempt latency buckets in seconds: around Movidesk's 3 s answer limit and the 2 min cap.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0)
LEVELS_AGE = 1.0  # seconds a scrape may show old queue depth, due count and oldest due age
COUNTS_AGE = 5.0  # seconds for the deliveries by rule and status (a pass over two indexes)


class StoreCollector(Collector):
    """Gauges of what the store holds: deliveries by rule and status, the queue."""

    def __init__(self, figures: Callable[[], reads.QueueFigures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        stored = GaugeMetricFamily(
            "hookctl_stored_deliveries",
            "Deliveries in the store, by rule and status.",
            labels=["rule", "status"],
        )
        for rule, counts in sorted(figures.by_rule.items()):
            for status, count in counts.items():
                stored.add_metric([rule, status], count)
        yield stored
        yield GaugeMetricFamily(
            "hookctl_queue_depth", "Pending deliveries (due or scheduled).", value=figures.pending
        )
        yield GaugeMetricFamily(
            "hookctl_queue_due",
            "Pending deliveries due now, waiting to be sent.",
            value=figures.due,
        )
        yield GaugeMetricFamily(
            "hookctl_oldest_due_age_seconds",
            "How long the longest-waiting due delivery has been due (0: none waits).",
            value=figures.oldest_due_age,
        )
        yield from _endpoint_gauges(figures.endpoints)


# Endpoint health (issue 15), one series per endpoint that has any state; a healthy endpoint
# with no rate has none, so the series stay as few as the endpoints in trouble.
_ENDPOINT_GAUGES = (
    ("breaker_open", "1 while the endpoint's circuit breaker is open (deliveries wait).",
     lambda e: float(e.breaker_open)),
    ("consecutive_failures", "Failed attempts in a row at the endpoint (0 after a success).",
     lambda e: float(e.failures)),
    ("paused", "1 while the endpoint is paused (hookctl endpoints pause, or auto-disabled).",
     lambda e: float(e.paused)),
    ("hold_seconds", "Seconds until the endpoint's Retry-After hold ends (0: none).",
     lambda e: e.held_for),
    ("rate_interval_seconds", "Seconds between sends under the endpoint's rate (0: none).",
     lambda e: e.rate_interval),
)  # fmt: skip


def _endpoint_gauges(endpoints: tuple[reads.EndpointFigures, ...]) -> Iterator[Metric]:
    for name, doc, value in _ENDPOINT_GAUGES:
        family = GaugeMetricFamily(f"hookctl_endpoint_{name}", doc, labels=["endpoint"])
        for endpoint in endpoints:
            family.add_metric([endpoint.endpoint], value(endpoint))
        yield family


Read = Callable[..., Awaitable[object]]


class Gauges:
    """The store's figures as last read, for `serve`'s scrapes; `refresh` before each one."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._levels: QueueLevels | None = None
        self._counts: dict[str, dict[str, int]] = {}
        self._endpoints: tuple[reads.EndpointFigures, ...] = ()
        self._levels_at = self._counts_at = -float("inf")
        self._lock = asyncio.Lock()  # scrapes at the same moment share one read

    async def refresh(self, read: Read, read_apart: Read) -> None:
        """Read what is older than its age allows: the levels with `read` (a millisecond),
        the counts by rule with `read_apart` (on the store's thread, off the loop); each
        calls `fn(store, *args)` on the store's thread, as Runner.read does."""
        async with self._lock:
            if self.clock() - self._levels_at >= LEVELS_AGE:
                self._levels = await read(reads.queue_levels, self.wall())  # type: ignore[assignment]
                self._endpoints = await read(reads.endpoint_figures, self.wall())  # type: ignore[assignment]
                self._levels_at = self.clock()
            if self.clock() - self._counts_at >= COUNTS_AGE:
                self._counts = await read_apart(reads.rule_counts)  # type: ignore[assignment]
                self._counts_at = self.clock()

    def figures(self) -> reads.QueueFigures:
        """The gauges as of the last refresh (the oldest due age as of now)."""
        from hookctl.store.log_records import QueueLevels

        levels = self._levels or QueueLevels(pending=0, due=0, oldest_due_at=None)
        return reads.figures_of(self._counts, levels, self.wall(), self._endpoints)


class Metrics:
    """The registry `serve` exposes on /metrics."""

    def __init__(self) -> None:
        self.gauges = Gauges()
        self.registry = CollectorRegistry()
        self.events_received = Counter(
            "hookctl_events_received",
            "Events accepted and stored, by source.",
            ["source"],
            registry=self.registry,
        )
        self.events_refused = Counter(
            "hookctl_events_refused",
            "Requests refused (nothing stored), by source and reason.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "hookctl_deliveries",
            "Delivery outcomes recorded by this process, by rule and outcome.",
            ["rule", "outcome"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "hookctl_attempts",
            "Attempts made (requests sent), by host and HTTP status class.",
            ["host", "status_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hookctl_attempt_duration_seconds",
            "How long attempts took, by host.",
            ["host"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(self.gauges.figures))

    def notify(self, event: observe.PipelineEvent) -> None:
        """The pipeline's events (the one feed of delivery figures): outcomes and attempts."""
        if isinstance(event, observe.Reported):
            self.deliveries.labels(event.report.rule, event.report.status).inc()
        elif isinstance(event, observe.AttemptFinished):
            code = event.status_code
            host = _host(event.host)
            self.attempts.labels(host, f"{code // 100}xx" if code else "error").inc()
            self.latency.labels(host).observe(event.duration_ms / 1000)

    def refused(self, source: str, reason: str) -> None:
        """Count a refused request."""
        self.events_refused.labels(source, reason).inc()

    def received(self, source: str, count: int) -> None:
        """Count events stored."""
        self.events_received.labels(source).inc(count)

    def text(self) -> bytes:
        """The Prometheus text format of everything."""
        return generate_latest(self.registry)


def _host(url: str) -> str:
    """scheme://host[:port] of a URL, without any user or password in it."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a masked ${PORT}: the host alone
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def store_text(store: Store) -> bytes:
    """The store's gauges alone in the text format (for `hookctl stats --prometheus`)."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(lambda: reads.queue_figures(store, time.time())))
    return generate_latest(registry)
