"""What hookctl prints: data on stdout (human lines or NDJSON), everything else on stderr."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from hookctl.reports import Report, Summary
from hookctl.request import MaskedRequest

T = TypeVar("T")
PROGRESS_AFTER = 0.5  # seconds a batch runs before a progress bar appears

STATUS_STYLE = {
    "succeeded": "green",
    "pending": "yellow",
    "failed": "red",
    "duplicate": "dim",
    "dry-run": "cyan",
}


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC, the form every --json output uses."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_time(ts: float | None) -> str:
    """Epoch seconds as a short local time for people."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    return stream.isatty() and "NO_COLOR" not in os.environ


class Printer:
    """Writes reports as NDJSON or human lines; summaries and diagnostics go to stderr."""

    def __init__(
        self, *, json_lines: bool = False, quiet: bool = False, color: bool | None = None
    ) -> None:
        self.json_lines = json_lines
        self.quiet = quiet
        self.verbose = bool(os.environ.get("HOOKCTL_VERBOSE"))
        self.out = sys.stdout
        self.err = sys.stderr
        self.color = use_color(self.out) if color is None else color

    def _style(self, text: str, style: str) -> str:
        if not self.color:
            return text
        codes = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "cyan": "36", "bold": "1"}
        return f"\x1b[{codes[style]}m{text}\x1b[0m"

    def json(self, data: Mapping[str, Any]) -> None:
        """One JSON object on one line of stdout."""
        self.out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")

    def report(self, report: Report) -> None:
        """One delivery, as it is decided."""
        if self.json_lines:
            self.json(report_dict(report))
            return
        if report.request is not None:
            self.out.write(format_request(report, report.request))
            return
        status = self._style(f"{report.status:<9}", STATUS_STYLE.get(report.status, "bold"))
        ticket = f" ticket {report.ticket}" if report.ticket else ""
        line = f"{status} {report.rule}{ticket}  {report.method} {report.url}  {describe(report)}"
        if self.verbose:
            where = f"  event {report.source}:{report.line}" if report.source else ""
            line += f"  [{report.delivery_id or '-'}{where}]"
        self.out.write(line + "\n")
        self.out.flush()

    def diagnostic(self, message: str) -> None:
        """A warning or an error about the input, on stderr."""
        self.err.write(message + "\n")
        self.err.flush()

    def summary(self, summary: Summary, *, verb: str = "fired") -> None:
        """The closing count on stderr."""
        if self.quiet:
            return
        self.err.write(format_summary(summary) + "\n")


def describe(report: Report) -> str:
    """The outcome part of a human report line."""
    took = f" in {report.duration_ms:.0f} ms" if report.duration_ms is not None else ""
    if report.status == "succeeded":
        return f"HTTP {report.status_code}{took}"
    if report.status == "duplicate":
        return f"already delivered as {report.delivery_id} (use --force to send again)"
    if report.status == "dry-run":
        return "not sent (dry run)"
    reason = report.error or (f"HTTP {report.status_code}" if report.status_code else "failed")
    if report.status == "pending":
        return f"{reason}{took}; attempt {report.attempts}, next at {short_time(report.next_attempt_at)}"
    attempts = (
        f" after {report.attempts} attempt{'s' if report.attempts != 1 else ''}"
        if report.attempts
        else ""
    )
    return f"{reason}{took}; failed{attempts}"


def report_dict(report: Report) -> dict[str, Any]:
    """A report as the JSON object `--json` prints."""
    data: dict[str, Any] = {
        "id": report.delivery_id,
        "status": report.status,
        "rule": report.rule,
        "event_id": report.event_id,
        "ticket": report.ticket,
        "method": report.method,
        "url": report.url,
        "attempts": report.attempts,
        "status_code": report.status_code,
        "error": report.error,
        "duration_ms": round(report.duration_ms, 1) if report.duration_ms is not None else None,
        "next_attempt_at": iso(report.next_attempt_at),
        "source": report.source,
        "line": report.line,
    }
    if report.request is not None:
        data["request"] = report.request.to_dict()
    return data


def format_request(report: Report, request: MaskedRequest) -> str:
    """A request exactly as it would go on the wire (secrets masked), like httpie --offline."""
    where = f"{report.source}:{report.line}" if report.source else "?"
    head = f"# rule {report.rule}, event {report.event_id or '-'} ({where})"
    lines = [head, f"{request.method} {request.url}"]
    lines += [f"{k}: {v}" for k, v in request.headers]
    text = "\n".join(lines) + "\n"
    if request.body is not None:
        text += "\n" + request.body + "\n"
    return text + "\n"


def format_summary(summary: Summary) -> str:
    """`3 events, 2 deliveries: 2 succeeded` and friends."""
    parts = []
    for name in ("succeeded", "pending", "failed", "duplicates", "dry_run"):
        count = getattr(summary, name)
        if count:
            label = {"pending": "pending retry", "dry_run": "not sent (dry run)"}.get(name, name)
            parts.append(f"{count} {label}")
    events = f"{summary.events} event{'s' if summary.events != 1 else ''}"
    if summary.bad_events:
        events += f" ({summary.bad_events} unreadable)"
    deliveries = f"{summary.deliveries} deliver{'ies' if summary.deliveries != 1 else 'y'}"
    return f"{events}, {deliveries}" + (": " + ", ".join(parts) if parts else "")


def rows_table(
    rows: Iterable[Mapping[str, Any]], columns: list[tuple[str, str]], *, color: bool
) -> None:
    """A table on stdout: rich on a terminal, tab-separated when piped."""
    if not color:
        out = sys.stdout
        out.write("\t".join(title for _, title in columns) + "\n")
        for row in rows:
            out.write("\t".join(_cell(row.get(key)) for key, _ in columns) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for _, title in columns:
        table.add_column(title, overflow="fold")
    for row in rows:
        cells = []
        for key, _ in columns:
            text = _cell(row.get(key))
            style = STATUS_STYLE.get(text) if key == "status" else None
            cells.append(Text(text, style=style or ""))
        table.add_row(*cells)
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value).replace("\t", " ").replace("\n", " ")


class ProgressBar:
    """A transient progress bar on stderr for long batches; silent unless stderr is a terminal.

    It also stays away when stdout is the same terminal: there the line printed per delivery is
    the progress, and a live bar would tear those lines apart. It appears only once a batch has
    run for PROGRESS_AFTER seconds, so short runs never flicker.
    """

    def __init__(self, label: str, *, total: int | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled and sys.stderr.isatty() and not sys.stdout.isatty()
        self.done = 0
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def advance(self, _item: object = None) -> None:
        """Count one item done (a report, when used as a pipeline callback)."""
        self.done += 1
        if (
            self._bar is None
            and self.enabled
            and time.monotonic() - self._started >= PROGRESS_AFTER
        ):
            self._start()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def wrap(self, emit: Callable[[T], None]) -> Callable[[T], None]:
        """`emit`, then one step of the bar: for a pipeline's per-report callback."""

        def both(item: T) -> None:
            emit(item)
            self.advance(item)

        return both

    def stop(self) -> None:
        """Remove the bar (it leaves no trace on the terminal)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _start(self) -> None:
        from rich import progress
        from rich.console import Console

        counter = (
            progress.MofNCompleteColumn() if self.total else progress.TextColumn("{task.completed}")
        )
        self._bar = progress.Progress(
            progress.TextColumn("{task.description}"),
            progress.BarColumn(),
            counter,
            progress.TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        self._bar.start()
