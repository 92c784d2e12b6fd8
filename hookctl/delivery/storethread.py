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
import contextlib
import functools
import threading
import time
from collections import deque
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
        self._syncer: Syncer | None = None  # started by the first write that needs an fsync
        self._turn = asyncio.Lock()  # one call at a time, in the order made (the lock is FIFO)
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
        """Wait for an fsync that started after this call's write (Syncer)."""
        if self._syncer is None:
            self._syncer = Syncer(sync, asyncio.get_running_loop())
        await asyncio.shield(self._syncer.after_now())

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
        if self._syncer is not None:
            self._syncer.close()  # an fsync asked for is made, even if none waits any more
        self.store.wait_when_busy(None)

    def __enter__(self) -> StoreThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Syncer:
    """A thread that fsyncs as long as writes ask it to: each ask is answered by the first
    fsync that starts after it, and one fsync answers every ask made before it started.

    The thread starts the next fsync itself, the moment one ends, rather than waiting for
    the event loop to get round to it (under load that wait was most of a write's latency);
    the loop only hears, through call_soon_threadsafe, which asks are now durable.
    """

    def __init__(self, sync: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        self._sync = sync
        self._loop = loop
        self._cond = threading.Condition()
        self._asked = 0  # asks made (on the loop)
        self._closed = False
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # loop side only
        self._thread = threading.Thread(target=self._run, name="hookctl-sync", daemon=True)
        self._thread.start()

    def after_now(self) -> asyncio.Future[None]:
        """A future done once an fsync that started after this call has ended."""
        future = self._loop.create_future()
        with self._cond:
            self._asked += 1
            self._waiting.append((self._asked, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        """Make the fsync asked for, if any, and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        done = 0
        while True:
            with self._cond:
                while self._asked == done and not self._closed:
                    self._cond.wait()
                if self._asked == done:
                    return
                covers = self._asked
            error: BaseException | None = None
            try:
                self._sync()
            except BaseException as exc:  # handed to the waiting callers, who raise it
                error = exc
            done = covers
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._answer, covers, error)

    def _answer(self, covers: int, error: BaseException | None) -> None:
        """On the loop: the asks up to `covers` are durable (or their fsync failed)."""
        while self._waiting and self._waiting[0][0] <= covers:
            _, future = self._waiting.popleft()
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.exception()  # retrieved: its caller may have been cancelled


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
