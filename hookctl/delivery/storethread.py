"""The store, off the event loop whenever it would wait: calls that would block go to a thread.

A store waits for another client's lock inside the call (SQLite: another process's write lock,
up to its busy timeout, 30 s).
Made on the event loop, that wait froze every attempt in flight: their measured durations grew
by the stall, their answers went unread, leases went unrenewed. Here the connection is told
never to wait (busy timeout 0) while a StoreThread has it, and each call is first made inline,
on the loop, where an uncontended write costs what it always did. A call that finds the
database busy (DatabaseBusy, whatever the backend) has done nothing; it goes to a worker
thread of its own, which retries it (5 ms, doubling to 100 ms apart) until it goes through or
the busy timeout has passed, while the loop goes on sending. Calls take turns (a FIFO lock):
one at a time, in the order they were made, the next one starting once the last one, on the
thread or not, has ended.

Why not every call on the thread: each SQLite statement releases and retakes the GIL, and
under load every retake waits for the loop's thread; a 256-row transaction paid that 256
times, and outcomes reached the store later (more re-sends after a crash). Measured in
bench/crash.py; see the README's design section. What does leave the loop is a write's
fsync (Store.split_commit), most of an uncontended SQLite write's time: the write commits
inline without it, the next calls go on, and one fsync on a thread of its own makes every
write committed before it durable (group commit); a caller waits for the first fsync that
started after its write, so a result still means "on the disk".
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from hookctl.store.errors import DatabaseBusy

if TYPE_CHECKING:
    from hookctl.store.contract import Store

P = ParamSpec("P")
R = TypeVar("R")
FIRST_PAUSE = 0.005
LONGEST_PAUSE = 0.1


class StoreThread:
    """Makes a Store's calls without blocking the loop; `await db.call(store.claim, ...)`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookctl-store")
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookctl-sync")
        self._turn = asyncio.Lock()  # one call at a time, in the order made (the lock is FIFO)
        self._syncing = False  # an fsync is running on the sync thread
        self._next_sync: asyncio.Future[None] | None = None  # the one after it, shared
        self._sync: Callable[[], None] | None = None
        store.wait_when_busy(0)

    async def call(self, method: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`method(*args, **kwargs)`: inline, then (if it wrote) its fsync on a thread; all
        of it on the thread if the database is busy. Returns once the write is durable.

        A cancelled caller stops waiting, but a call that has begun runs to its end (a
        transaction is never cut in half), and the next call starts after it; close() waits
        for it.
        """
        await self._turn.acquire()
        try:
            result, sync = self.store.split_commit(method, *args, **kwargs)
        except DatabaseBusy:
            # Nothing of it was done: retried on the thread until the database is free (and
            # committed there as any call outside split_commit is: durable at once).
            return await self._on_thread(
                functools.partial(_until_free, self.store.busy_timeout, method, *args, **kwargs)
            )
        except BaseException:
            self._turn.release()
            raise
        self._turn.release()
        if sync is not None:
            # The next calls run meanwhile; their writes wait for the same fsync or the next.
            await self._durable(sync)
        return result

    async def _durable(self, sync: Callable[[], None]) -> None:
        """Wait for an fsync that started after this call's write: the one after the one
        running now, if one is, shared by every call that asks until it starts."""
        self._sync = sync
        mine = self._next_sync
        if mine is None:
            mine = self._next_sync = asyncio.get_running_loop().create_future()
            if not self._syncing:
                self._start_sync()
        await asyncio.shield(mine)

    def _start_sync(self) -> None:
        waiting, self._next_sync = self._next_sync, None
        assert waiting is not None and self._sync is not None
        self._syncing = True
        running = asyncio.get_running_loop().run_in_executor(self._syncer, self._sync)

        def finished(done: asyncio.Future[None]) -> None:
            self._syncing = False
            if done.cancelled():
                waiting.cancel()
            elif (error := done.exception()) is not None:
                waiting.set_exception(error)
                waiting.exception()  # retrieved: every caller waiting may have been cancelled
            else:
                waiting.set_result(None)
            if self._next_sync is not None:
                self._start_sync()

        running.add_done_callback(finished)

    async def call_apart(self, method: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`method(*args, **kwargs)` on the thread even when the database is free: for a read
        that takes long in the database's own code (a count over a big table), during which the
        loop must go on; the calls made meanwhile wait their turn behind it, as in `call`."""
        await self._turn.acquire()
        return await self._on_thread(
            functools.partial(_until_free, self.store.busy_timeout, method, *args, **kwargs)
        )

    async def call_waiting(self, method: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`method(*args, **kwargs)` on the thread, never inline: for a call that waits by
        design (WorkSignal.wait_for_work), in turn with the others so they stay in order."""
        await self._turn.acquire()
        return await self._on_thread(functools.partial(method, *args, **kwargs))

    async def _on_thread(self, fn: Callable[[], R]) -> R:
        """Run `fn` on the thread, holding the turn (taken by the caller) until it has ended,
        even if the caller is cancelled meanwhile."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except BaseException:
            self._turn.release()
            raise
        future.add_done_callback(lambda _: self._turn.release())
        return await asyncio.shield(future)

    def close(self) -> None:
        """Wait for the call in progress, if any, stop the thread, and let the store wait
        for busy locks again (it stays open)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._syncer.shutdown(wait=True)  # an fsync asked for is made, even if none waits
        self.store.wait_when_busy(None)

    def __enter__(self) -> StoreThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _until_free(
    busy_timeout: float, method: Callable[..., R], *args: object, **kwargs: object
) -> R:
    """On the thread: retry a call the database was too busy for, until the busy timeout."""
    deadline = time.monotonic() + busy_timeout
    pause = FIRST_PAUSE
    while True:
        try:
            return method(*args, **kwargs)
        except DatabaseBusy:
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
