"""One attempt and what it brings: admission, the endpoint's health, postponing, reports.

A claim is started (admitted, or handed back unsent while its endpoint is open), sent once its
slot and lease allow, and its outcome handed to the writer (outcomes.py); what the run decides
is counted and told to the observers here. The pipeline (pipeline.py) ends this chain.
"""

from __future__ import annotations

import asyncio
import contextlib

from hookctl.delivery import observe
from hookctl.delivery.admission import Admission
from hookctl.delivery.outcomes import FLUSH_LINGER, Outcomes, _Job
from hookctl.delivery.ratelimit import Limiter
from hookctl.delivery.reports import Report, Summary
from hookctl.errors import RenderError, StoreError
from hookctl.render.request import Request, resolve
from hookctl.store.records import AttemptResult
from hookctl.transport.http import Sender, host_key
from hookctl.transport.netguard import allowed_by

UNRENDERED = "cannot render: the stored request is incomplete; nothing sent (replay renders it from its rule)"


class Attempts(Outcomes):
    """Starts, sends and reports each claim; state set up by Pipeline.__init__."""

    summary: Summary
    _admission: Admission[_Job]
    _sender: Sender | None
    _unsent: list[str]  # with send=False: claims to hand back, not to send
    _rate: Limiter  # rate limits and Retry-After holds (issue 15)
    _postponing: list[tuple[_Job, str, float | None]]  # for an open endpoint

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
