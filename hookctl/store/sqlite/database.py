"""Open a hookctl database file: private, WAL, durable writes, ours, migrated; and name its errors."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from hookctl.errors import StoreError
from hookctl.store.sqlite import migrations

BUSY_TIMEOUT = 30.0  # seconds a process waits for another's write transaction before giving up
# A stored delivery is 1-2 KB (its request): 8 KB pages write fewer WAL frames per batch, and
# a larger WAL rewrites a hot page (enqueued, then completed) once per checkpoint, not twice.
# Together about 10% off the store's cost per delivery (bench/seed.py bookkeeping).
PAGE_SIZE = 8192  # for new files; an existing file keeps its own
CHECKPOINT_PAGES = 4000  # WAL pages (32 MB) before a commit checkpoints them into the file
_SQLITE_BUSY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 11, 26


def connect(path: Path) -> sqlite3.Connection:
    """A connection (autocommit; callers BEGIN) to the database at `path`, created if needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Stored requests carry the secrets needed to resend them; WAL files copy this mode.
            path.touch(mode=0o600, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create database {path}: {exc.strerror or exc}") from None
    try:
        # check_same_thread off: the pipeline hands the connection to a thread of its own
        # (delivery/storethread.py), which alone uses it while it runs.
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Takes effect only on a file without tables yet, and must come before WAL is set.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        conn.execute("BEGIN")
        try:
            migrations.check_ours(conn, path)
        finally:
            conn.execute("COMMIT")
        _enable_wal(conn)
        # FULL: a committed enqueue survives power loss, which is what makes it an outbox.
        conn.execute("PRAGMA synchronous = FULL")
        migrations.migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise error(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def error(path: Path, exc: sqlite3.Error) -> StoreError:
    """A SQLite error as a StoreError a user can act on."""
    code = _primary(exc)
    if code == _SQLITE_NOTADB:
        return StoreError(f"{path} is not a SQLite database")
    if code == _SQLITE_CORRUPT:
        return StoreError(f"database {path} is corrupt: {exc}")
    if code == _SQLITE_BUSY:
        return StoreError(
            f"database {path} is busy: another hookctl process held it for over {BUSY_TIMEOUT:g}s"
        )
    return StoreError(f"database {path}: {exc}")


def is_busy(exc: BaseException) -> bool:
    """Whether a StoreError (or the sqlite3 error behind it) says another process held the lock."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    return isinstance(cause, sqlite3.Error) and _primary(cause) == _SQLITE_BUSY


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL once; later opens find it already set."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            # Processes opening a new file together race for this switch, and SQLite
            # reports the loser as busy without waiting, so wait here instead.
            if _primary(exc) != _SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        else:
            return  # a file system without WAL support keeps its mode; locking still works


def _primary(exc: sqlite3.Error) -> int | None:
    """The primary SQLite result code of an error (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF
