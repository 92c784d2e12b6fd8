"""What a pipeline run tells its caller: a Report per delivery, and a Summary of them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hookctl.render.request import MaskedRequest

ReportStatus = Literal["succeeded", "pending", "failed", "duplicate", "dry-run"]


@dataclass(slots=True)
class Report:
    """One delivery's result, as `fire` and `retry-loop` print it."""

    rule: str
    status: ReportStatus
    method: str
    url: str
    delivery_id: str | None = None
    event_id: str | None = None
    ticket: str | None = None
    source: str | None = None
    line: int | None = None
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    next_attempt_at: float | None = None
    request: MaskedRequest | None = None
    sent: bool = True  # False: nothing went out (could not render, or held back)
    replays: int = 0
    recorded: str | None = None  # a duplicate: the status of the delivery already recorded
    needs: tuple[str, ...] = ()  # a dry run: the variables a real send reads
    waiting: str | None = None  # pending, unsent: waiting its turn (order_by), not held
    probe_wait: bool = False  # pending, unsent: its endpoint's breaker is open (delivery/health.py)


@dataclass
class Summary:
    """Counts for the closing line on stderr and for the exit code."""

    events: int = 0
    bad_events: int = 0
    deliveries: int = 0
    succeeded: int = 0
    pending: int = 0
    failed: int = 0
    duplicates: int = 0
    dry_run: int = 0
    held: int = 0  # pending with nothing sent: waiting for a setting this process lacks
    waiting: int = 0  # pending with nothing sent yet: waiting its turn after an earlier one
    probe_wait: int = 0  # pending with nothing sent: handed back until its endpoint's next probe
    handed_back: int = 0  # claimed, then released unattempted when the run was stopped
    lost: int = 0  # claimed, then taken over by another worker (our lease ran out): not sent
    postponed: int = 0  # claimed, then given back to wait for its endpoint's rate (issue 15)

    def merge(self, other: Summary) -> None:
        """Add another run's counts to these (a service's passes, summed)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def add(self, report: Report) -> None:
        """Count one report."""
        self.deliveries += 1
        if report.status == "dry-run":
            self.dry_run += 1
        elif report.status == "duplicate":
            self.duplicates += 1
        elif report.waiting:
            self.waiting += 1
        elif report.status == "pending" and report.probe_wait:
            self.probe_wait += 1
        elif report.status == "pending" and not report.sent:
            self.held += 1
        else:
            setattr(self, report.status, getattr(self, report.status) + 1)
