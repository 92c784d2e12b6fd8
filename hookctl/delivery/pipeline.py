"""The delivery pipeline: match events to rules, write deliveries to the store, send, record.

Every request is in the store before it is sent (the outbox), claimed by this process with a
lease, so a crash mid-request leaves it `pending` for `retry-loop` to send again with the same
id. Sending is concurrent; outcomes are written back in batches, and a delivery is reported
only once its outcome is on record.

Store calls run on the store's own thread (storethread.py), never on the event loop, so a
database that is busy or slow stalls no attempt. One writer task records outcomes as soon as
they come in (what came in meanwhile goes in the same transaction), retries a write that
failed and, when the store stays unwritable, stops the run: nothing more is sent, and the run
ends with one StoreError. It also renews the leases of what this process holds; before a
request goes out, a claim whose lease is not known to be fresh is confirmed first (one
re-extension for every claim waiting), and one another worker took over is dropped, unsent.

This module holds Pipeline: fire and drain, and one run's plumbing (the writer beside the work,
store calls retried, a clean end). The rest is a chain of base classes, each with its job and
all sharing the state Pipeline.__init__ sets up: fire's planning and storing is outbox.py's;
each attempt, its endpoint's health and postponing, and the reports are attempts.py's; the
writer and its notices are outcomes.py's; lease renewal is leases.py's.
"""

from __future__ import annotations

import asyncio
import secrets as _secrets
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from hookctl.delivery import observe, ordering
from hookctl.delivery.admission import Admission
from hookctl.delivery.health import Health
from hookctl.delivery.leases import LEASE_MARGIN
from hookctl.delivery.options import Options
from hookctl.delivery.outbox import Outbox
from hookctl.delivery.outcomes import _Done, _Job
from hookctl.delivery.ratelimit import Limiter
from hookctl.delivery.reports import Summary
from hookctl.errors import StoreError
from hookctl.events.event import BadEvent, Event
from hookctl.events.intake import batches
from hookctl.store.errors import DatabaseUnusable
from hookctl.store.ids import EventIds
from hookctl.transport.http import Sender

if TYPE_CHECKING:
    from hookctl.delivery.prepare import Planner
    from hookctl.delivery.storethread import StoreThread
    from hookctl.rules.load import Rule

R = TypeVar("R")

IN_FLIGHT = 4  # batches of fire's committed and waiting for their fsync, at most
STORE_RETRIES = 3  # a failed store call is tried this many times more before the run stops
RETRY_PAUSE = 0.5  # seconds before the first retry, doubling each time


class StoreFailed(DatabaseUnusable):
    """The store stayed unwritable: the run stopped sending, and says what was not recorded."""


