"""The Typer app, the options every command shares, and the one place errors become exit codes."""

import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from hookctl import __version__
from hookctl.errors import ExitCode, HookctlError, UsageError

if TYPE_CHECKING:
    from hookctl.store.contract import Store
    from hookctl.transport.netguard import Guard

app = typer.Typer(
    name="hookctl",
    help=(
        "Turn helpdesk ticket events into webhooks, reliably.\n\n"
        "Rules (YAML) say which events to match and which request to send; `fire` sends them, "
        "every delivery and attempt is recorded in SQLite, and `retry-loop` retries failures."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,  # secrets live in local variables
    rich_markup_mode="rich",
    add_completion=True,
)

F = TypeVar("F", bound=Callable[..., Any])

RulesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--rules",
        "-r",
        help="Rule file or directory of *.yaml files (repeatable). Default: $HOOKCTL_RULES, "
        "else ~/.config/hookctl/rules if it exists.",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite file (or postgresql:// URL) for deliveries. Default: $HOOKCTL_DB, else "
        "~/.local/share/hookctl/ "
        "(see `hookctl db path`).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print NDJSON: one JSON object per line.")]
QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", envvar="HOOKCTL_QUIET", help="No summary or progress on stderr."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hookctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colour in any output (as NO_COLOR=1 does).")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No summaries or progress on stderr, for any command."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="More detail: delivery ids and event lines, tracebacks on errors.",
        ),
    ] = False,
) -> None:
    """Turn helpdesk ticket events into webhooks, reliably."""
    # Through the environment, so every command and every rich Console obey them alike
    # (the root options are parsed before the command's own).
    if no_color:
        os.environ["NO_COLOR"] = "1"
    if quiet:
        os.environ["HOOKCTL_QUIET"] = "1"
    if verbose:
        os.environ["HOOKCTL_VERBOSE"] = "1"


def exit_code_of(exc: HookctlError) -> ExitCode:
    """The one map from errors to exit codes: the store's family by kind, others by class."""
    from hookctl.errors import StoreError

    if isinstance(exc, StoreError):
        from hookctl.store import errors as e

        asked = (e.DatabaseMissing, e.BackendUnavailable, e.UnknownDelivery, e.AmbiguousId)
        if isinstance(exc, (*asked, e.BadSelection)):
            return ExitCode.USAGE  # asked for what is not there: an id, a database, a backend
        return ExitCode.DATABASE  # damaged, read-only, busy, foreign, newer, stopped writing
    return exc.exit_code


def handle_errors(func: F) -> F:
    """Print HookctlError as `Error: ...` on stderr and exit with its code (traceback with -v or HOOKCTL_DEBUG=1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HookctlError as exc:
            if os.environ.get("HOOKCTL_DEBUG") or os.environ.get("HOOKCTL_VERBOSE"):
                traceback.print_exc()
            message = str(exc)
            prefix = "Error: " if "\n" not in message else "Error:\n  "
            sys.stderr.write(prefix + message.replace("\n", "\n  ") + "\n")
            raise typer.Exit(int(exit_code_of(exc))) from None
        except KeyboardInterrupt:
            sys.stderr.write("Interrupted.\n")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def exit_with(code: ExitCode) -> None:
    """Leave with a documented exit code (0 returns normally)."""
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


# --- helpers the commands share ----------------------------------------------------------


def duration(value: str | None, option: str) -> float | None:
    """A duration option (30s, 5m, 2h) in seconds, or a usage error naming the option."""
    if value is None:
        return None
    from hookctl.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def window_start(value: str | None, option: str = "--since") -> float | None:
    """The moment a window like `2h` or `1d` began, counted back from now."""
    window = duration(value, option)
    return None if window is None else time.time() - window


def rule_paths(flags: list[str] | None) -> list[Path]:
    """--rules, else $HOOKCTL_RULES; a usage error when neither names anything."""
    from hookctl import paths

    found = paths.rule_paths(flags)
    if not found:
        raise UsageError(
            "no rules: pass --rules PATH (a file or a directory), set HOOKCTL_RULES, "
            f"or put rule files in {paths.default_rules_dir()}"
        )
    return found


def store_url(db: str | None) -> str:
    """The database --db or $HOOKCTL_DB names (a path or a URL), else the default file; a note
    on stderr when that is one found at the old default place."""
    from hookctl import paths

    chosen = db or os.environ.get("HOOKCTL_DB")
    if chosen:
        return chosen
    path, note = paths.db_location(None)
    if note and not os.environ.get("HOOKCTL_QUIET"):
        sys.stderr.write(note + "\n")
    return str(path)


def store_location(db: str | None) -> str:
    """What `db path` prints: the SQLite file, or a PostgreSQL URL with its password masked.
    A URL of a scheme this hookctl cannot open is the store's one-line error."""
    from hookctl.store import describe

    return describe(store_url(db))


def open_store(db: str | None, *, create: bool = False) -> "Store":
    """The delivery store (--db, $HOOKCTL_DB, or the default file), through the store's one
    factory. Reading commands never create a SQLite file (`create` False: DatabaseMissing when
    it does not exist); fire and retry-loop do. A PostgreSQL database is migrated on open."""
    from hookctl.store import open_store as _open

    return _open(store_url(db), create=create)


def allow_entries(flags: list[str] | None) -> tuple[str, ...]:
    """This process's network allow-list: the config file's allow_net, --allow-net, $HOOKCTL_ALLOW_NET."""
    from hookctl.config import load_config

    extra = (*(flags or ()), os.environ.get("HOOKCTL_ALLOW_NET", ""))
    entries = [e.strip() for flag in extra for e in flag.split(",")]
    return (*load_config().allow_net, *(e for e in entries if e))


def network_guard(flags: list[str] | None) -> "Guard":
    """The network guard for this run: the config file's allow_net, --allow-net, $HOOKCTL_ALLOW_NET."""
    from hookctl.config import config_path
    from hookctl.transport.netguard import AllowList, Guard

    try:
        allow = AllowList.parse(allow_entries(flags))
    except ValueError as exc:
        raise UsageError(f"--allow-net: {exc}") from None
    return Guard(allow, config_file=str(config_path()))
