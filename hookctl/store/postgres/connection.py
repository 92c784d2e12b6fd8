"""Connections to PostgreSQL: the URL (and PG* variables), masking it, errors, reconnecting.

libpq reads the password from the URL, PGPASSWORD or ~/.pgpass and the rest from PG*
variables; hookctl never prints a password (`masked_url`) nor puts one in an error message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hookctl.store.errors import (
    BackendUnavailable,
    DatabaseBusy,
    DatabaseUnusable,
    NotWritable,
    StoreError,
)

if TYPE_CHECKING:
    import psycopg

MISSING_DRIVER = (
    "the PostgreSQL backend needs psycopg: pip install 'hookctl[postgres]' "
    "(or use a SQLite file for --db)"
)
CONNECT_TIMEOUT = 10  # seconds for one connection attempt (libpq connect_timeout)
# How long a worker keeps trying to get back a lost connection (a restart, a failover, a network
# blip) before it gives up with an error; backoff doubles from 0.1 s up to 2 s between tries.
RECONNECT_SECONDS = 60.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0


def driver() -> Any:
    """The psycopg module, or BackendUnavailable naming the extra that provides it."""
    try:
        import psycopg
    except ImportError:
        raise BackendUnavailable(MISSING_DRIVER) from None
    return psycopg


def masked_url(url: str) -> str:
    """`url` with any password replaced by ***, for `db path` and error messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    # A password may also ride in the query string (?password=...).
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
        if item
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def connect(url: str) -> psycopg.Connection[Any]:
    """One autocommit connection (callers open transactions); StoreError if it cannot be had."""
    psycopg = driver()
    # PGAPPNAME, when set, names the worker in pg_stat_activity (say, the machine it runs on).
    named = {} if os.environ.get("PGAPPNAME") else {"application_name": "hookctl"}
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            **named,
            # Unprepared statements: a pooler (pgbouncer in transaction mode) may sit between.
            prepare_threshold=None,
        )
    except psycopg.Error as exc:
        raise DatabaseUnusable(
            f"cannot connect to PostgreSQL at {masked_url(url)}: {_reason(exc)}"
        ) from None
    return conn  # type: ignore[no-any-return]


# SQLSTATEs with a kind of their own in the store's error family (errors.py).
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out (wait_when_busy)
_QUERY_CANCELED = "57014"  # statement_timeout (set by an operator) ran out
_READ_ONLY = "25006"  # a read-only transaction (a hot standby, default_transaction_read_only)
_NO_PRIVILEGE = "42501"


def error(url: str, exc: BaseException) -> StoreError:
    """A psycopg error as the store error a user can act on (no password in it)."""
    where = f"PostgreSQL at {masked_url(url)}"
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate in (_LOCK_NOT_AVAILABLE, _QUERY_CANCELED):
        return DatabaseBusy(
            f"{where} is busy: another client held a lock too long ({_reason(exc)}); try again"
        )
    if sqlstate in (_READ_ONLY, _NO_PRIVILEGE):
        return NotWritable(f"{where} cannot be written: {_reason(exc)}")
    return DatabaseUnusable(f"{where}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The server's or libpq's message, first line only (libpq appends hints on more lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def is_connection_lost(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """Whether `exc` means the connection is gone (so reconnecting may help), not a bad query."""
    psycopg = driver()
    if conn is not None and (conn.broken or conn.closed):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate:
        # The server shutting down says so with SQLSTATE class 57 (operator intervention), a
        # lost link with class 08. Other server errors are answers, not a lost connection:
        # lock_timeout (55P03) is an OperationalError too, and reconnecting would only retry
        # the same wait for ever. 57014 (a statement timeout) is busy, not gone.
        return sqlstate.startswith(("57", "08")) and sqlstate != "57014"
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def reconnect(
    url: str,
    *,
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> psycopg.Connection[Any]:
    """A new connection, retrying with backoff until `deadline` (on `clock`); then StoreError."""
    delay = _BACKOFF_FIRST
    while True:
        try:
            return connect(url)
        except StoreError as exc:
            if clock() + delay > deadline:
                raise DatabaseUnusable(
                    f"lost the connection to PostgreSQL at {masked_url(url)} and could not get it "
                    f"back within {RECONNECT_SECONDS:g}s: {exc}"
                ) from None
        sleep(delay)
        delay = min(delay * 2, _BACKOFF_MAX)
