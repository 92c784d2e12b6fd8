"""The store: delivery records and ids, the contract every backend keeps, and `open_store`.

`open_store(url)` is the one place a store is constructed: the CLI, bench/ and tests call it.
A path or `sqlite:///PATH` opens the SQLite backend (store/sqlite/); `postgresql://...` is the
next backend's (not in this version).
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


def open_store(url: str | Path, *, create: bool = True, holder: Holder | None = None) -> Store:
    """Open the store at `url`: a SQLite path or `sqlite:///PATH` (created and migrated when
    `create`, else DatabaseMissing if absent). `holder` records whose claims these are (tests;
    default this process). Raises StoreError subclasses only."""
    path = sqlite_path(url)
    if path is None:
        scheme = _SCHEME.match(str(url))
        name = scheme.group(1).lower() if scheme else ""
        if name in _POSTGRES:
            raise BackendUnavailable(
                "PostgreSQL databases (postgresql://...) are not available in this version of "
                "hookctl: use a SQLite file (--db PATH or sqlite:///PATH)"
            )
        raise BackendUnavailable(
            f"unknown database URL scheme {name!r}: use a SQLite file (--db PATH or sqlite:///PATH)"
        )
    if not create and not path.exists():
        raise DatabaseMissing(
            f"no database at {path} yet: `hookctl fire` creates it (or pass --db)"
        )
    from hookctl.store.sqlite.store import SQLiteStore

    return SQLiteStore(path, holder=holder)
