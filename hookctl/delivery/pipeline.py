"""The delivery pipeline: match events to rules, write deliveries to the store, send, record.

Every request is in the store before it is sent (the outbox), claimed by this process with a
lease, so a crash mid-request leaves it `pending` for `retry-loop` to send again with the same
id. Sending is concurrent; outcomes are written back in batches, and a delivery is reported
only once its outcome is on record.
"""

from __future__ import annotations

import asyncio
import secrets as _secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hookctl.delivery.admission import Admission
from hookctl.delivery.policy import RetryPolicy, classify, next_attempt_at
from hookctl.delivery.reports import Report, Summary
from hookctl.errors import RenderError
from hookctl.events.intake import batches, dedupe_key
from hookctl.events.read import BadEvent, Event
from hookctl.render.request import Request, resolve
from hookctl.store.sqlite.store import AttemptResult, Claim, NewDelivery, Store
from hookctl.transport.http import Outcome, Sender, host_key

if TYPE_CHECKING:
    from hookctl.delivery.prepare import Planner
    from hookctl.rules.load import Rule

BATCH = 256  # events read, deliveries enqueued, or outcomes recorded per transaction
YIELD_EVERY = 32  # events planned between turns of the event loop
FLUSH_SECONDS = 0.05
LEASE_MARGIN = 120.0  # a claim outlives its attempt by this much before others may take it
UNRENDERED = "cannot render: the stored request is incomplete; nothing sent (replay renders it from its rule)"


@dataclass
class Options:
    """How a pipeline run behaves; the CLI fills it from flags."""

    environ: Mapping[str, str]
    clock: Callable[[], float] = time.time
    force: bool = False
    dry_run: bool = False
    lease_seconds: float | None = None  # None: the attempt's timeout plus LEASE_MARGIN
    batch: int = BATCH


@dataclass(frozen=True, slots=True)
class Stored:
    """One delivery `fire` has committed to the store (or found there already: a duplicate)."""

    line: int | None  # the event's line, as `fire` read it
    delivery_id: str
    inserted: bool


@dataclass
class _Job:
    claim: Claim
    source: str | None = None
    line: int | None = None
    render_error: str | None = None
    request: Request | None = None  # fire has it rendered; a claim from the store has a dict


@dataclass
class _Done:
    job: _Job
    result: AttemptResult
    outcome: Outcome | None


