"""`log`: the deliveries in the database, as a table or one in full with its attempts."""

import itertools
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    app,
    handle_errors,
    open_store,
    window_start,
)
from hookctl.errors import UsageError
from hookctl.store.records import STATUSES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hookctl.store.contract import Store
    from hookctl.store.endpoint_records import EndpointLimit
    from hookctl.store.log_records import Delivery
# On a narrow terminal these go first (in this order); ids, statuses and rule names stay whole.
LOG_DROP = ("ticket", "updated", "attempts", "url", "error")
LOG_WHOLE = ("id", "status", "rule")
LOG_COLUMNS = [
    ("updated", "Last update"),
    ("status", "Status"),
    ("attempts", "Attempts"),
    ("url", "URL"),
    ("error", "Error"),
    ("rule", "Rule"),
    ("ticket", "Ticket"),
    ("id", "ID"),
]


def _complete_status(incomplete: str) -> list[str]:
    """Shell completion for --status."""
    return [s for s in STATUSES if s.startswith(incomplete)]


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise UsageError(f"--status: expected one of {', '.join(STATUSES)}, got {value!r}")
    return value


@app.command()
@handle_errors
def log(
    delivery_id: Annotated[
        str | None,
        typer.Argument(
            help="Show one delivery (an id or a unique prefix): its request and every attempt."
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help="pending, succeeded or failed.",
            autocompletion=_complete_status,
        ),
    ] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only this rule's deliveries.")] = None,
    ticket: Annotated[
        str | None, typer.Option("--ticket", "-t", help="Only this ticket's deliveries.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only deliveries created in this window, e.g. 2h or 1d."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="How many, newest first (0 = all).")
    ] = 50,
    db: DbOption = None,
    json_lines: JsonOption = False,
) -> None:
    """The execution log: deliveries newest first, with status, attempts, URL, error, rule and ticket.

    Example: hookctl log --status failed --since 1d
    """
    from hookctl.cli.output import iso, short_time
    from hookctl.cli.tables import rows_table

    store = open_store(db)
    try:
        if delivery_id is not None:
            _show_one(store, delivery_id, json_lines)
            return
        found = store.query(
            status=_status(status),
            rule=rule,
            ticket=ticket,
            since=window_start(since),
            limit=limit or None,
        )
        # The first page read before anything is printed: a database that cannot be read
        # is one error line, not a table header followed by it.
        first = next(found, None)
        limits = store.endpoint_limits(now=time.time())  # what slows endpoints, read once
        rows = itertools.chain([first] if first is not None else [], found)
        if json_lines:
            from hookctl.cli.output import Printer

            printer = Printer(json_lines=True)
            for row in rows:
                printer.json(log_record(row, iso, limits))
            return
        table = (
            {
                **vars(row),
                "updated": short_time(row.updated_at),
                "attempts": _attempts(row),
                "error": waiting(row, limits) or row.error or follows(row),
            }
            for row in rows
        )
        # A terminal gets the rich table even under NO_COLOR (rich drops the colour itself).
        # One line a row: long errors are cut there, and shown whole by `log ID`.
        rows_table(table, LOG_COLUMNS, color=sys.stdout.isatty(), whole=LOG_WHOLE, drop=LOG_DROP)
    finally:
        store.close()


def _attempts(row: "Delivery") -> str:
    """Attempts over the delivery's life, with its replays beside them: `3 (1 replay)`."""
    from hookctl.cli.output import plural

    return f"{row.attempts}" + (f" ({plural(row.replays, 'replay')})" if row.replays else "")


def waiting(row: "Delivery", limits: "Mapping[str, EndpointLimit] | None" = None) -> str | None:
    """Why a pending delivery is not being sent: its endpoint is paused or its breaker open,
    an earlier delivery of its order_by key is still pending, or its endpoint is slowed by a
    Retry-After or busy under its rate (`limits`: the store's endpoint_limits) (issue 15)."""
    if row.status != "pending":
        return None
    if row.endpoint is not None:
        from hookctl.store.endpoint import open_note, paused_note

        if row.paused_since is not None:
            return paused_note(row.endpoint, row.paused_since)
        if row.open_since is not None:
            return open_note(row.endpoint, row.open_since, row.next_probe_at)
    if row.waiting_after is not None:
        from hookctl.cli.output import plural

        tries = plural(row.waiting_after_attempts, "attempt")
        return f"after {row.waiting_after} (pending, {tries})"
    limit = (limits or {}).get(row.endpoint) if row.endpoint is not None else None
    if limit is None:
        return None
    from hookctl.delivery.ratelimit import describe_wait

    return describe_wait(limit, time.time())


