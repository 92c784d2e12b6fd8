"""What hookctl prints: data on stdout (human lines or NDJSON), everything else on stderr."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from hookctl.delivery import observe
from hookctl.delivery.reports import Report, Summary
from hookctl.render.request import MaskedRequest

# Colours are named as rich names them ("bold red"): rich draws tables, trees and progress
# with these names, and `paint` writes the same names as ANSI codes for plain lines, where
# importing rich would cost more than the line (fire prints one per delivery).
STATUS_STYLE = {
    "succeeded": "green",
    "pending": "yellow",
    "failed": "red",
    "duplicate": "dim",
    "dry-run": "cyan",
}
_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


# Characters a terminal acts on rather than shows: C0 controls (ESC starts CSI and OSC
# sequences: colours, cursor moves, title changes, clear-screen), DEL, C1 controls (0x9b is a
# one-byte CSI) and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# JSON escapes C0 itself; these it would leave raw (with ensure_ascii=False).
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, multiline: bool = False) -> str:
    """Text from an event or a receiver, harmless on a terminal: each control character is
    shown as an escape (`\\x1b`), never acted on. `multiline` keeps line breaks and tabs."""
    pattern = _CONTROL_IN_TEXT if multiline else _CONTROL
    return pattern.sub(_escape, text)


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 delivery`, `2 deliveries`, `1 failed delivery`: the count with its noun agreeing."""
    if count == 1:
        return f"{count} {word}"
    if many is None:
        head, _, last = word.rpartition(" ")
        last = (
            last[:-1] + "ies" if last.endswith("y") and last[-2:-1] not in "aeiou" else last + "s"
        )
        many = f"{head} {last}" if head else last
    return f"{count} {many}"


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


def paint(text: str, style: str, on: bool = True) -> str:
    """`text` in a rich style name ("green", "bold red") as ANSI codes, or as is when `on` is false."""
    if not on or not style:
        return text
    return f"\x1b[{';'.join(_ANSI[word] for word in style.split())}m{text}\x1b[0m"


class Printer:
    """Writes reports as NDJSON or human lines; summaries and diagnostics go to stderr.

    A pipeline observer: it prints each delivery as it is decided and each unreadable event.
    """

    def __init__(
        self, *, json_lines: bool = False, quiet: bool = False, color: bool | None = None
    ) -> None:
        self.json_lines = json_lines
        self.quiet = quiet
        self.verbose = bool(os.environ.get("HOOKCTL_VERBOSE"))
        self.out = sys.stdout
        self.err = sys.stderr
        self.color = use_color(self.out) if color is None else color
        self.unset: set[str] = set()  # variables dry-run requests read that are not set here

    def notify(self, event: observe.PipelineEvent) -> None:
        """The pipeline's events this printer shows: decided deliveries, unreadable events, and
        that a repeating service loop has started."""
        if isinstance(event, observe.Reported):
            self.report(event.report)
        elif isinstance(event, observe.Unreadable):
            self.diagnostic(f"Error: {event.bad}")
        elif isinstance(event, observe.Started) and event.every is not None and not self.quiet:
            from hookctl.durations import format_duration

            self.diagnostic(
                f"retry-loop: sending due deliveries every {format_duration(event.every)} until "
                f"stopped (Ctrl-C, or kill -TERM {event.pid}); attempts in flight finish first"
            )

    def json(self, data: Mapping[str, Any]) -> None:
        """One JSON object on one line of stdout."""
        self.out.write(json_line(data) + "\n")

    def report(self, report: Report) -> None:
        """One delivery, as it is decided. With --quiet only what needs attention is shown:
        deliveries that failed for good or are held (cron then mails only those)."""
        if self.json_lines:
            self.json(report_dict(report))
            return
        if report.request is not None:
            self.out.write(format_request(report, report.request))
            self.unset.update(n for n in report.needs if n not in os.environ)
            return
        if self.quiet and not needs_attention(report):
            return
        label = "held" if held(report) else "waiting" if report.waiting else report.status
        status = paint(f"{label:<9}", STATUS_STYLE.get(report.status, "bold"), self.color)
        ticket = f" ticket {report.ticket}" if report.ticket else ""
        line = f"{report.rule}{ticket}  {report.method} {report.url}  {describe(report)}"
        line = f"{status} {safe(line)}"
        if self.verbose:
            where = f"  event {safe(report.source)}:{report.line}" if report.source else ""
            line += f"  [{report.delivery_id or '-'}{where}]"
        self.out.write(line + "\n")
        self.out.flush()

    def diagnostic(self, message: str) -> None:
        """A warning or an error about the input, on stderr."""
        self.err.write(message + "\n")
        self.err.flush()

    def summary(self, summary: Summary) -> None:
        """The closing count of a `fire` on stderr."""
        if self.quiet:
            return
        self.err.write(format_summary(summary) + "\n")
        if self.unset:
            names = ", ".join(sorted(self.unset))
            self.err.write(
                f"note: a real send needs {names} (not set here: shown as ${{NAME}}; "
                "a delivery waits, held, until then)\n"
            )


def json_line(data: Mapping[str, Any]) -> str:
    """One JSON object as one line; control characters stay, escaped by JSON (C1 ones too)."""
    return _JSON_RAW.sub(
        lambda m: f"\\u{ord(m[0]):04x}", json.dumps(data, ensure_ascii=False, default=str)
    )


