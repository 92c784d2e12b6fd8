"""The service loop: the one entry point that sends, for `fire`, `retry-loop`, `replay --now`
and (next) `hookctl serve`.

It owns what a long-running sender needs besides the pipeline: the HTTP sender's life,
SIGINT/SIGTERM (attempts in flight finish, claims not yet started are handed back), passes
over the queue every `every` seconds (sooner when a backend that signals work, PostgreSQL,
says deliveries became due), and the summed counts. It prints nothing: callers
subscribe an observer (cli/output.py's printer, cli/progress.py's bar) and format the Summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from hookctl.delivery import observe
from hookctl.delivery.options import Options
from hookctl.delivery.pipeline import Pipeline
from hookctl.delivery.reports import Summary
from hookctl.delivery.storethread import StoreThread
from hookctl.store.contract import WorkSignal
from hookctl.transport.http import DEFAULT_CONCURRENCY, DEFAULT_PER_HOST

# How long one wait for a work signal lasts: a stop (SIGTERM) waits at most this long for it.
WAKE_SLICE = 0.2

if TYPE_CHECKING:
    from hookctl.events.event import BadEvent, Event
    from hookctl.rules.load import Rule
    from hookctl.store.contract import Store
    from hookctl.transport.netguard import Guard


async def fire(
    *,
    store: Store | None,
    events: Iterable[Event | BadEvent],
    rules: list[Rule],
    observer: observe.Observer,
    environ: Mapping[str, str],
    concurrency: int = DEFAULT_CONCURRENCY,
    per_host: int = DEFAULT_PER_HOST,
    guard: Guard | None = None,
    force: bool = False,
    dry_run: bool = False,
    lease_seconds: float | None = None,
    allow_net: tuple[str, ...] = (),
    keep_events: bool = True,
) -> Summary:
    """Match, store, send and record `events`; a dry run (no store) only renders them.

    `allow_net` (this process's network allow-list) is recorded with each delivery;
    `keep_events` stores every event read (for `plan`) with the deliveries it led to.
    """
    options = Options(
        environ=environ,
        force=force,
        dry_run=dry_run,
        lease_seconds=lease_seconds,
        allow_net=allow_net,
        keep_events=keep_events,
    )
    if dry_run or store is None:
        return await Pipeline(None, options, observer).fire(events, rules, None)
    from hookctl.transport.http import Sender

    with StoreThread(store) as db:
        async with Sender(concurrency=concurrency, per_host=per_host, guard=guard) as sender:
            return await Pipeline(db, options, observer).fire(events, rules, sender)


async def drain(
    *,
    store: Store,
    observer: observe.Observer,
    environ: Mapping[str, str],
    concurrency: int = DEFAULT_CONCURRENCY,
    per_host: int = DEFAULT_PER_HOST,
    guard: Guard | None = None,
    every: float | None = None,
    lease_seconds: float | None = None,
    ids: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
) -> Summary:
    """Send the deliveries due now (just `ids`, if given) once, or every `every` seconds
    until `stop` is set or SIGINT/SIGTERM arrives; returns the counts over every pass.

    With `every`, a store that signals work (WorkSignal) starts the next pass as soon as
    another client makes deliveries due; polling every `every` seconds stays the backstop.

    On a stop, attempts in flight finish and their outcomes are recorded; claims not yet
    started are handed back, due at once for any worker.
    """
    from hookctl.transport.http import Sender

    stop = stop or asyncio.Event()
    total = Summary()
    with _stopping_on_signals(stop), StoreThread(store) as db:
        signals = store if every is not None and isinstance(store, WorkSignal) else None
        if signals is not None:
            # Listen before the first pass: what is made due during it wakes the next one.
            await db.call_waiting(signals.wait_for_work, 0)
        observer.notify(observe.Started(every, os.getpid()))
        async with Sender(concurrency=concurrency, per_host=per_host, guard=guard) as sender:
            while True:
                if every is None:
                    # One pass has a known size (for a progress bar); an endless loop has none.
                    due = (
                        len(ids) if ids is not None else await db.call(store.due_count, time.time())
                    )
                    observer.notify(observe.Due(due))
                pipeline = Pipeline(
                    db,
                    Options(
                        environ=environ,
                        lease_seconds=lease_seconds,
                        # Recorded with the on_failure notices this pass creates.
                        allow_net=guard.allow.entries if guard is not None else (),
                    ),
                    observer,
                )
                total.merge(await pipeline.drain(sender, stop=stop, ids=ids))
                if every is None or stop.is_set():
                    break
                if signals is not None:
                    await _until_work(db, signals, stop, every)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=every)
    return total


async def _until_work(
    db: StoreThread, signal_: WorkSignal, stop: asyncio.Event, every: float
) -> None:
    """Wait until `signal_` says deliveries may be due, `every` seconds pass, or `stop` is set.

    The wait blocks a thread, so it is made in WAKE_SLICE slices with `stop` checked between
    them: a SIGTERM is never kept waiting longer than one slice.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + every
    while not stop.is_set():
        left = deadline - loop.time()
        if left <= 0:
            return
        if await db.call_waiting(signal_.wait_for_work, min(WAKE_SLICE, left)):
            return


@contextlib.contextmanager
def _stopping_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` while inside; the previous handling comes back after."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible off the main thread or off POSIX; Ctrl-C still interrupts there.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
