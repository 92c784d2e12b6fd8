"""Open a hookctl database file: private, WAL, durable writes, ours, migrated; and name its errors."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from hookctl.store.errors import (
    DatabaseBusy,
    DatabaseDamaged,
    DatabaseUnusable,
    NotWritable,
    StoreError,
)
from hookctl.store.sqlite import migrations

BUSY_TIMEOUT = 30.0  # seconds a process waits for another's write transaction before giving up
# A stored delivery is 1-2 KB (its request): 8 KB pages write fewer WAL frames per batch, and
# a larger WAL rewrites a hot page (enqueued, then completed) once per checkpoint, not twice.
# Together about 10% off the store's cost per delivery (bench/seed.py bookkeeping).
PAGE_SIZE = 8192  # for new files; an existing file keeps its own
CHECKPOINT_PAGES = 4000  # WAL pages (32 MB) before a commit checkpoints them into the file
_SQLITE_BUSY, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_CANTOPEN = 5, 8, 11, 14
_SQLITE_NOTADB = 26
_WAL_FILES = ("-wal", "-shm")  # SQLite keeps these beside the database in WAL mode


def connect(path: Path) -> sqlite3.Connection:
    """A connection (autocommit; callers BEGIN) to the database at `path`, created if needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Stored requests carry the secrets needed to resend them; WAL files copy this mode.
            path.touch(mode=0o600, exist_ok=True)
    except OSError as exc:
        raise NotWritable(f"cannot create database {path}: {exc.strerror or exc}") from None
    try:
        # check_same_thread off: the pipeline hands the connection to a thread of its own
        # (delivery/storethread.py), which alone uses it while it runs.
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise error(path, exc) from None
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


def sync_error(path: Path, exc: OSError) -> StoreError:
    """A failed fsync of the WAL: the writes are in the database, not known to be on disk."""
    return StoreError(
        f"could not sync database {path} to the disk ({exc.strerror or exc}): the last writes "
        "may not survive a power loss; check the disk and the kernel log"
    )


def error(path: Path, exc: sqlite3.Error) -> StoreError:
    """A SQLite error as one line a user can act on: what, which file, what to do."""
    code = _primary(exc)
    if code == _SQLITE_NOTADB:
        return DatabaseDamaged(
            f"{path} is not a SQLite database (or its header is damaged): point --db or "
            "HOOKCTL_DB at another file, or restore a backup"
        )
    if code == _SQLITE_CORRUPT:
        return DatabaseDamaged(
            f"database {path} is damaged ({exc}): recover what it holds with "
            f'`sqlite3 {path} ".recover" | sqlite3 {path}.recovered` and use that file, '
            "or restore a backup"
        )
    if code == _SQLITE_BUSY:
        return DatabaseBusy(
            f"database {path} is busy: another hookctl process held it for over "
            f"{BUSY_TIMEOUT:g}s; try again, or find the process holding it (fuser {path})"
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
        unwritable = not_writable(path)
        if unwritable is not None:
            return NotWritable(unwritable)
    return DatabaseUnusable(f"database {path}: {exc}")


def not_writable(path: Path) -> str | None:
    """Why the database at `path` cannot be written, if a file or its directory is the cause.

    In WAL mode even a reader must create (or write) `-wal` and `-shm` beside the database,
    so the directory has to be writable; and files left by a read-only episode keep the
    mode 0444 SQLite gave them from a read-only database, which blocks writers afterwards.
    """
    directory = path.parent
    read_only = []
    for name in (path, *(path.with_name(path.name + suffix) for suffix in _WAL_FILES)):
        try:
            mode = name.stat().st_mode
        except OSError:
            continue
        if not mode & stat.S_IWUSR or not os.access(name, os.W_OK):
            read_only.append((name, stat.S_IMODE(mode)))
    if read_only:
        names = " ".join(str(name) for name, _ in read_only)
        modes = ", ".join(f"{name.name} has mode {mode:04o}" for name, mode in read_only)
        return (
            f"database {path} cannot be written: {modes} (left read-only, perhaps by a "
            f"read-only episode); make them writable with `chmod u+w {names}`"
        )
    if not os.access(directory, os.W_OK):
        return (
            f"database {path} cannot be opened: its directory {directory} must be writable, "
            f"because SQLite keeps {path.name}-wal and {path.name}-shm beside the database "
            f"(`chmod u+w {directory}`, or move the database to a writable directory)"
        )
    return None


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