def held(report: Report) -> bool:
    """Waiting with nothing sent: a setting this process lacks (an unset variable). Not one
    waiting its turn behind an earlier delivery of its order_by key, nor one waiting for its
    endpoint's probe: those go by themselves."""
    return (
        report.status == "pending"
        and not report.sent
        and report.waiting is None
        and not report.probe_wait
    )


def needs_attention(report: Report) -> bool:
    """What --quiet still prints: failed for good, or held until the user fixes something."""
    return report.status == "failed" or held(report)


def describe(report: Report) -> str:
    """The outcome part of a human report line; attempts count over the delivery's life."""
    took = f" in {report.duration_ms:.0f} ms" if report.duration_ms is not None else ""
    if report.status == "succeeded":
        return f"HTTP {report.status_code}{took}"
    if report.status == "duplicate":
        return _duplicate(report)
    if report.status == "dry-run":
        return "not sent (dry run)"
    if report.waiting:
        return f"{report.waiting} by retry-loop or serve"
    reason = report.error or (f"HTTP {report.status_code}" if report.status_code else "failed")
    replays = f", {plural(report.replays, 'replay')}" if report.replays else ""
    if held(report):
        return (
            f"{reason}; nothing sent: the next retry-loop (or replay --now) with it fixed sends it"
        )
    if report.probe_wait:
        return f"{reason}; nothing sent"
    if not report.sent:
        before = (
            f" ({plural(report.attempts, 'attempt')} before{replays})" if report.attempts else ""
        )
        return f"{reason}; nothing sent, failed{before}"
    if report.status == "pending":
        when = short_time(report.next_attempt_at)
        return f"{reason}{took}; attempt {report.attempts}{replays}, next at {when}"
    return f"{reason}{took}; failed after {plural(report.attempts, 'attempt')}{replays}"


def _duplicate(report: Report) -> str:
    """What a duplicate's earlier delivery really is, and what would send it again."""
    earlier = report.delivery_id
    if report.recorded == "failed":
        return (
            f"already recorded: failed ({earlier}); `hookctl replay {earlier}` sends it again, "
            "--force makes a new delivery"
        )
    if report.recorded == "pending":
        return (
            f"already recorded: pending ({earlier}), waiting for retry-loop; "
            "--force makes a new delivery"
        )
    state = f": {report.recorded}" if report.recorded else ""
    return f"already recorded{state} ({earlier}); --force sends it again as a new delivery"


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
        "replays": report.replays,
        "sent": report.sent,
        "held": held(report),
        # Why a pending one was not sent: its turn (order_by), or its endpoint's breaker is open.
        "waiting": report.waiting or (report.error if report.probe_wait else None),
    }
    if report.status == "duplicate":
        data["recorded_status"] = report.recorded
    if report.request is not None:
        data["request"] = report.request.to_dict()
    return data


def format_request(report: Report, request: MaskedRequest) -> str:
    """A request exactly as it would go on the wire (secrets masked), like httpie --offline."""
    where = f"{report.source}:{report.line}" if report.source else "?"
    head = f"# rule {report.rule}, event {report.event_id or '-'} ({where})"
    lines = [head, f"{request.method} {request.url}"]
    lines += [f"{k}: {v}" for k, v in request.headers]
    text = "\n".join(safe(line) for line in lines) + "\n"
    if request.body is not None:
        text += "\n" + safe(request.body, multiline=True) + "\n"
    return text + "\n"


def format_summary(summary: Summary) -> str:
    """`3 events, 2 deliveries: 2 succeeded` and friends."""
    parts = []
    labels = {
        "succeeded": "succeeded",
        "pending": "pending retry",
        "held": "held (nothing sent)",
        "waiting": "waiting their turn (order_by)",
        "probe_wait": "waiting for their endpoint's probe (breaker open)",
        "failed": "failed",
        "duplicates": "duplicate",
        "dry_run": "not sent (dry run)",
    }
    for name, label in labels.items():
        count = getattr(summary, name)
        if count:
            parts.append(plural(count, label) if name == "duplicates" else f"{count} {label}")
    events = plural(summary.events, "event")
    if summary.bad_events:
        events += f" ({summary.bad_events} unreadable)"
    if summary.postponed:
        parts.append(f"{summary.postponed} waiting for their endpoint's rate limit (pending)")
    deliveries = plural(summary.deliveries + summary.postponed, "delivery")
    return f"{events}, {deliveries}" + (": " + ", ".join(parts) if parts else "")


def format_pass_summary(summary: Summary) -> list[str]:
    """What a retry-loop or `replay --now` says at the end: `sent 3: 3 succeeded, ...`, and
    what it handed back or dropped when it stopped."""
    held = f", {summary.held} held (nothing sent)" if summary.held else ""
    if summary.waiting:
        held += f", {summary.waiting} waiting their turn (order_by)"
    if summary.probe_wait:
        held += f", {summary.probe_wait} waiting for their endpoint's probe (breaker open)"
    lines = [
        f"sent {summary.deliveries}: {summary.succeeded} succeeded, {summary.pending} rescheduled, "
        f"{summary.failed} failed{held}"
    ]
    if summary.handed_back:
        lines.append(
            f"stopped: {summary.handed_back} claimed but not yet sent, handed back (due now)"
        )
    if summary.postponed:
        lines.append(
            f"{summary.postponed} waiting their turn under an endpoint's rate limit or "
            "Retry-After: handed back unattempted, due then"
        )
    if summary.lost:
        lines.append(
            f"{plural(summary.lost, 'claim')} lost to another worker (our lease ran out while "
            "they waited): not sent by this one"
        )
    return lines
