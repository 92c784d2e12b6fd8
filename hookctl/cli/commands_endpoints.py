"""`endpoints`, `endpoints pause`, `endpoints resume`: each receiving server's health, and holding it."""

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookctl.cli.app import DbOption, JsonOption, app, duration, handle_errors, open_store
from hookctl.errors import UsageError

if TYPE_CHECKING:
    from hookctl.store.contract import Store
    from hookctl.store.endpoint_records import EndpointHealth, EndpointLimit

ENDPOINT_COLUMNS = [
    ("endpoint", "Endpoint"),
    ("state", "State"),
    ("pending", "Pending"),
    ("failed", "Failed"),
    ("success", "Success"),
    ("p95", "p95"),
    ("last_success", "Last success"),
    ("rate", "Rate"),
    ("breaker", "Breaker"),  # last: the piped columns before it stay where they were
]
DEFAULT_WINDOW = "1h"

endpoints_app = typer.Typer(
    help="Each endpoint (scheme://host:port) deliveries go to: health, pause, resume.",
    invoke_without_command=True,
)
app.add_typer(endpoints_app, name="endpoints")

EndpointArgument = Annotated[
    str,
    typer.Argument(
        help="An endpoint as `hookctl endpoints` names it, a URL, or host:port.",
        show_default=False,
    ),
]


@endpoints_app.callback()
@handle_errors
def endpoints(
    ctx: typer.Context,
    window: Annotated[
        str,
        typer.Option(
            "--window", help="Success rate and p95 over attempts in this window, e.g. 1h or 1d."
        ),
    ] = DEFAULT_WINDOW,
    db: DbOption = None,
    json_lines: JsonOption = False,
) -> None:
    """List every endpoint deliveries go to, with its health: deliveries pending and failed, success rate and p95 latency of its attempts over --window, last success, paused or not, its rate limit and any Retry-After hold, and its circuit breaker (closed, or open since when with its next probe; failing since when).

    An endpoint is the scheme, host and port of a delivery's URL. With --json, one record per endpoint.

    Example: hookctl endpoints --window 1d
    """
    if ctx.invoked_subcommand is not None:
        return
    from hookctl.cli.output import Printer, iso, short_time
    from hookctl.cli.tables import rows_table

    seconds = duration(window, "--window")
    assert seconds is not None
    store = open_store(db)
    try:
        now = time.time()
        found = store.endpoint_health(since=now - seconds)
        limits = store.endpoint_limits(now=now)  # rates and Retry-After holds (issue 15)
    finally:
        store.close()
    if json_lines:
        printer = Printer(json_lines=True)
        for h in found:
            printer.json(endpoint_record(h, iso, window, limits.get(h.endpoint)))
        return
    rows = (
        {
            "endpoint": h.endpoint,
            "state": _state(h, limits.get(h.endpoint), short_time),
            "rate": (limit.rate if (limit := limits.get(h.endpoint)) else None) or "-",
            "breaker": breaker_cell(h, short_time),
            "pending": str(h.pending),
            "failed": str(h.failed),
            "success": "-" if h.success_rate is None else f"{h.success_rate:.0%} of {h.attempts}",
            "p95": "-" if h.p95_ms is None else f"{h.p95_ms:.0f} ms",
            "last_success": short_time(h.last_success_at),
        }
        for h in found
    )
    rows_table(rows, ENDPOINT_COLUMNS, color=sys.stdout.isatty(), whole=("endpoint",))


def _state(h: "EndpointHealth", limit: "EndpointLimit | None", short_time: Any) -> str:
    if h.paused_since:
        return f"paused since {short_time(h.paused_since)}"
    if limit is not None and limit.not_before is not None:
        return f"slowed until {short_time(limit.not_before)} (Retry-After)"
    return "active"


def endpoint_record(
    h: "EndpointHealth", iso: Any, window: str, limit: "EndpointLimit | None" = None
) -> dict[str, Any]:
    """One endpoint as `endpoints --json` prints it (`limit`: its rate and any hold)."""
    return {
        "endpoint": h.endpoint,
        "paused": h.paused_since is not None,
        "paused_since": iso(h.paused_since),
        "paused_reason": h.paused_reason,
        "pending": h.pending,
        "failed": h.failed,
        "window": window,
        "attempts": h.attempts,
        "successes": h.successes,
        "success_rate": None if h.success_rate is None else round(h.success_rate, 4),
        "p95_ms": None if h.p95_ms is None else round(h.p95_ms, 1),
        "last_success_at": iso(h.last_success_at),
        # The strictest rate any rule named for it in the last hour, its schedule's end, and a
        # Retry-After hold: nothing is sent to it before `not_before`.
        "rate": limit.rate if limit else None,
        "next_slot": iso(limit.next_slot) if limit and limit.rate else None,
        "not_before": iso(limit.not_before) if limit else None,
        "not_before_reason": limit.not_before_reason if limit else None,
        "breaker": h.breaker_state,  # closed, or open (its deliveries wait for a probe)
        "consecutive_failures": h.failures,
        "failing_since": iso(h.failing_since),
        "open_since": iso(h.open_since),
        "next_probe_at": iso(h.next_probe_at),
    }


def breaker_cell(h: "EndpointHealth", short_time: Any) -> str:
    """The breaker column: closed, failing since when, or open with its next probe."""
    if h.open_since is not None:
        return f"open since {short_time(h.open_since)}, next probe {short_time(h.next_probe_at)}"
    if h.failures:
        return f"closed, {h.failures} failing since {short_time(h.failing_since)}"
    return "closed"


def resolve_endpoint(store: "Store", given: str) -> str:
    """The endpoint the user means. A URL or a listed name names itself; `host:port` (no
    scheme) means the listed endpoint on that host and port, or, if none is listed yet, https
    for port 443 and http otherwise."""
    from hookctl.store.endpoint import endpoints_at, parse_endpoint

    try:
        name = parse_endpoint(given)
    except ValueError as exc:
        raise UsageError(f"ENDPOINT: {exc}") from None
    if "://" in given:
        return name
    known = [h.endpoint for h in store.endpoint_health(since=time.time())]
    host_port = name.partition("://")[2]
    matches = endpoints_at(host_port, known)
    if len(matches) > 1:
        raise UsageError(f"ENDPOINT: {given!r} matches {', '.join(matches)}; give the one you mean")
    if matches:
        return matches[0]
    return ("https://" if host_port.endswith(":443") else "http://") + host_port


@endpoints_app.command("pause")
@handle_errors
def pause(
    endpoint: EndpointArgument,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, shown by `log` and `endpoints`.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Hold an endpoint's deliveries: none is sent (by any worker on the database) until it is resumed; none fails or spends an attempt meanwhile.

    A request already on the wire when you pause finishes.

    Example: hookctl endpoints pause https://hooks.example.com --reason "maintenance"
    """
    store = open_store(db, create=True)
    try:
        name = resolve_endpoint(store, endpoint)
        if store.pause_endpoint(name, now=time.time(), reason=reason):
            sys.stderr.write(f"Paused {name}: its deliveries wait until it is resumed.\n")
        else:
            sys.stderr.write(f"{name} was paused already.\n")
    finally:
        store.close()


@endpoints_app.command("resume")
@handle_errors
def resume(endpoint: EndpointArgument, db: DbOption = None) -> None:
    """Release a paused endpoint: its waiting deliveries are due again, for the next retry-loop pass.

    Example: hookctl endpoints resume hooks.example.com:443
    """
    store = open_store(db)
    try:
        name = resolve_endpoint(store, endpoint)
        if store.resume_endpoint(name, now=time.time()):
            sys.stderr.write(f"Resumed {name}: retry-loop sends its due deliveries.\n")
        else:
            sys.stderr.write(f"{name} was not paused.\n")
    finally:
        store.close()
