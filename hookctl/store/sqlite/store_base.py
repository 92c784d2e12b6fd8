"""What SQLiteStore's topic mixins share: the lock-and-errors decorator, and the store's shape.

The mixins (store_queue.py, store_log.py, store_events.py, store_endpoints.py) cannot import
store.py, which imports them; `StoreBase` names, for the type checker, the state and the
transaction helpers that `SQLiteStore` (store.py) defines and they use.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hookctl.store import holder as holders
from hookctl.store.sqlite import database

PURGE_CHUNK = 2000  # deleted per transaction, so purging a big log never stalls senders for long
_T = TypeVar("_T")


class StoreBase:
    """The attributes and helpers of SQLiteStore that its mixins rely on (declared, not made)."""

    path: Path
    _lock: threading.RLock
    _holder: holders.Holder
    _registered: bool  # this holder is in lease_holders
    _leased: set[str]  # ids this store leased and has not completed/released
    _conn: sqlite3.Connection

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _register(self, conn: sqlite3.Connection, now: float) -> None: ...

        def _gone_holders(self, conn: sqlite3.Connection) -> list[str]: ...

        def _reap(self, conn: sqlite3.Connection, gone: Sequence[str], now: float) -> None: ...


def locked(method: Callable[..., _T]) -> Callable[..., _T]:
    """Run a store method under the store's lock, its sqlite3 errors as StoreErrors."""

    def wrapper(self: StoreBase, *args: Any, **kwargs: Any) -> _T:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise database.error(self.path, exc) from exc

    wrapper.__name__ = method.__name__
    wrapper.__qualname__ = method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper
