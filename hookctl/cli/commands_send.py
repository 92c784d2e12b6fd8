"""`fire` and `retry-loop`: the commands that send."""

import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    QuietOption,
    RulesOption,
    allow_entries,
    app,
    duration,
    exit_with,
    handle_errors,
    network_guard,
    open_store,
    rule_paths,
)
from hookctl.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from hookctl.delivery.reports import Summary
    from hookctl.store.contract import Store
    from hookctl.transport.netguard import Guard

ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, max=1000, help="Attempts in flight at once.")
]
PerHostOption = Annotated[
    int,
    typer.Option(
        "--per-host",
        min=1,
        max=1000,
        help="Attempts in flight to one host, so a slow host cannot stall the rest.",
    ),
]
LeaseOption = Annotated[
    str | None,
    typer.Option(
        "--lease",
        help="How long a claimed delivery stays ours before another process may take it over "
        "(default: the attempt's timeout + 2m).",
        hidden=True,
        envvar="HOOKCTL_LEASE",
    ),
]


AllowNetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-net",
        help="Let requests reach this private network or host, e.g. 10.1.2.0/24 or crm.intranet "
        "(repeatable; also $HOOKCTL_ALLOW_NET, comma-separated), on top of allow_net in "
        "~/.config/hookctl/config.toml ($HOOKCTL_CONFIG), which every command reads. "
        "Everything else private stays refused.",
        show_default=False,
    ),
]


@app.command()
@handle_errors
def fire(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Event files (a JSON object, a JSON array, or NDJSON). '-' or none: stdin.",
            show_default=False,
        ),
    ] = None,
    rules_paths: RulesOption = None,
    db: DbOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            "-n",
            help="Match and render, print each request exactly (secrets masked); send nothing.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send events already delivered for a rule again.")
    ] = False,
    concurrency: ConcurrencyOption = 50,
    per_host: PerHostOption = 20,
    json_lines: JsonOption = False,
    quiet: QuietOption = False,
    lease: LeaseOption = None,
    allow_net: AllowNetOption = None,
    keep_events: Annotated[
        bool,
        typer.Option(
            "--keep-events/--no-keep-events",
            envvar="HOOKCTL_KEEP_EVENTS",
            help="Keep every event read in the database, for `hookctl plan` "
            "(also $HOOKCTL_KEEP_EVENTS=0/1).",
        ),
    ] = True,
) -> None:
    """Match events against rules and send the webhooks.

    Each delivery is written to the database before it is sent; failures wait there for
    `hookctl retry-loop`. One line per delivery on stdout, a summary on stderr.

    Example: hookctl fire -r examples/rules examples/events/ticket-created.json

    Exit codes: 0 every event read and every delivery succeeded or is queued for retry;
    1 an event could not be read or a delivery failed for good; 2 usage; 3 invalid rules.
    """
    from hookctl.cli.output import Printer
    from hookctl.cli.progress import ProgressBar
    from hookctl.delivery import service
    from hookctl.delivery.observe import Fanout
    from hookctl.events.read import read_events
    from hookctl.rules.load import load_rules

    sources = files or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError(
            "no events: give event files, or pipe events to stdin (see hookctl fire --help)"
        )
    rules = load_rules(rule_paths(rules_paths))
    printer = Printer(json_lines=json_lines, quiet=quiet)
    events = read_events(sources, sys.stdin.buffer)
    store = None
    if not dry_run:
        store = open_store(db, create=True)
    bar = ProgressBar("sending", enabled=not quiet and not dry_run)
    try:
        import asyncio  # here, not at the top: --help and an idle retry-loop skip it

        summary = asyncio.run(
            service.fire(
                store=store,
                events=events,
                rules=rules,
                observer=Fanout([printer, bar]),
                environ=os.environ,
                concurrency=concurrency,
                per_host=per_host,
                guard=None if dry_run else network_guard(allow_net),
                force=force,
                dry_run=dry_run,
                lease_seconds=duration(lease, "--lease"),
                # Recorded with each delivery: a later process without it holds, not fails.
                allow_net=tuple(dict.fromkeys(allow_entries(allow_net))),
                keep_events=keep_events,
            )
        )
    finally:
        bar.stop()
        if store is not None:
            store.close()
    printer.summary(summary)
    exit_with(
        ExitCode.FAILED if summary.bad_events or summary.failed or summary.held else ExitCode.OK
    )


@app.command("retry-loop")
@handle_errors
def retry_loop(
    db: DbOption = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            help="Keep running: look for due deliveries this often (e.g. 30s) until SIGINT/SIGTERM.",
        ),
    ] = None,
    concurrency: ConcurrencyOption = 50,
    per_host: PerHostOption = 20,
    json_lines: JsonOption = False,
    quiet: QuietOption = False,
    lease: LeaseOption = None,
    allow_net: AllowNetOption = None,
) -> None:
    """Send every delivery whose next attempt is due, then exit (or keep polling with --every).

    Made for cron: `*/5 * * * * hookctl retry-loop`. The stored requests are complete, so no
    rule files are needed; secrets are read from the environment when each attempt is made.
    Several retry-loops may run at once: each delivery is claimed by one of them. On
    SIGINT/SIGTERM the attempts in flight finish; claims not yet started are handed back.

    Example: hookctl retry-loop --every 30s
    """
    interval = duration(every, "--every")
    lease_seconds = duration(lease, "--lease")
    store = open_store(db, create=True)
    try:
        if interval is None and not store.due_count(time.time()):
            # Nothing due: leave before importing the HTTP and template machinery (cron runs this often).
            if not quiet:
                sys.stderr.write("nothing due\n")
            return
        summary = send_due(
            store,
            every=interval,
            concurrency=concurrency,
            per_host=per_host,
            json_lines=json_lines,
            quiet=quiet,
            lease_seconds=lease_seconds,
            guard=network_guard(allow_net),
        )
    finally:
        store.close()
    # A one-off pass reports failures in its exit code (for cron mail); a service stopped by a
    # signal exits 0, so its supervisor does not count a stop as a crash.
    exit_with(
        ExitCode.FAILED if (summary.failed or summary.held) and interval is None else ExitCode.OK
    )


def send_due(
    store: "Store",
    *,
    guard: "Guard",
    json_lines: bool,
    quiet: bool = False,
    every: float | None = None,
    concurrency: int = 50,
    per_host: int = 20,
    lease_seconds: float | None = None,
    ids: Sequence[str] | None = None,
) -> "Summary":
    """Run the service loop with the printer and a progress bar subscribed; print its summary.

    Shared by `retry-loop` and `replay --now`: the loop itself is delivery/service.py's.
    """
    import asyncio

    from hookctl.cli.output import Printer, format_pass_summary
    from hookctl.cli.progress import ProgressBar
    from hookctl.delivery import service
    from hookctl.delivery.observe import Fanout

    printer = Printer(json_lines=json_lines, quiet=quiet)
    # One pass (cron) has a known size; a bar over an endless --every loop would mean nothing.
    bar = ProgressBar("retrying", enabled=not quiet and every is None)
    try:
        summary = asyncio.run(
            service.drain(
                store=store,
                observer=Fanout([printer, bar]),
                environ=os.environ,
                concurrency=concurrency,
                per_host=per_host,
                guard=guard,
                every=every,
                lease_seconds=lease_seconds,
                ids=ids,
            )
        )
    finally:
        bar.stop()
    if not quiet:
        for line in format_pass_summary(summary):
            sys.stderr.write(line + "\n")
    return summary
