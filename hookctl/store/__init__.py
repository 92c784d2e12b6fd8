"""The store: delivery records and ids, the contract every backend keeps, and `open_store`.

`open_store(url)` is the one place a store is constructed: the CLI, bench/ and tests call it.
A path or `sqlite:///PATH` opens the SQLite backend (store/sqlite/); `postgresql://...` (or
`postgres://`) the PostgreSQL one (store/postgres/, imported only then: it needs the
`hookctl[postgres]` extra).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from hookctl.store.errors import BackendUnavailable, DatabaseMissing

if TYPE_CHECKING:
    from hookctl.store.contract import Store
    from hookctl.store.holder import Holder

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_POSTGRES = ("postgresql", "postgres")


def sqlite_path(url: str | Path) -> Path | None:
    """The file a SQLite location names (a path or sqlite:///PATH), None for another scheme."""
    text = str(url)
    match = _SCHEME.match(text)
    if match is None:
        return Path(text).expanduser()
    if match.group(1).lower() == "sqlite":
        # sqlite:///var/lib/hookctl.db is /var/lib/hookctl.db; sqlite://rel.db is rel.db.
        return Path(text[match.end() :]).expanduser()
    return None


def _scheme(url: str | Path) -> str:
    match = _SCHEME.match(str(url))
    return match.group(1).lower() if match else ""


def describe(url: str | Path) -> str:
    """The database as messages and `db path` name it: a SQLite file's path, or a PostgreSQL
    URL with any password masked. BackendUnavailable for a scheme hookctl does not know."""
    path = sqlite_path(url)
    if path is not None:
        return str(path)
    if _scheme(url) in _POSTGRES:
        from hookctl.store.postgres.connection import masked_url

        return masked_url(str(url))
    raise _unknown(url)


def _unknown(url: str | Path) -> BackendUnavailable:
    return BackendUnavailable(
        f"unknown database URL scheme {_scheme(url)!r}: use a SQLite file (--db PATH or "
        "sqlite:///PATH) or a PostgreSQL URL (postgresql://user@host/dbname)"
    )


def open_store(url: str | Path, *, create: bool = True, holder: Holder | None = None) -> Store:
    """Open the store at `url`: a SQLite path or `sqlite:///PATH` (created and migrated when
    `create`, else DatabaseMissing if absent), or a `postgresql://` URL (a server's database:
    migrated on open whatever `create` says, since it never appears as a stray file).
    `holder` records whose claims these are (tests; default this process). Raises StoreError
    subclasses only."""
    path = sqlite_path(url)
    if path is None:
        if _scheme(url) not in _POSTGRES:
            raise _unknown(url)
        from hookctl.store.postgres.store import PostgresStore

        return PostgresStore(str(url), holder=holder)
    if not create and not path.exists():
        raise DatabaseMissing(
            f"no database at {path} yet: `hookctl fire` creates it (or pass --db)"
        )
    from hookctl.store.sqlite.store import SQLiteStore

    return SQLiteStore(path, holder=holder)
