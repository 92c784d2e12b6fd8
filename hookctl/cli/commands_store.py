"""`replay`, `purge` and `db`: tending the delivery database."""

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
from hookctl.cli.commands_log import _complete_status, _status
from hookctl.cli.commands_send import AllowNetOption
from hookctl.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from hookctl.store.log_records import Unrendered

db_app = typer.Typer(help="Where the delivery database is.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
