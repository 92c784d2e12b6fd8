"""`log`, `replay`, `purge` and `db`: reading and tending the delivery database."""

import sys
import time
from typing import Annotated, Any

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    app,
    exit_with,
    handle_errors,
    network_guard,
    open_store,
    window_start,
)
from hookctl.cli.commands_send import AllowNetOption
from hookctl.errors import ExitCode, UsageError

STATUSES = ("pending", "succeeded", "failed")
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

db_app = typer.Typer(help="Where the delivery database is.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise UsageError(f"--status: expected one of {', '.join(STATUSES)}, got {value!r}")
    return value


@db_app.command("path")
def db_path(db: DbOption = None) -> None:
    """Print where the delivery database is (or will be): --db, else $HOOKCTL_DB, else the app dir.

    Example: hookctl db path
    """
    from hookctl import paths

    typer.echo(str(paths.db_path(db)))


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
        str | None, typer.Option("--status", "-s", help="pending, succeeded or failed.")
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
    from hookctl.output import iso, rows_table, short_time

    store = open_store(db)
    try:
        if delivery_id is not None:
            _show_one(store, delivery_id, json_lines)
            return
        rows = store.query(
            status=_status(status),
            rule=rule,
            ticket=ticket,
            since=window_start(since),
            limit=limit or None,
        )
        if json_lines:
            from hookctl.output import Printer

            printer = Printer(json_lines=True)
            for row in rows:
                printer.json(log_record(row, iso))
            return
        table = ({**row, "updated": short_time(row["updated_at"])} for row in rows)
        # A terminal gets the rich table even under NO_COLOR (rich drops the colour itself).
        rows_table(table, LOG_COLUMNS, color=sys.stdout.isatty())
    finally:
        store.close()


def log_record(row: dict[str, Any], iso: Any) -> dict[str, Any]:
    """A delivery as `log --json` prints it."""
    return {
        "id": row["id"],
        "status": row["status"],
        "attempts": row["attempts"],
        "method": row["method"],
        "url": row["url"],
        "error": row["error"],
        "status_code": row.get("last_status_code"),
        "rule": row["rule"],
        "ticket": row["ticket"],
        "event_id": row["event_id"],
        "event": row.get("event_name"),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "next_attempt_at": iso(row["next_attempt_at"]),
    }


def _show_one(store: Any, delivery_id: str, json_lines: bool) -> None:
    from hookctl.output import Printer, iso, short_time
    from hookctl.request import Request

    row = store.get(delivery_id)
    if row is None:
        raise UsageError(f"no delivery {delivery_id!r}")
    masked = (
        Request.from_dict(row["request"]).masked() if row.get("request", {}).get("method") else None
    )
    attempts = [
        {
            "number": a["number"],
            "started_at": iso(a["started_at"]),
            "duration_ms": round(a["duration_ms"] or 0, 1),
            "status_code": a["status_code"],
            "error": a["error"],
            "response_body": a["response_body"],
        }
        for a in row["attempts"]
    ]
    if json_lines:
        # get() moves the stored count aside for the attempt rows; the record wants the count.
        record = log_record({**row, "attempts": row["attempt_count"]}, iso)
        record["request"] = masked.to_dict() if masked else None
        record["attempts_detail"] = attempts
        Printer(json_lines=True).json(record)
        return
    out = sys.stdout
    out.write(f"{row['id']}  {row['status']}  rule {row['rule']}  ticket {row['ticket'] or '-'}\n")
    out.write(f"created {short_time(row['created_at'])}, updated {short_time(row['updated_at'])}")
    if row["next_attempt_at"]:
        out.write(f", next attempt {short_time(row['next_attempt_at'])}")
    out.write("\n\n")
    if masked:
        out.write(f"{masked.method} {masked.url}\n")
        for k, v in masked.headers:
            out.write(f"{k}: {v}\n")
        if masked.body is not None:
            out.write(f"\n{masked.body}\n")
    if row["error"] and not attempts:
        out.write(f"\nerror: {row['error']}\n")
    for a in attempts:
        outcome = f"HTTP {a['status_code']}" if a["status_code"] else "no response"
        if a["error"]:
            outcome += f" - {a['error']}"
        out.write(
            f"\nattempt {a['number']}  {a['started_at']}  {a['duration_ms']:.0f} ms  {outcome}\n"
        )
        if a["response_body"]:
            out.write("  " + a["response_body"].replace("\n", "\n  ") + "\n")


@app.command()
@handle_errors
def replay(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Delivery ids to send again.", show_default=False)
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="Replay every delivery with this status.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --status: only those created in this window."),
    ] = None,
    rule: Annotated[
        str | None, typer.Option("--rule", help="With --status: only this rule's.")
    ] = None,
    now: Annotated[
        bool,
        typer.Option("--now", help="Send them right away instead of leaving them for retry-loop."),
    ] = False,
    db: DbOption = None,
    allow_net: AllowNetOption = None,
    json_lines: JsonOption = False,
) -> None:
    """Put deliveries back in the queue, due now, with the same id (receivers can de-duplicate).

    With --now they are sent right away (only those; other due deliveries wait for retry-loop),
    one line each on stdout, and the exit code is 1 if one fails for good.

    Example: hookctl replay --status failed --since 1d --now
    """
    from hookctl.cli.commands_send import drain

    if not ids and status is None:
        raise UsageError(
            "name delivery ids, or select them with --status (see hookctl replay --help)"
        )
    guard = network_guard(allow_net) if now else None
    store = open_store(db)
    try:
        requeued = store.requeue(
            ids=ids or (),
            status=_status(status),
            rule=rule,
            since=window_start(since),
            now=time.time(),
        )
        sys.stderr.write(
            f"{len(requeued)} deliver{'y' if len(requeued) == 1 else 'ies'} queued again\n"
        )
        failed = 0
        if now and requeued:
            import asyncio

            summary = asyncio.run(
                drain(store, None, 50, 20, json_lines, False, None, guard, ids=requeued)
            )
            failed = summary.failed
    finally:
        store.close()
    exit_with(ExitCode.FAILED if failed else ExitCode.OK)


@app.command()
@handle_errors
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete finished deliveries last updated before this, e.g. 30d."
        ),
    ],
    db: DbOption = None,
) -> None:
    """Delete succeeded and failed deliveries (and their attempts) older than a window. Pending ones stay.

    Example: hookctl purge --older-than 30d
    """
    cutoff = window_start(older_than, "--older-than")
    assert cutoff is not None
    store = open_store(db)
    try:
        count = store.purge(older_than=cutoff)
    finally:
        store.close()
    sys.stderr.write(f"{count} deliver{'y' if count == 1 else 'ies'} deleted\n")