class Pipeline:
    """Runs `fire` (events in) and `drain` (the retry queue) over one store and one sender."""

    def __init__(
        self,
        store: Store | None,
        options: Options,
        emit: Callable[[Report], None],
        on_bad_event: Callable[[BadEvent], None] = lambda bad: None,
        on_stored: Callable[[list[Event | BadEvent], list[Stored]], None] | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.emit = emit
        self.on_bad_event = on_bad_event
        # Called once a batch of `fire`'s events is committed (`serve` answers 202 then).
        self.on_stored = on_stored
        self.summary = Summary()
        self.token = _secrets.token_hex(16)
        self._done: list[_Done] = []
        # Attempts run here; a busy host's next jobs wait apart (at most 4 batches of them).
        self._admission: Admission[_Job] = Admission(self._attempt, waiting=4 * options.batch)
        self._held: set[str] = set()  # claimed and not yet recorded: their leases are renewed
        self._lease = 0.0
        self._notices: set[asyncio.Task[None]] = set()  # apart: _start waits on admitted tasks
        self._sender: Sender | None = None
        self._planner: Planner | None = None

    def _use(self, sender: Sender | None) -> None:
        self._sender = sender
        if sender is not None:
            # Twice the sender's limits: each running attempt has the next one ready behind it.
            self._admission.limit(running=sender.concurrency * 2, per_host=sender.per_host * 2)

    # --- fire -------------------------------------------------------------------------------

    async def fire(
        self, events: Iterable[Event | BadEvent], rules: list[Rule], sender: Sender | None
    ) -> Summary:
        """Match, store, send and record every event; returns the counts."""
        from hookctl.delivery.prepare import (
            Planner,  # rendering: fire's alone, so a retry-loop skips jinja
        )

        self._planner = Planner(self.options.environ, self.options.clock)
        self._use(sender)
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            async for batch in batches(events, self.options.batch):
                jobs: list[tuple[NewDelivery, _Job]] = []
                for n, item in enumerate(batch, 1):
                    if n % YIELD_EVERY == 0:
                        # Rendering holds the loop: let answers that came in start the next sends.
                        await asyncio.sleep(0)
                    if isinstance(item, BadEvent):
                        self.summary.bad_events += 1
                        self.on_bad_event(item)
                        continue
                    self.summary.events += 1
                    matched = [rule for rule in rules if rule.matches(item.name, item.data)]
                    if not matched:
                        continue
                    # Once per event, not per rule: without an `id` it hashes the whole event.
                    skip_dedupe = self.options.force or self.options.dry_run
                    key = None if skip_dedupe else dedupe_key(item.data)
                    for rule in matched:
                        planned = self._plan(rule, item, key)
                        if planned is not None:
                            jobs.append(planned)
                stored = await self._submit(jobs) if jobs else []
                if self.on_stored is not None:
                    self.on_stored(batch, stored)
            await self._finish()
        finally:
            flusher.cancel()
        return self.summary

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
            self.summary.add(report)
            self.emit(report)
            return None
        new = self._planner.delivery(rule, event, key, request, ticket, render_error)
        job = _Job(_claim_of(new, self.token), event.source, event.line, render_error, request)
        return new, job

    async def _submit(self, jobs: list[tuple[NewDelivery, _Job]]) -> list[Stored]:
        assert self.store is not None
        now = self.options.clock()
        lease = self.options.lease_seconds or (max(n.timeout for n, _ in jobs) + LEASE_MARGIN)
        self._lease = max(self._lease, lease)
        results = self.store.enqueue(
            [n for n, _ in jobs], now=now, claim_token=self.token, lease_seconds=lease
        )
        self._held.update(delivery_id for delivery_id, inserted in results if inserted)
        earlier = [delivery_id for delivery_id, inserted in results if not inserted]
        # What the earlier delivery became, so a duplicate says so (a failed one is no success).
        recorded = self.store.statuses(earlier) if earlier else {}
        for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True):
            if not inserted:
                self._report(job, delivery_id, None, recorded.get(delivery_id))
                continue
            if job.render_error is not None:
                self._record(job, None, job.render_error)
                continue
            await self._start(job)
        return [
            Stored(job.line, delivery_id, inserted)
            for (_, job), (delivery_id, inserted) in zip(jobs, results, strict=True)
        ]

    # --- retry-loop ---------------------------------------------------------------------------

    async def drain(
        self, sender: Sender, *, stop: asyncio.Event | None = None, ids: Sequence[str] | None = None
    ) -> Summary:
        """Send every delivery due when called (or just `ids`, if due) once; returns the counts."""
        assert self.store is not None
        self._use(sender)
        # Due as of now: what this pass reschedules for a moment from now waits for the next pass.
        due_by = self.options.clock()
        self._lease = self.options.lease_seconds or (130.0 + LEASE_MARGIN)
        flusher = asyncio.create_task(self._flush_periodically())
        watcher = asyncio.create_task(self._hand_back_on(stop)) if stop is not None else None
        # Claim a chunk at a time, once that much room is free: one transaction per chunk,
        # not one per freed slot.
        chunk = max(1, min(self.options.batch, sender.concurrency))
        try:
            while stop is None or not stop.is_set():
                while self._admission.room() < chunk:
                    await self._admission.wait_one()
                if stop is not None and stop.is_set():
                    break
                claims = self.store.claim(
                    now=self.options.clock(),
                    limit=chunk,
                    lease_seconds=self._lease,
                    token=self.token,
                    due_by=due_by,
                    ids=ids,
                )
                if not claims:
                    break
                self._held.update(claim.id for claim in claims)
                for claim in claims:
                    await self._start(_Job(claim))
            await self._finish()
        finally:
            flusher.cancel()
            if watcher is not None:
                watcher.cancel()
        return self.summary

    # --- attempts -------------------------------------------------------------------------------

    async def _start(self, job: _Job) -> None:
        # Bound the work in flight: reading and claiming wait here, so memory stays flat.
        await self._admission.add(host_key(job.claim.url), job)

    async def _attempt(self, job: _Job) -> None:
        assert self._sender is not None
        claim = job.claim
        if claim.unrendered:
            # Stored bare (a crash came before its failure was recorded): never sent as is.
            self._record(job, None, UNRENDERED)
            return
        request = job.request or Request.from_dict(claim.request)
        try:
            resolved = resolve(request, self.options.environ)
        except RenderError as exc:
            # A variable this process lacks: the user's to fix, so held, not failed (nothing sent).
            self._record(job, None, f"held: {exc}", held=True)
            return
        secret_values = tuple(self.options.environ[name] for name in request.secrets)
        # The delivery id is the Standard Webhooks `webhook-id`: the same on every retry and replay.
        outcome = await self._sender.send(
            resolved, timeout=claim.timeout, secrets=secret_values, webhook_id=claim.id
        )
        self._record(job, outcome, outcome.error)
        if len(self._done) >= self.options.batch:
            self._flush()

    def _record(
        self, job: _Job, outcome: Outcome | None, error: str | None, *, held: bool = False
    ) -> None:
        """Decide a delivery's new state. No outcome: nothing was sent, so it is no attempt;
        it failed to render (failed for good) or is `held` (pending, due again at once)."""
        claim = job.claim
        now = self.options.clock()
        attempts = claim.run_attempts + 1  # what the retry policy counts: since the last replay
        first = claim.first_attempt_at or (outcome.started_at if outcome else now)
        if outcome is None:
            verdict = "held" if held else "permanent"
        else:
            verdict = (
                "permanent"
                if outcome.permanent
                else classify(outcome.status_code, accept=claim.accept)
            )
        next_at = None
        status: Literal["pending", "succeeded", "failed"]
        if verdict == "held":
            # Due again at once: the next pass (not this one) or run with the setting fixed sends it.
            status, next_at = "pending", now
        elif verdict == "success":
            status = "succeeded"
            error = None
        elif verdict == "retry":
            next_at = next_attempt_at(
                RetryPolicy.from_dict(claim.policy),
                attempts=attempts,
                first_attempt_at=first,
                now=now,
                retry_after=outcome.retry_after if outcome else None,
            )
            status = "pending" if next_at is not None else "failed"
        else:
            status = "failed"
        result = AttemptResult(
            delivery_id=claim.id,
            token=claim.token,
            started_at=outcome.started_at if outcome else now,
            duration_ms=outcome.duration_ms if outcome else 0.0,
            status_code=outcome.status_code if outcome else None,
            error=error,
            response_headers=outcome.response_headers if outcome else None,
            response_body=outcome.response_body if outcome else None,
            status=status,
            next_attempt_at=next_at,
            sent=outcome is not None,
        )
        self._done.append(_Done(job, result, outcome))

    def _flush(self) -> None:
        if not self._done or self.store is None:
            return
        done, self._done = self._done, []
        # on_failure notices go into the store in the same transaction as the failure itself.
        notices = {
            d.job.claim.id: self._failure_notice(d.job.claim, d.result)
            for d in done
            if d.result.status == "failed" and d.job.claim.on_failure
        }
        applied, inserted = self.store.complete_with_follow_ups(
            [d.result for d in done],
            now=self.options.clock(),
            follow_ups={key: new for key, (new, _) in notices.items()},
            claim_token=self.token,
            lease_seconds=self._lease or LEASE_MARGIN,
        )
        self._held.difference_update(d.result.delivery_id for d in done)
        for item, ok in zip(done, applied, strict=True):
            claim, result = item.job.claim, item.result
            if not ok:
                # Another process took this delivery over after our lease ran out; its outcome wins.
                continue
            self._report(item.job, claim.id, result)
        jobs = [job for new, job in notices.values() if new.id in inserted]
        if jobs:
            # Schedule, not await: _flush runs inside attempts and the flusher.
            task = asyncio.ensure_future(self._send_notices(jobs))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)

    def _report(
        self,
        job: _Job,
        delivery_id: str,
        result: AttemptResult | None,
        recorded: str | None = None,
    ) -> None:
        """Count and emit one delivery's outcome; no result means a duplicate (of a delivery
        `recorded` with that status), not sent."""
        claim = job.claim
        report = Report(
            rule=claim.rule,
            status=result.status if result else "duplicate",
            method=claim.method,
            url=claim.url,
            delivery_id=delivery_id,
            event_id=claim.event_id,
            ticket=claim.ticket,
            source=job.source,
            line=job.line,
            replays=claim.replays,
            recorded=recorded,
        )
        if result is not None:
            # Over the delivery's life, as `log` counts them; nothing sent is no attempt.
            report.attempts = claim.attempts + int(result.sent)
            report.sent = result.sent
            report.status_code = result.status_code
            report.error = result.error
            report.duration_ms = result.duration_ms
            report.next_attempt_at = result.next_attempt_at
        self.summary.add(report)
        self.emit(report)

    async def _send_notices(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if job.render_error is not None:
                self._record(job, None, job.render_error)
            else:
                await self._start(job)

    def _failure_notice(self, claim: Claim, result: AttemptResult) -> tuple[NewDelivery, _Job]:
        from hookctl.delivery.notices import failure_notice

        new, error = failure_notice(
            claim, result, environ=self.options.environ, now=self.options.clock()
        )
        return new, _Job(_claim_of(new, self.token), render_error=error)

    async def _flush_periodically(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self._flush()
            if time.monotonic() - renewed >= self._lease / 3:
                renewed = time.monotonic()
                self._renew_leases()

    def _renew_leases(self) -> None:
        """Keep the claims still waiting or in flight: a lease only has to outlive a crash."""
        if self._held and self.store is not None:
            until = self.options.clock() + self._lease
            self.store.extend_lease(sorted(self._held), token=self.token, until=until)

    async def _finish(self) -> None:
        while self._admission or self._notices:
            if self._admission.closed:
                self._hand_back()  # what was held back after the stop goes back too
            await asyncio.gather(*self._admission.tasks, *self._notices)
            self._flush()
        self._flush()

    async def _hand_back_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._hand_back()

    def _hand_back(self) -> None:
        """Stopping: claims held back behind a busy host go back to the queue, unattempted."""
        jobs = self._admission.close()
        if jobs and self.store is not None:
            ids = [job.claim.id for job in jobs]
            self.store.release(ids, token=self.token)
            self._held.difference_update(ids)
            self.summary.handed_back += len(ids)


def _claim_of(new: NewDelivery, token: str) -> Claim:
    return Claim(
        id=new.id,
        token=token,
        rule=new.rule,
        ticket=new.ticket,
        url=new.url,
        method=new.method,
        request=new.request,
        policy=new.policy,
        timeout=new.timeout,
        accept=new.accept,
        attempts=0,
        first_attempt_at=None,
        on_failure=new.on_failure,
        event=new.event,
        event_id=new.event_id,
        unrendered=new.unrendered,
    )