class Pipeline(Outbox):
    """Runs `fire` (events in) and `drain` (the retry queue) over one store and one sender."""

    def __init__(
        self,
        store: StoreThread | None,
        options: Options,
        observer: observe.Observer | None = None,
    ) -> None:
        self.db = store
        self.options = options
        self.observer: observe.Observer = observer or observe.Nobody()
        self.summary = Summary()
        self.token = _secrets.token_hex(16)
        self._done: list[_Done] = []
        # Attempts run here; a busy host's next jobs wait apart (at most 4 batches of them).
        self._admission: Admission[_Job] = Admission(self._attempt, waiting=4 * options.batch)
        self._held: set[str] = set()  # claimed and not yet recorded: their leases are renewed
        self._lost: set[str] = set()  # claims another worker took over once our lease ran out
        self._lease = 0.0
        self._confirmed_at = options.clock()  # when every claim in _held was last known ours
        self._notices: set[asyncio.Task[None]] = set()  # apart: _start waits on admitted tasks
        self._unsent: list[str] = []  # with send=False: claims to hand back, not to send
        self._sender: Sender | None = None
        self._planner: Planner | None = None
        self._writing = asyncio.Lock()  # writes and lease renewals, one at a time
        self._wake = asyncio.Event()  # outcomes wait to be written
        self._renewal: asyncio.Future[None] | None = None
        self._broken: StoreError | None = None  # the store stayed unwritable: stop sending
        self._event_ids = EventIds()
        self._turns: ordering.Turns | None = None  # a drain pass's ordered claims
        self._closing = False  # the run is over: the writer stops
        self._healthy = asyncio.Event()  # clear while a store call is failing: sends wait
        self._healthy.set()
        self._rate = Limiter(store, options.clock)  # rate limits and Retry-After holds (issue 15)
        self._health = Health(options.clock)  # endpoints' breakers (delivery/health.py)
        self._postponing: list[tuple[_Job, str, float | None]] = []  # for an open endpoint

    def _use(self, sender: Sender | None) -> None:
        self._sender = sender
        if sender is not None:
            # Twice the sender's limits: each running attempt has the next one ready behind it.
            self._admission.limit(running=sender.concurrency * 2, per_host=sender.per_host * 2)

    # --- fire -------------------------------------------------------------------------------

    async def fire(
        self, events: Iterable[Event | BadEvent], rules: list[Rule], sender: Sender | None
    ) -> Summary:
        """Match, store, send and record every event; returns the counts.

        Raises StoreFailed when the store stayed unwritable (after the attempts in flight
        finished and one last try to record them).
        """
        from hookctl.delivery.prepare import (
            Planner,  # rendering: fire's alone, so a retry-loop skips jinja
        )

        self._planner = Planner(self.options.environ, self.options.clock)
        self._use(sender)

        async def run() -> None:
            # Batches stored in turn, but not one at a time: while some wait for their fsync
            # (StoreThread), the next are read, rendered and committed (up to IN_FLIGHT). A
            # store that fails ends the run at once, even while no event is coming in.
            reading = batches(events, self.options.batch).__aiter__()
            storing: deque[asyncio.Task[None]] = deque()
            incoming: asyncio.Future[list[Event | BadEvent]] | None = None
            try:
                while True:
                    incoming = asyncio.ensure_future(reading.__anext__())
                    while not incoming.done():
                        oldest = storing[0] if storing else None
                        await asyncio.wait(
                            [f for f in (incoming, oldest) if f is not None],
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                        while storing and storing[0].done():
                            storing.popleft().result()
                        if self._broken is not None:
                            return
                    try:
                        batch = incoming.result()
                    except StopAsyncIteration:
                        break
                    finally:
                        incoming = None
                    jobs, kept = await self._plan_batch(batch, rules)
                    while len(storing) >= IN_FLIGHT:
                        await storing.popleft()
                        if self._broken is not None:
                            return
                    storing.append(asyncio.create_task(self._store_batch(batch, jobs, kept)))
                while storing and self._broken is None:
                    await storing.popleft()
            finally:
                # No task outlives fire. Broken or failed: the batches still being stored
                # finish (each one stored is answered as such); cancelled (Ctrl-C): they are
                # cancelled, their writes made or not as a whole.
                if incoming is not None:
                    incoming.cancel()
                if isinstance(sys.exc_info()[1], (asyncio.CancelledError, KeyboardInterrupt)):
                    for task in storing:
                        task.cancel()
                left = [t for t in (incoming, *storing) if t is not None]
                await asyncio.gather(*left, return_exceptions=True)

        return await self._run(run)

    # --- retry-loop ---------------------------------------------------------------------------

    async def drain(
        self, sender: Sender, *, stop: asyncio.Event | None = None, ids: Sequence[str] | None = None
    ) -> Summary:
        """Send every delivery due when called (or just `ids`, if due) once; returns the counts.

        Raises StoreFailed as fire() does.
        """
        assert self.db is not None
        db = self.db
        self._use(sender)
        # Due as of now: what this pass reschedules for a moment from now waits for the next pass.
        due_by = self.options.clock()
        self._lease = self.options.lease_seconds or (130.0 + LEASE_MARGIN)
        # Claim a chunk at a time, once that much room is free: one transaction per chunk,
        # not one per freed slot.
        chunk = max(1, min(self.options.batch, sender.concurrency))

        def stopped() -> bool:
            return self._broken is not None or (stop is not None and stop.is_set())

        turns = self._turns = ordering.Turns()

        async def run() -> None:
            while not stopped():
                while self._admission.room() < chunk:
                    await self._admission.wait_one()
                if stopped():
                    break
                claims = await self._store(
                    db.store.claim,
                    now=self.options.clock(),
                    limit=chunk,
                    lease_seconds=self._lease,
                    token=self.token,
                    due_by=due_by,
                    ids=ids,
                )
                if not claims:
                    # An ordered claim finishing frees the next of its key: take it now.
                    if await turns.next_turn(lambda: self._held, stopped):
                        continue
                    break
                turns.claimed(claims)
                self._held.update(claim.id for claim in claims)
                self.observer.notify(observe.Claimed(len(claims)))
                for claim in claims:
                    await self._start(_Job(claim))

        watcher = asyncio.create_task(self._hand_back_on(stop)) if stop is not None else None
        try:
            return await self._run(run)
        finally:
            if watcher is not None:
                if stop is not None and stop.is_set():
                    # It may be handing claims back right now: let it finish and count them.
                    await asyncio.gather(watcher, return_exceptions=True)
                else:
                    watcher.cancel()

    # --- one run: the writer beside the work, a clean end whatever happens -----------------------

    async def _run(self, work: Callable[[], Awaitable[None]]) -> Summary:
        writer = asyncio.create_task(self._writer()) if self.db is not None else None
        try:
            try:
                if self.db is not None:  # which endpoints are open, once per run
                    self._health.learn(await self._store(self.db.store.breaker_states))
                await work()
            except StoreError as exc:
                # The store stayed unwritable: stop sending, and end as below.
                self._broken = self._broken or exc
            await self._finish()
            await self._rate.settle()
        except BaseException:
            # Cancelled (Ctrl-C) or a bug: no task may outlive the run (or the HTTP session).
            await self._cancel_all()
            raise
        finally:
            if writer is not None:
                # Told, not cancelled, in the ordinary case: it may be mid-write.
                self._closing = True
                self._wake.set()
                if sys.exc_info()[0] is not None:
                    writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        if self._broken is not None:
            raise self._failure(self._broken)
        return self.summary

    def _failure(self, exc: StoreError) -> StoreFailed:
        unrecorded = len(self._done)
        what = (
            f"; {unrecorded} outcomes not recorded (their deliveries stay pending and are sent "
            "again, same webhook-id, once their lease runs out)"
            if unrecorded
            else ""
        )
        return StoreFailed(f"{exc}; stopped sending{what}")

    async def _cancel_all(self) -> None:
        self._admission.close()
        tasks = [*self._admission.tasks, *self._notices]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._rate.cancel()

    async def _store(self, method: Callable[..., R], /, *args: object, **kwargs: object) -> R:
        """A store call on its thread, retried while it fails; raises the StoreError (and
        marks the run broken) once the store has failed STORE_RETRIES more times."""
        assert self.db is not None
        pause = RETRY_PAUSE
        for attempt in range(1, STORE_RETRIES + 2):
            try:
                result = await self.db.call(method, *args, **kwargs)
            except StoreError as exc:
                if self._broken is not None or attempt > STORE_RETRIES:
                    self._broken = self._broken or exc
                    self._healthy.set()  # the waiting sends see it broken, and send nothing
                    raise
                # Nothing more goes out while outcomes cannot be recorded.
                self._healthy.clear()
                self.observer.notify(observe.StoreRetry(str(exc), attempt))
                await asyncio.sleep(pause)
                pause *= 2
            else:
                self._healthy.set()
                return result
        raise AssertionError("unreachable")

    async def _finish(self) -> None:
        while True:
            # Write first: a write in flight (the writer task's) may start on_failure notices,
            # and _write waits it out, so the check below sees every notice it started.
            await self._write()
            if not (self._admission or self._notices):
                return
            if self._admission.closed or self._broken is not None:
                await self._hand_back()  # what was held back after the stop goes back too
            await asyncio.gather(*self._admission.tasks, *self._notices)

    async def _hand_back_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self._hand_back()

    async def _hand_back(self) -> None:
        """Stopping: claims held back behind a busy host go back to the queue, unattempted."""
        jobs = self._admission.close()
        if not jobs or self.db is None:
            return
        ids = [job.claim.id for job in jobs]
        self._held.difference_update(ids)
        try:
            await self.db.call(self.db.store.release, ids, token=self.token)
        except StoreError:
            return  # they come back when their lease runs out
        self.summary.handed_back += len(ids)
        self.observer.notify(observe.HandedBack(len(ids)))
