"""The one adapter between `serve` and the delivery pipeline: intake, sending, retrying.

Intake is one long-running `Pipeline.fire` over an endless stream of the events posted: the
same function as `hookctl fire`, so events are matched, rendered and stored exactly as there,
and events posted at the same moment share a transaction (a group commit: one fsync for
many requests). `fire` calls back once each batch is committed; a request's answer waits for
that, so a 202 always means "in the store". Retries are `Pipeline.drain` passes, as
`retry-loop --every` runs them.

Everything `serve` needs from the pipeline goes through this module. The store runs on its own
thread (StoreThread) for the pipeline and for the pages' reads alike; the pipeline's observer
events feed the metrics, and its Committed event answers the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hookctl.delivery import observe
from hookctl.delivery.options import BATCH, Options
from hookctl.delivery.pipeline import Pipeline
from hookctl.delivery.storethread import StoreThread
from hookctl.errors import HookctlError, StoreError
from hookctl.events.event import BadEvent, Event
from hookctl.serve.budget import BudgetedSender, SendBudget

if TYPE_CHECKING:
    from hookctl.rules.load import Rule
    from hookctl.store.contract import Store
    from hookctl.transport.http import Sender

_END = object()
R = TypeVar("R")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Busy(Exception):
    """Too many events wait to be stored: answer 503 and let the helpdesk retry."""


class Unavailable(Exception):
    """The store could not take the events (nothing of them was stored, or see the note)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """One posted event, committed: its id and the deliveries it matched."""

    event_id: str | None
    delivery_ids: tuple[str, ...]
    duplicates: int  # of those, deliveries already stored for this event (sent once, not again)


@dataclass
class _Waiting:
    future: asyncio.Future[list[Accepted]]
    events: list[Event]
    remaining: int
    found: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)


@dataclass
class Settings:
    """How the runner sends and retries; `serve`'s options fill it."""

    environ: Mapping[str, str]
    concurrency: int = 50
    per_host: int = 20
    retry_every: float = 2.0
    max_pending: int = 10_000  # events posted and not yet stored, at most, before 503s
    lease_seconds: float | None = None
    batch: int = BATCH  # events per commit at most, as fire's; a batch is only what is ready
    send: bool = True  # False: intake only; `retry-loop` processes beside it send