def follows(row: "Delivery") -> str | None:
    """That the delivery before it in its order_by key failed for good (it did not wait)."""
    if row.follows_failed is None:
        return None
    return f"follows {row.follows_failed}, which failed for good"


def log_record(
    row: "Delivery", iso: Any, limits: "Mapping[str, EndpointLimit] | None" = None
) -> dict[str, Any]:
    """A delivery as `log --json` prints it: `attempts` over its life, `replays` beside them."""
    return {
        "id": row.id,
        "status": row.status,
        "attempts": row.attempts,
        "replays": row.replays,
        "method": row.method,
        "url": row.url,
        "error": row.error,
        "status_code": row.status_code,
        "rule": row.rule,
        "ticket": row.ticket,
        "event_id": row.event_id,
        "event": row.event_name,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "next_attempt_at": iso(row.next_attempt_at),
        "endpoint": row.endpoint,
        # Why a pending one is not sent: paused or open, not its turn, slowed or at its rate.
        "waiting": waiting(row, limits),
        "order_key": row.order_key,
        "follows_failed": row.follows_failed,  # the one before it in its key failed for good
    }


def _show_one(store: "Store", delivery_id: str, json_lines: bool) -> None:
    from hookctl.cli.output import Printer, iso, plural, safe, short_time
    from hookctl.delivery.prepare import reveal
    from hookctl.render.request import Request

    detail = store.get(delivery_id)
    if detail is None:
        raise UsageError(f"no delivery {delivery_id!r}")
    row = detail.delivery
    stored = detail.request or {}
    masked = (
        reveal(Request.from_dict(stored), stored.get("shown")) if stored.get("method") else None
    )
    attempts = detail.attempt_log
    limits = store.endpoint_limits(now=time.time()) if row.status == "pending" else {}
    if json_lines:
        record = log_record(row, iso, limits)
        record["request"] = masked.to_dict() if masked else None
        record["unrendered"] = row.unrendered
        # The network allow-list the delivery was fired with (what a later process is held to).
        record["allow_net"] = list(stored.get("allow_net") or ())
        record["stored_event"] = detail.event_ref  # the evt_... `plan` replays, if kept
        record["attempts_detail"] = [
            {
                "number": a.number,
                "started_at": iso(a.started_at),
                "duration_ms": round(a.duration_ms or 0, 1),
                "status_code": a.status_code,
                "error": a.error,
                "response_body": a.response_body,
            }
            for a in attempts
        ]
        Printer(json_lines=True).json(record)
        return
    out = sys.stdout
    ticket = safe(str(row.ticket)) if row.ticket else "-"
    out.write(f"{row.id}  {row.status}  rule {safe(row.rule)}  ticket {ticket}\n")
    out.write(f"created {short_time(row.created_at)}, updated {short_time(row.updated_at)}")
    if row.next_attempt_at:
        out.write(f", next attempt {short_time(row.next_attempt_at)}")
    out.write("\n")
    if held := waiting(row, limits):
        out.write(f"waiting: {safe(held)}\n")
    if row.order_key is not None:
        out.write(f"order_by key: {safe(row.order_key)}\n")
    if after := follows(row):
        out.write(f"order: {safe(after)}\n")
    count = plural(row.attempts, "attempt")
    replays = row.replays
    out.write(count + (f", {plural(replays, 'replay')}" if replays else "") + "\n\n")
    if row.unrendered:
        out.write("request: could not be rendered (never sent; replay renders it from its rule)\n")
        out.write(f"{masked.method} {safe(masked.url)}\n" if masked else "")
    elif masked:
        out.write(f"{masked.method} {safe(masked.url)}\n")
        for k, v in masked.headers:
            out.write(f"{safe(k)}: {safe(v)}\n")
        if masked.body is not None:
            out.write(f"\n{safe(masked.body, multiline=True)}\n")
    for a in attempts:
        outcome = f"HTTP {a.status_code}" if a.status_code else "no response"
        # The error of a plain HTTP failure is that same "HTTP 500": say it once.
        if a.error and a.error != outcome:
            outcome += f" - {a.error}"
        took = f"{a.duration_ms or 0:.0f} ms"
        out.write(f"\nattempt {a.number}  {short_time(a.started_at)}  {took}  {safe(outcome)}\n")
        if a.response_body:
            out.write("  " + safe(a.response_body, multiline=True).replace("\n", "\n  ") + "\n")
    last = attempts[-1].error if attempts else None
    if row.error and row.error != last:
        # Nothing sent since the last attempt (could not render, or held): say why.
        out.write(f"\nerror: {safe(row.error)}\n")
