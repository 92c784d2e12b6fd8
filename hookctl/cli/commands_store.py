"""`log`, `replay`, `purge` and `db`: reading and tending the delivery database."""

import itertools
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    RulesOption,
    allow_entries,
    app,
    exit_with,
    handle_errors,
    network_guard,
    open_store,
    store_location,
    window_start,
)
from hookctl.cli.commands_send import AllowNetOption
from hookctl.errors import ExitCode, UsageError
from hookctl.store.records import STATUSES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hookctl.store.contract import Store
    from hookctl.store.endpoint_records import EndpointLimit
    from hookctl.store.log_records import Delivery, Unrendered
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

db_app = typer.Typer(help="Where the delivery database is.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _complete_status(incomplete: str) -> list[str]:
    """Shell completion for --status."""
    return [s for s in STATUSES if s.startswith(incomplete)]


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise UsageError(f"--status: expected one of {', '.join(STATUSES)}, got {value!r}")
    return value


@db_app.command("path")
@handle_errors
def db_path(db: DbOption = None) -> None:
    """Print where the delivery database is (or will be): --db, else $HOOKCTL_DB, else the data dir.

    The data dir is $XDG_DATA_HOME/hookctl (~/.local/share/hookctl), or $HOOKCTL_HOME. A
    database at the place older versions used (~/.config/hookctl/hookctl.db) is still used,
    with a note on stderr.

    Example: hookctl db path
    """
    typer.echo(store_location(db))


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
    from hookctl.cli.output import iso, rows_table, short_time

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


@app.command()
@handle_errors
def replay(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Delivery ids to send again.", show_default=False)
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help="Replay every delivery with this status.",
            autocompletion=_complete_status,
        ),
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
    rules_paths: RulesOption = None,
    db: DbOption = None,
    allow_net: AllowNetOption = None,
    json_lines: JsonOption = False,
) -> None:
    """Put deliveries back in the queue, due now, with the same id (receivers can de-duplicate).

    With --now they are sent right away (only those; other due deliveries wait for retry-loop),
    one line each on stdout, and the exit code is 1 if one fails for good or is not replayed.

    A delivery whose request could not be rendered (a misspelt field, say) was never sent and
    is never sent as stored: it is rendered again from its event and its rule as the rules are
    now (--rules, else $HOOKCTL_RULES, else the default rules directory), or not replayed, with
    the reason on stderr.

    Example: hookctl replay --status failed --since 1d --now
    """
    from hookctl.cli.commands_send import send_due
    from hookctl.cli.output import plural

    if not ids and status is None:
        raise UsageError(
            "name delivery ids, or select them with --status (see hookctl replay --help)"
        )
    guard = network_guard(allow_net) if now else None
    store = open_store(db)
    try:
        selected = store.select(
            ids=ids or (), status=_status(status), rule=rule, since=window_start(since)
        )
        rendered, refused, notes = _render_again(store.unrendered(selected), rules_paths)
        for delivery_id, new in rendered.items():
            # Rendered anew: keep the allow-list it was fired with (and add this run's).
            detail = store.get(delivery_id)
            old = (detail.request if detail else None) or {}
            kept = dict.fromkeys([*(old.get("allow_net") or ()), *allow_entries(allow_net)])
            if kept:
                new.request["allow_net"] = list(kept)
        for delivery_id, reason in refused.items():
            sys.stderr.write(f"{delivery_id}: not replayed: {reason}\n")
        chosen = [i for i in selected if i not in refused]
        requeued = store.requeue(ids=chosen, now=time.time(), rendered=rendered) if chosen else []
        for delivery_id in requeued:
            if delivery_id in notes:
                sys.stderr.write(f"{delivery_id}: {notes[delivery_id]}\n")
        left = f", {len(refused)} not replayed" if refused else ""
        sys.stderr.write(f"{plural(len(requeued), 'delivery')} queued again{left}\n")
        failed = 0
        if now and requeued:
            assert guard is not None
            summary = send_due(store, guard=guard, json_lines=json_lines, ids=requeued)
            failed = summary.failed + summary.held
    finally:
        store.close()
    exit_with(ExitCode.FAILED if failed or refused else ExitCode.OK)


def _render_again(
    rows: list["Unrendered"], flags: list[str] | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Render unrendered deliveries anew from their stored event and the rules as they are now.

    Returns the new deliveries by id, the reason each other one is not replayed, and a line
    to say about each rendered one.
    """
    if not rows:
        return {}, {}, {}
    import difflib

    from hookctl import paths
    from hookctl.delivery.prepare import Planner
    from hookctl.events.event import Event
    from hookctl.rules.load import load_rules

    found = paths.rule_paths(flags)
    rules = {r.name: r for r in load_rules(found)} if found else {}
    where = ", ".join(map(str, found))
    planner = Planner(os.environ, time.time)
    rendered: dict[str, Any] = {}
    refused: dict[str, str] = {}
    notes: dict[str, str] = {}
    for row in rows:
        name, delivery_id = row.rule, row.id
        current = rules.get(name)
        if name.endswith(":on_failure"):
            refused[delivery_id] = (
                "an on_failure notice that could not be rendered is not rendered again; "
                f"replay the delivery it reports on (rule {name.removesuffix(':on_failure')!r})"
            )
        elif not found:
            refused[delivery_id] = (
                "its request was never rendered, and replay renders it from its rule: "
                "give the rules with --rules (or set HOOKCTL_RULES)"
            )
        elif current is None:
            close = difflib.get_close_matches(name, list(rules), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            refused[delivery_id] = f"no rule named {name!r} in {where} now{hint}"
        elif not current.enabled:
            refused[delivery_id] = f"rule {name!r} is disabled now (enabled: false)"
        elif not isinstance(row.event, dict):
            refused[delivery_id] = (
                "its event was not kept (recorded by an older hookctl): "
                "fire the event again with --force"
            )
        else:
            event = Event(row.event, "<stored event>", 0)
            request, ticket, error = planner.render(current, event)
            if error is not None:
                refused[delivery_id] = f"still {error}"
                continue
            rendered[delivery_id] = planner.delivery(current, event, None, request, ticket, None)
            note = f"re-rendered from rule {name} as it is now ({current.source}:{current.line})"
            if not current.matches(event.name, event.data):
                note += "; note: as it is now, the rule would not fire for this event"
            notes[delivery_id] = note
    return rendered, refused, notes


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

    Stored events (what `hookctl plan` replays) received before the window go too.

    Example: hookctl purge --older-than 30d
    """
    cutoff = window_start(older_than, "--older-than")
    assert cutoff is not None
    store = open_store(db)
    try:
        count = store.purge(older_than=cutoff)
        events = store.purge_events(older_than=cutoff)
    finally:
        store.close()
    gone = f", {events} stored event{'' if events == 1 else 's'} deleted" if events else ""
    sys.stderr.write(f"{count} deliver{'y' if count == 1 else 'ies'} deleted{gone}\n")


@db_app.command("copy")
@handle_errors
def db_copy(
    source: Annotated[str, typer.Argument(help="The database to copy: a SQLite file or a URL.")],
    destination: Annotated[
        str, typer.Argument(help="An empty database to copy into: a SQLite file or a URL.")
    ],
) -> None:
    """Copy a whole database to another: SQLite to PostgreSQL, or back.

    Ids, states, schedules and the attempt log come along; pending deliveries stay due; stored
    events (for plan) and paused endpoints too. Stop fire and retry-loop first: leases are not
    copied. The destination must be empty.

    Example: hookctl db copy ~/.local/share/hookctl/hookctl.db postgresql://hookctl@db1/hookctl
    """
    from hookctl.store.copy import copy

    src = open_store(source)
    try:
        dst = open_store(destination, create=True)
        try:
            copied = copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    sys.stderr.write(
        f"copied {copied.deliveries} deliveries, {copied.attempts} attempts, "
        f"{copied.events} stored events and {copied.paused} paused endpoints "
        f"to {store_location(destination)}\n"
    )
