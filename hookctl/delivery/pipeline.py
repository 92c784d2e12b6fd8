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

This module runs fire and drain; the writer and its notices are outcomes.py's, lease renewal
is leases.py's (both mixed into Pipeline, sharing the state its __init__ sets up).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from hookctl.delivery.outcomes import FLUSH_LINGER, Outcomes, _claim_of, _Done, _Job
from hookctl.delivery.ratelimit import Limiter
from hookctl.delivery.reports import Report, Summary
from hookctl.errors import RenderError, StoreError
from hookctl.events.event import BadEvent, Event
from hookctl.events.intake import batches, dedupe_key, event_ticket
from hookctl.render.request import Request, resolve
from hookctl.store.endpoint import endpoint_of, paused_note
from hookctl.store.errors import DatabaseUnusable
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import EventIds
from hookctl.store.records import AttemptResult, NewDelivery
from hookctl.transport.http import Sender, host_key
from hookctl.transport.netguard import allowed_by

if TYPE_CHECKING:
    from hookctl.delivery.prepare import Planner
    from hookctl.delivery.storethread import StoreThread
    from hookctl.rules.load import Rule

R = TypeVar("R")

IN_FLIGHT = 4  # batches of fire's committed and waiting for their fsync, at most
YIELD_EVERY = 32  # events planned between turns of the event loop
STORE_RETRIES = 3  # a failed store call is tried this many times more before the run stops
RETRY_PAUSE = 0.5  # seconds before the first retry, doubling each time
UNRENDERED = "cannot render: the stored request is incomplete; nothing sent (replay renders it from its rule)"


class StoreFailed(DatabaseUnusable):
    """The store stayed unwritable: the run stopped sending, and says what was not recorded."""


class Pipeline(Outcomes):
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

    async def _plan_batch(
        self, batch: list[Event | BadEvent], rules: list[Rule]
    ) -> tuple[list[tuple[NewDelivery, _Job]], list[NewEvent]]:
        """Match and render one batch: its deliveries, and the events it keeps (issue 17)."""
        jobs: list[tuple[NewDelivery, _Job]] = []
        kept: list[NewEvent] = []
        for n, item in enumerate(batch, 1):
            if n % YIELD_EVERY == 0:
                # Rendering holds the loop: let answers that came in start the next sends.
                await asyncio.sleep(0)
            if isinstance(item, BadEvent):
                self.summary.bad_events += 1
                self.observer.notify(observe.Unreadable(item))
                continue
            self.summary.events += 1
            ref = self._keep(item, kept)
            matched = [rule for rule in rules if rule.matches(item.name, item.data)]
            if not matched:
                continue
            # Once per event, not per rule: without an `id` it hashes the whole event.
            skip_dedupe = self.options.force or self.options.dry_run
            key = None if skip_dedupe else dedupe_key(item.data)
            for rule in matched:
                planned = self._plan(rule, item, key)
                if planned is not None:
                    planned[0].event_ref = ref
                    jobs.append(planned)
        return jobs, kept

    async def _store_batch(
        self,
        batch: list[Event | BadEvent],
        jobs: list[tuple[NewDelivery, _Job]],
        kept: list[NewEvent],
    ) -> None:
        """Store one batch and start its sends; then say it is committed (serve's 202s)."""
        stored = await self._submit(jobs, kept) if jobs or kept else []
        self.observer.notify(observe.Committed(batch, stored))

    def _plan(self, rule: Rule, event: Event, key: str | None) -> tuple[NewDelivery, _Job] | None:
        assert self._planner is not None
        request, ticket, render_error = self._planner.render(rule, event)
        if self.options.dry_run:
            masked = self._planner.masked(rule, request)
            report = Report(
                rule=rule.name,
                status="dry-run" if render_error is None else "failed",
                method=request.method,
                url=masked.url,
                event_id=event.event_id,
                ticket=ticket,
                source=event.source,
                line=event.line,
                error=render_error,
                request=masked if render_error is None else None,
                sent=False,
                needs=request.secrets,
            )
            self._tell(report)
            return None
        new = self._planner.delivery(rule, event, key, request, ticket, render_error)
        if self.options.allow_net:
            new.request["allow_net"] = list(self.options.allow_net)
        job = _Job(_claim_of(new, self.token), event.source, event.line, render_error, request)
        return new, job

    def _keep(self, event: Event, kept: list[NewEvent]) -> str | None:
        """Add the event to those the batch stores (unless events are not kept); its id."""
        if self.options.event_ref is not None:
            return self.options.event_ref
        if not self.options.keep_events or self.options.dry_run or self.db is None:
            return None
        now = self.options.clock()
        new = NewEvent(
            id=self._event_ids.next(now),
            received_at=now,
            source=event.source,
            line=event.line,
            event_id=event.event_id,
            event_name=event.name,
            ticket=event_ticket(event.data),
            data=event.data,
        )
        kept.append(new)
        return new.id

    async def _submit(
        self, jobs: list[tuple[NewDelivery, _Job]], kept: Sequence[NewEvent] = ()
    ) -> list[tuple[int | None, str, bool]]:
        """Store the batch (claimed) and start it; each delivery's (event line, id, inserted)."""
        assert self.db is not None
        now = self.options.clock()
        slowest = max((n.timeout for n, _ in jobs), default=0.0)
        lease = self.options.lease_seconds or (slowest + LEASE_MARGIN)
        self._lease = max(self._lease, lease)
        # send=False with nothing to record now: stored unclaimed, due, in one transaction.
        queued = not self.options.send and not await self._to_record(jobs)
        results = await self._store(
            self.db.store.enqueue,
            [n for n, _ in jobs],
            now=now,
            claim_token=None if queued else self.token,
            lease_seconds=0 if queued else lease,
            events=kept,
        )
        if queued:
            return await self._queued(jobs, results)
        claimed = [delivery_id for delivery_id, inserted in results if inserted]
        # Ordered ones not in their key's turn were enqueued unleased: they wait (issue 15).
        keyed = ordering.ordered_ids([n for n, _ in jobs], results)
        waiting: set[str] = set()
        if keyed:
            held = await self._store(
                self.db.store.extend_lease, keyed, token=self.token, until=now + lease
            )
            waiting.update(set(keyed).difference(held))
            claimed = [delivery_id for delivery_id in claimed if delivery_id not in waiting]
        self._held.update(claimed)
        if claimed:
            self.observer.notify(observe.Claimed(len(claimed)))
        earlier = [delivery_id for delivery_id, inserted in results if not inserted]
        # What the earlier delivery became, so a duplicate says so (a failed one is no success).
        recorded = await self._store(self.db.store.statuses, earlier) if earlier else {}
        # A paused endpoint's deliveries stay pending, unsent (issue 15): the retry-loop's
        # claims skip them until it is resumed.
        paused = await self._store(self.db.store.paused_endpoints) if claimed else {}
        for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True):
            if not inserted:
                self._report(job, delivery_id, None, recorded.get(delivery_id))
                continue
            if job.render_error is not None:
                self._record(job, None, job.render_error)
                continue
            if delivery_id in waiting:
                self._report(job, delivery_id, None, waiting=ordering.WAITING)
                continue
            if paused and (endpoint := endpoint_of(job.claim.url)) in paused:
                self._record(
                    job, None, "held: " + paused_note(endpoint, *paused[endpoint]), held=True
                )
                continue
            await self._start(job)
        await self._hand_over()
        return [
            (job.line, delivery_id, inserted)
            for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True)
        ]

    async def _to_record(self, jobs: list[tuple[NewDelivery, _Job]]) -> bool:
        """Whether some of the batch is recorded at once (cannot render; a paused endpoint)."""
        if any(job.render_error is not None for _, job in jobs):
            return True
        if not jobs:
            return False
        paused = await self._store(self.db.store.paused_endpoints)  # type: ignore[union-attr]
        return bool(paused) and any(endpoint_of(job.claim.url) in paused for _, job in jobs)

    async def _queued(
        self, jobs: list[tuple[NewDelivery, _Job]], results: list[tuple[str, bool]]
    ) -> list[tuple[int | None, str, bool]]:
        """A batch stored unclaimed: only its duplicates are reported (what they became)."""
        earlier = [delivery_id for delivery_id, inserted in results if not inserted]
        if earlier:
            recorded = await self._store(self.db.store.statuses, earlier)  # type: ignore[union-attr]
            for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True):
                if not inserted:
                    self._report(job, delivery_id, None, recorded.get(delivery_id))
        return [
            (job.line, delivery_id, inserted)
            for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True)
        ]

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

    # --- attempts -------------------------------------------------------------------------------

    async def _start(self, job: _Job) -> None:
        if not self.options.send:
            self._unsent.append(job.claim.id)  # handed back by _hand_over
            return
        if self._health.open and (wait := self._health.waiting(job.claim)) is not None:
            self._postpone_soon(job, *wait)  # its endpoint is open: handed back, unsent
            return
        # Bound the work in flight: reading and claiming wait here, so memory stays flat.
        await self._admission.add(host_key(job.claim.url), job)

    async def _hand_over(self) -> None:
        """send=False: give the claims that would have been sent back to the queue, due now."""
        if not self._unsent:
            return
        ids, self._unsent = self._unsent, []
        self._held.difference_update(ids)  # never renewed: a failed release lapses, then due
        with contextlib.suppress(StoreError):
            await self._store(self.db.store.release, ids, token=self.token)  # type: ignore[union-attr]

    async def _attempt(self, job: _Job) -> None:
        assert self._sender is not None
        claim = job.claim
        if claim.unrendered:
            # Stored bare (a crash came before its failure was recorded): never sent as is.
            self._record(job, None, UNRENDERED)
            return
        if (wait := self._health.waiting(claim)) is not None:
            self._postpone_soon(job, *wait)  # its endpoint opened meanwhile: hand it back
            return
        request = job.request or Request.from_dict(claim.request)
        try:
            resolved = resolve(request, self.options.environ)
        except RenderError as exc:
            # A variable this process lacks: the user's to fix, so held, not failed (nothing sent).
            self._record(job, None, f"held: {exc}", held=True)
            return
        secret_values = tuple(self.options.environ[name] for name in request.secrets)
        host = host_key(claim.url)
        # Its endpoint's rate or a Retry-After: wait for its slot, or back to the queue till then.
        until = await self._rate.turn(claim) if self._rate.applies(claim) else None
        if until is not None:
            self._held.discard(claim.id)
            self.summary.postponed += 1
            await self._rate.hand_back(claim.id, self.token, until)
            return

        async def ready() -> bool:
            # The slot is ours: is the claim still? (A stopped process may have lost it.)
            if not await self._still_ours(claim.id):
                return False
            self.observer.notify(observe.AttemptStarted(claim.id, claim.rule, host))
            return True

        # The delivery id is the Standard Webhooks `webhook-id`: the same on every retry and replay.
        outcome = await self._sender.send(
            resolved, timeout=claim.timeout, secrets=secret_values, webhook_id=claim.id, ready=ready
        )
        if outcome is None:
            self._drop(claim.id)
            return
        if outcome.retry_after is not None:
            await self._rate.answered(claim, outcome)  # a Retry-After slows the endpoint
        self.observer.notify(
            observe.AttemptFinished(
                claim.id, claim.rule, host, outcome.status_code, outcome.error, outcome.duration_ms
            )
        )
        recorded = claim.request.get("allow_net")
        if outcome.refused is not None and recorded and allowed_by(recorded, outcome.refused):
            # Refused by this process's allow-list, not by the one the delivery was fired with:
            # a setting to fix here, so held (nothing was sent), never failed for good.
            reason = self._sender.guard.held_reason(outcome.refused, recorded)
            self._record(job, None, reason, held=True)
            return
        self._record(job, outcome, outcome.error)

    def _drop(self, delivery_id: str) -> None:
        """Not sent: the claim is another worker's now (or the store cannot say it is ours)."""
        self._held.discard(delivery_id)
        self.summary.lost += 1

    def _report(
        self,
        job: _Job,
        delivery_id: str,
        result: AttemptResult | None,
        recorded: str | None = None,
        waiting: str | None = None,
    ) -> None:
        """Count and emit one delivery's outcome; no result means a duplicate (of a delivery
        `recorded` with that status), not sent, or one `waiting` its turn (pending, unsent)."""
        claim = job.claim
        report = Report(
            rule=claim.rule,
            status="pending" if waiting else result.status if result else "duplicate",
            method=claim.method,
            url=claim.url,
            delivery_id=delivery_id,
            event_id=claim.event_id,
            ticket=claim.ticket,
            source=job.source,
            line=job.line,
            replays=claim.replays,
            recorded=recorded,
            waiting=waiting,
        )
        if waiting:
            report.sent = False
        if result is not None:
            # Over the delivery's life, as `log` counts them; nothing sent is no attempt.
            report.attempts = claim.attempts + int(result.sent)
            report.sent = result.sent
            report.status_code = result.status_code
            report.error = result.error
            report.duration_ms = result.duration_ms
            report.next_attempt_at = result.next_attempt_at
        self._tell(report)

    def _tell(self, report: Report) -> None:
        """Count a decided delivery and tell the observers."""
        self.summary.add(report)
        notify = self.observer.notify
        notify(observe.Reported(report))
        if report.status == "failed":
            notify(observe.FailedForGood(report))
        elif (
            report.status == "pending"
            and not report.sent
            and not report.waiting
            and not report.probe_wait
        ):
            notify(observe.Held(report))

    async def _endpoint_news(self) -> None:
        """A batch with failures (or a success on a failing endpoint) is on record: read the
        breakers again; the jobs held back for an endpoint that has opened go back unsent."""
        assert self.db is not None
        try:
            opened = self._health.learn(await self.db.call(self.db.store.breaker_states))
        except StoreError:
            return  # the claims go out and fail as before; the next batch reads it again
        if opened:
            jobs = self._admission.take(lambda job: self._health.waiting(job.claim) is not None)
            for job in jobs:
                self._postpone_soon(job, *(self._health.waiting(job.claim) or ("", None)))

    def _postpone_soon(self, job: _Job, why: str, until: float | None) -> None:
        """Hand `job` back with the others that come in meanwhile: one release per batch."""
        self._postponing.append((job, why, until))
        if len(self._postponing) == 1:
            task = asyncio.ensure_future(self._postpone_waiting())
            self._notices.add(task)  # the run's end waits for it, as for notices
            task.add_done_callback(self._notices.discard)

    async def _postpone_waiting(self) -> None:
        await asyncio.sleep(FLUSH_LINGER)
        waiting, self._postponing = self._postponing, []
        groups: dict[tuple[str, float | None], list[_Job]] = {}
        for job, why, until in waiting:
            groups.setdefault((why, until), []).append(job)
        for (why, until), jobs in groups.items():
            await self._postpone(jobs, why, until)

    async def _postpone(self, jobs: list[_Job], why: str, until: float | None) -> None:
        """Hand claims back unsent, due not before `until` (their endpoint's next probe), no
        attempt spent; each is reported as waiting, with `why`."""
        assert self.db is not None
        ids = [job.claim.id for job in jobs]
        self._held.difference_update(ids)
        try:
            await self._store(self.db.store.release, ids, token=self.token, until=until)
        except StoreError:
            return  # they come back when their lease runs out
        for job in jobs:
            claim = job.claim
            report = Report(
                rule=claim.rule, status="pending", method=claim.method, url=claim.url,
                delivery_id=claim.id, event_id=claim.event_id, ticket=claim.ticket,
                source=job.source, line=job.line, replays=claim.replays,
                attempts=claim.attempts, sent=False, error=why, next_attempt_at=until,
                probe_wait=True,
            )  # fmt: skip
            self._tell(report)

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