class Runner:
    """Takes posted events into the store (answering once they are), sends and retries."""

    def __init__(
        self,
        store: Store,
        rules: list[Rule],
        settings: Settings,
        observer: observe.Observer,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.store = store
        self.rules = rules  # replaced in place by reload(): the running fire reads this list
        self.settings = settings
        self.observer = observer  # every pipeline event of every run: the metrics' one feed
        self.db: StoreThread | None = None
        self.log = log
        self.stopping = False
        self.store_ok = True
        self._line = 0
        self._waiting: dict[int, _Waiting] = {}
        self._pending = 0
        self._feed: Feed | None = None
        self._intake: asyncio.Task[None] | None = None
        self._retrier: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.budget = SendBudget()  # intake first: sends wait their turn during a burst
        self._work = asyncio.Event()  # intake committed deliveries: a sending pass is due
        self._sender: Sender | None = None
        self._sender_cm: Any = None

    # --- life -------------------------------------------------------------------------------

    async def start(self, guard: Any) -> None:
        """Open the sender and start the retry loop (intake starts with the first event);
        with `send` off, only the store: other processes claim and send what intake commits."""
        if not self.settings.send:
            self.db = StoreThread(self.store)
            return
        self._sender_cm = BudgetedSender(
            self.budget,
            concurrency=self.settings.concurrency,
            per_host=self.settings.per_host,
            guard=guard,
        )
        self.db = StoreThread(self.store)
        self._sender = await self._sender_cm.__aenter__()
        self._retrier = asyncio.create_task(self._retry_loop())

    async def stop(self, grace: float) -> None:
        """Stop: events already accepted are stored; attempts in flight finish (up to `grace`
        seconds); the retry loop hands back what it claimed and did not start."""
        self.stopping = True
        self._stop.set()
        if self._feed is not None:
            self._feed.close()
        tasks = [t for t in (self._intake, self._retrier) if t is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                # Its claims stay leased until the lease ends; then any retry-loop takes them.
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._sender_cm is not None:
            await self._sender_cm.__aexit__(None, None, None)
        if self.db is not None:
            self.db.close()

    async def read(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """`fn(store, *args, **kwargs)` on the store's thread (the pages' and metrics' reads)."""
        assert self.db is not None
        return await self.db.call(fn, self.store, *args, **kwargs)

    async def read_apart(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """`fn(store, *args, **kwargs)` on the store's thread even when the database is free:
        a long read in SQLite's code that the loop must not wait for (StoreThread.call_apart)."""
        assert self.db is not None
        return await self.db.call_apart(fn, self.store, *args, **kwargs)

    def notify(self, event: observe.PipelineEvent) -> None:
        """The pipeline's events: Committed answers requests; every event goes to the metrics."""
        if isinstance(event, observe.Committed):
            self._stored(event.events, event.deliveries)
            self.budget.committed(len(event.events), sum(new for *_, new in event.deliveries))
            if event.deliveries:
                self._work.set()  # due now: the sending loop starts a pass
        self.observer.notify(event)

    def reload(self, rules: list[Rule]) -> None:
        """Match events from now on against `rules` (already loaded and valid)."""
        self.rules[:] = rules

    # --- intake -----------------------------------------------------------------------------

    async def submit(self, events: list[Event]) -> list[Accepted]:
        """Store the events through `fire`; returns once all are committed.

        Busy: too much waits to be stored already (nothing of these was taken). Unavailable:
        the store failed; events of this request in a batch committed before the failure stay
        stored (a resend is de-duplicated by event id).
        """
        if self.stopping:
            raise Busy("shutting down")
        if self._pending + len(events) > self.settings.max_pending:
            raise Busy(f"{self._pending} events are waiting to be stored")
        if not events:
            return []
        feed = self._ensure_intake()
        loop = asyncio.get_running_loop()
        renumbered: list[Event] = []
        for event in events:
            # A number unique in this process stands for the line: it ties fire's callback
            # back to the request (the request's own line numbers are in its answer).
            self._line += 1
            renumbered.append(Event(event.data, event.source, self._line))
        waiting = _Waiting(loop.create_future(), renumbered, len(renumbered))
        for event in renumbered:
            self._waiting[event.line] = waiting
        self._pending += len(renumbered)
        for event in renumbered:
            feed.put(event)
        return await asyncio.shield(waiting.future)

    def _ensure_intake(self) -> Feed:
        if self._feed is None or self._intake is None or self._intake.done():
            self._feed = Feed()
            assert self.db is not None
            pipeline = Pipeline(
                self.db,
                Options(
                    environ=self.settings.environ,
                    lease_seconds=self.settings.lease_seconds,
                    batch=self.settings.batch,
                    send=False,  # commit only: the sending loop claims what it commits
                ),
                self,
            )
            self._intake = asyncio.create_task(self._run_intake(pipeline, self._feed))
        return self._feed

    async def _run_intake(self, pipeline: Pipeline, feed: Feed) -> None:
        try:
            await pipeline.fire(feed, self.rules, None)
        except StoreError as exc:
            self.store_ok = False
            self.log(f"serve: the store failed; events not yet stored get 503: {exc}")
            self._fail(feed, Unavailable(str(exc)))
        except Exception as exc:  # a bug must not leave requests waiting forever
            self.log(f"serve: intake stopped: {exc!r}")
            self._fail(feed, Unavailable("internal error"))
            raise
        finally:
            feed.close()

    def _fail(self, feed: Feed, error: Exception) -> None:
        feed.clear()
        for waiting in {id(w): w for w in self._waiting.values()}.values():
            if not waiting.future.done():
                waiting.future.set_exception(error)
        self._pending -= sum(1 for _ in self._waiting)
        self._waiting.clear()

    def _stored(
        self, batch: list[Event | BadEvent], stored: list[tuple[int | None, str, bool]]
    ) -> None:
        """fire committed `batch`: answer every request whose events are now all stored."""
        self.store_ok = True
        by_line: dict[int, list[tuple[str, bool]]] = {}
        for line, delivery_id, inserted in stored:
            if line is not None:
                by_line.setdefault(line, []).append((delivery_id, inserted))
        for event in batch:
            waiting = self._waiting.pop(event.line, None)
            if waiting is None:
                continue
            self._pending -= 1
            waiting.found[event.line] = by_line.get(event.line, [])
            waiting.remaining -= 1
            if waiting.remaining == 0 and not waiting.future.done():
                waiting.future.set_result(
                    [
                        Accepted(
                            e.event_id,
                            tuple(delivery_id for delivery_id, _ in waiting.found[e.line]),
                            sum(not inserted for _, inserted in waiting.found[e.line]),
                        )
                        for e in waiting.events
                    ]
                )

    # --- firing a stored event again -------------------------------------------------------

    async def fire_again(
        self, data: dict[str, Any], source: str, line: int, event_ref: str
    ) -> list[str]:
        """Run one stored event through the rules loaded now, as `fire --force` (no dedupe):
        its new deliveries name the stored event (`event_ref`, no new event row), are
        committed due now, and the sending loop sends them. Their ids; none if no rule matched.

        A one-shot pipeline of its own, beside intake: the store thread takes the calls in turn.
        """
        if self.stopping:
            raise Busy("shutting down")
        assert self.db is not None
        heard = _Heard(self.observer)
        pipeline = Pipeline(
            self.db,
            Options(
                environ=self.settings.environ,
                lease_seconds=self.settings.lease_seconds,
                force=True,
                send=False,  # commit only, as intake: the sending loop claims them
                event_ref=event_ref,
            ),
            heard,
        )
        try:
            await pipeline.fire([Event(data, source, line)], list(self.rules), None)
        except StoreError as exc:
            self.store_ok = False
            raise Unavailable(str(exc)) from exc
        if heard.delivery_ids:
            self._work.set()  # due now: the sending loop starts a pass
        return heard.delivery_ids

    # --- retries ----------------------------------------------------------------------------

    async def _retry_loop(self) -> None:
        """`retry-loop --every`, inside the server: due deliveries sent until stopped."""
        assert self._sender is not None
        while not self._stop.is_set():
            assert self.db is not None
            self._work.clear()  # this pass takes what is due now; what comes later, the next
            pipeline = Pipeline(
                self.db,
                Options(environ=self.settings.environ, lease_seconds=self.settings.lease_seconds),
                self,
            )
            try:
                await pipeline.drain(self._sender, stop=self._stop)
            except HookctlError as exc:
                self.log(f"serve: retry pass failed, trying again: {exc}")
            await self._until_work()

    async def _until_work(self) -> None:
        """Wait for the next pass: new deliveries committed, a stop, or `retry_every` gone by."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._work)]
        try:
            await asyncio.wait(
                waiters, timeout=self.settings.retry_every, return_when="FIRST_COMPLETED"
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    # --- state ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events posted and not yet stored."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds a refused poster should wait before trying again."""
        return max(1, int(self.settings.retry_every))


class _Heard:
    """A fire-again run's observer: keeps the ids it committed, tells the metrics the rest."""

    def __init__(self, observer: observe.Observer) -> None:
        self.observer = observer
        self.delivery_ids: list[str] = []

    def notify(self, event: observe.PipelineEvent) -> None:
        """Every event to the metrics; a commit's new deliveries kept."""
        if isinstance(event, observe.Committed):
            self.delivery_ids += [d for _, d, inserted in event.deliveries if inserted]
        self.observer.notify(event)


class Feed:
    """The events posted, handed to fire inside the event loop: no reader thread, no handoff.

    fire's `batches` reads it through `ready_batches`: each batch is what has been posted by
    the time the previous one is stored, up to `size`, so a busy server commits many requests
    at once and an idle one commits each at once.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, event: Event) -> None:
        """Hand over one event."""
        self._queue.put_nowait(event)

    def close(self) -> None:
        """No more events: fire finishes what it has and returns."""
        self._queue.put_nowait(_END)

    def clear(self) -> None:
        """Drop what has not been taken yet (the store failed: those get a 503)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._queue.get_nowait()

    def __iter__(self) -> Iterator[Event]:
        raise TypeError("a Feed is read by fire's batches(), with ready_batches()")

    async def ready_batches(self, size: int) -> AsyncIterator[list[Event | BadEvent]]:
        """What is ready, up to `size` events at once, until closed."""
        while True:
            item = await self._queue.get()
            batch: list[Event | BadEvent] = []
            while item is not _END:
                batch.append(item)
                if len(batch) >= size:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if batch:
                yield batch
            if item is _END:
                return
