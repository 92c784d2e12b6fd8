"""The store, off the event loop: every call runs on one worker thread of its own.

SQLite waits for another process's write lock (up to its busy timeout, 30 s) and for the
disk inside the call. Made on the event loop, that wait froze every attempt in flight, so
their measured durations grew by the stall and their answers went unread. Here the loop
awaits a future while the thread waits: sending, reading answers and the timers go on.

One thread, so the calls run one at a time in the order they were made, as they did on the
loop; the connection is used by that thread alone while a StoreThread wraps it (the caller
makes no store calls of its own meanwhile). A remote database (PostgreSQL) fits the same
shape: a blocking driver on its own thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from hookctl.store.contract import Store

P = ParamSpec("P")
R = TypeVar("R")


class StoreThread:
    """Runs a Store's methods on a thread of its own; `await db.call(store.claim, ...)`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookctl-store")

    async def call(self, method: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`method(*args, **kwargs)` on the store's thread; the event loop runs meanwhile.

        A cancelled caller stops waiting, but a call that has begun runs to its end (a
        transaction is never cut in half); close() waits for it.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(method, *args, **kwargs))

    def close(self) -> None:
        """Wait for the call in progress, if any, and stop the thread (the store stays open)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> StoreThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
