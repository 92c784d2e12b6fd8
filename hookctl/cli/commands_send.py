"""`fire` and `retry-loop`: the commands that send."""

import contextlib
import os
import sys
import time
from typing import Annotated

import typer

from hookctl.cli.app import (
    DbOption,
    JsonOption,
    QuietOption,
    RulesOption,
    app,
    create_store,
    duration,
    exit_with,
    handle_errors,
    network_guard,
    rule_paths,
)
from hookctl.errors import ExitCode, UsageError

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
        "(repeatable; also $HOOKCTL_ALLOW_NET, comma-separated). Everything else private stays refused.",
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
) -> None:
    """Match events against rules and send the webhooks.

    Each delivery is written to the database before it is sent; failures wait there for
    `hookctl retry-loop`. One line per delivery on stdout, a summary on stderr.

    Example: hookctl fire -r examples/rules examples/events/ticket-created.json

    Exit codes: 0 every event read and every delivery succeeded or is queued for retry;
    1 an event could not be read or a delivery failed for good; 2 usage; 3 invalid rules.
    """
    from hookctl.cli.output import Printer, ProgressBar
    from hookctl.delivery.pipeline import Options, Pipeline
    from hookctl.events.read import read_events
    from hookctl.rules.load import load_rules

    sources = files or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError(
            "no events: give event files, or pipe events to stdin (see hookctl fire --help)"
        )
    rules = load_rules(rule_paths(rules_paths))
    printer = Printer(json_lines=json_lines, quiet=quiet)
    options = Options(
        environ=os.environ, force=force, dry_run=dry_run, lease_seconds=duration(lease, "--lease")
    )
    events = read_events(sources, sys.stdin.buffer)

    def bad_event(bad: object) -> None:
        printer.diagnostic(f"Error: {bad}")

    store = create_store(db) if not dry_run else None
    bar = ProgressBar("sending", enabled=not quiet and not dry_run)
    pipeline = Pipeline(store, options, bar.wrap(printer.report), bad_event)
    try:
        import asyncio  # here, not at the top: --help and an idle retry-loop skip it

        summary = asyncio.run(
            _fire(pipeline, events, rules, concurrency, per_host, dry_run, network_guard(allow_net))
        )
    finally:
        bar.stop()
        if store is not None:
            store.close()
    printer.summary(summary)
    exit_with(
        ExitCode.FAILED if summary.bad_events or summary.failed or summary.held else ExitCode.OK
    )


async def _fire(pipeline, events, rules, concurrency: int, per_host: int, dry_run: bool, guard):  # type: ignore[no-untyped-def]
    if dry_run:
        return await pipeline.fire(events, rules, None)
    from hookctl.transport.http import Sender

    async with Sender(concurrency=concurrency, per_host=per_host, guard=guard) as sender:
        return await pipeline.fire(events, rules, sender)


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
    store = create_store(db)
    try:
        if interval is None and not store.due_count(time.time()):
            # Nothing due: leave before importing the HTTP and template machinery (cron runs this often).
            if not quiet:
                sys.stderr.write("nothing due\n")
            return
        import asyncio

        summary = asyncio.run(
            drain(
                store,
                interval,
                concurrency,
                per_host,
                json_lines,
                quiet,
                duration(lease, "--lease"),
                network_guard(allow_net),
            )
        )
    finally:
        store.close()
    # A one-off pass reports failures in its exit code (for cron mail); a service stopped by a
    # signal exits 0, so its supervisor does not count a stop as a crash.
    exit_with(
        ExitCode.FAILED if (summary.failed or summary.held) and interval is None else ExitCode.OK
    )


async def drain(store, interval, concurrency, per_host, json_lines, quiet, lease, guard, ids=None):  # type: ignore[no-untyped-def]
    from hookctl.cli.output import Printer, ProgressBar
    from hookctl.delivery.pipeline import Options, Pipeline
    from hookctl.delivery.reports import Summary
    from hookctl.transport.http import Sender

    printer = Printer(json_lines=json_lines, quiet=quiet)
    # One pass (cron) has a known size; a bar over an endless --every loop would mean nothing.
    total_due = len(ids) if ids is not None else store.due_count(time.time())
    bar = ProgressBar("retrying", total=total_due, enabled=not quiet and interval is None)
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible off the main thread or off POSIX; Ctrl-C still interrupts there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    total = Summary()
    if interval is not None and not quiet:
        from hookctl.delivery.policy import format_duration

        sys.stderr.write(
            f"retry-loop: sending due deliveries every {format_duration(interval)} until stopped "
            f"(Ctrl-C, or kill -TERM {os.getpid()}); attempts in flight finish first\n"
        )
        sys.stderr.flush()
    async with Sender(concurrency=concurrency, per_host=per_host, guard=guard) as sender:
        while True:
            pipeline = Pipeline(
                store, Options(environ=os.environ, lease_seconds=lease), bar.wrap(printer.report)
            )
            summary = await pipeline.drain(sender, stop=stop, ids=ids)
            for name in ("deliveries", "succeeded", "pending", "failed", "held", "handed_back"):
                setattr(total, name, getattr(total, name) + getattr(summary, name))
            if interval is None or stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    bar.stop()
    if not quiet:
        held = f", {total.held} held (nothing sent)" if total.held else ""
        sys.stderr.write(
            f"sent {total.deliveries}: {total.succeeded} succeeded, {total.pending} rescheduled, {total.failed} failed{held}\n"
        )
        if total.handed_back:
            sys.stderr.write(
                f"stopped: {total.handed_back} claimed but not yet sent, handed back (due now)\n"
            )
    return total
