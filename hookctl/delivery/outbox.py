"""Fire's outbox: match and render a batch, store it claimed, start what it may send.

Every request is in the store before it is sent: a batch's deliveries (and the events it keeps)
go in in one transaction, claimed by this run; duplicates, ordered ones not in their turn and a
paused endpoint's are reported or recorded at once, the rest started (attempts.py). The
pipeline (pipeline.py) ends this chain, and runs the batches in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hookctl.delivery import observe, ordering
from hookctl.delivery.attempts import Attempts
from hookctl.delivery.leases import LEASE_MARGIN
from hookctl.delivery.outcomes import _claim_of, _Job
from hookctl.delivery.reports import Report
from hookctl.events.event import BadEvent, Event
from hookctl.events.intake import dedupe_key, event_ticket
from hookctl.store.endpoint import endpoint_of, paused_note
from hookctl.store.event_records import NewEvent
from hookctl.store.ids import EventIds
from hookctl.store.records import NewDelivery

if TYPE_CHECKING:
    from hookctl.delivery.prepare import Planner
    from hookctl.rules.load import Rule

YIELD_EVERY = 32  # events planned between turns of the event loop


class Outbox(Attempts):
    """Plans and stores fire's batches; state set up by Pipeline.__init__."""

    _planner: Planner | None
    _event_ids: EventIds

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
