"""The outcome writer: decide each attempt's new state and record it in the store, in batches.

One writer task records outcomes as soon as they come in (what came in meanwhile goes in the
same transaction), retries a write that failed and, when the store stays unwritable, marks the
run broken. The on_failure and auto-disable notices a recorded batch inserts are started from
here. It also renews the leases of what is held (leases.py). The pipeline mixes this in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from hookctl.delivery import observe, ordering
from hookctl.delivery.health import Health
from hookctl.delivery.leases import LEASE_MARGIN, Leases
from hookctl.delivery.policy import classify, next_attempt_at
from hookctl.errors import StoreError
from hookctl.render.request import Request
from hookctl.rules.policy import RetryPolicy
from hookctl.store.records import AttemptResult, Claim, NewDelivery
from hookctl.transport.http import Outcome

R = TypeVar("R")

FLUSH_LINGER = 0.005  # the writer waits this long after an answer for others to join its batch


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


class Outcomes(Leases):
    """Records outcomes and starts the notices they bring; state set up by Pipeline.__init__."""

    _done: list[_Done]
    _wake: asyncio.Event  # outcomes wait to be written
    _closing: bool  # the run is over: the writer stops
    _notices: set[asyncio.Task[None]]
    _turns: ordering.Turns | None
    _health: Health

    if TYPE_CHECKING:  # further down the chain (attempts.py; _store is pipeline.py's)

        def _store(
            self, method: Callable[..., R], /, *args: object, **kwargs: object
        ) -> Awaitable[R]: ...
        def _report(self, job: _Job, delivery_id: str, result: AttemptResult | None) -> None: ...
        def _endpoint_news(self) -> Awaitable[None]: ...
        def _start(self, job: _Job) -> Awaitable[None]: ...
        def _hand_over(self) -> Awaitable[None]: ...

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
        self._health.mark(claim, outcome, result)  # the breaker's reading (delivery/health.py)
        self._done.append(_Done(job, result))
        self._wake.set()

    async def _send_notices(self, jobs: list[_Job]) -> None:
        for job in jobs:
            if job.render_error is not None:
                self._record(job, None, job.render_error)
            else:
                await self._start(job)
        await self._hand_over()

    def _failure_notice(self, claim: Claim, result: AttemptResult) -> tuple[NewDelivery, _Job]:
        from hookctl.delivery.notices import failure_notice

        new, error = failure_notice(
            claim, result, environ=self.options.environ, now=self.options.clock()
        )
        if self.options.allow_net:
            new.request["allow_net"] = list(self.options.allow_net)
        return new, _Job(_claim_of(new, self.token), render_error=error)

    async def _writer(self) -> None:
        """Record outcomes as they come in, and keep the leases of what is held."""
        while not self._closing:
            renew_in = self._confirmed_at + self._lease / 3 - self.options.clock()
            if renew_in > 0 and not self._wake.is_set():
                # Not wait_for: on 3.11 it can swallow a cancel that lands as the event is set.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([waiter], timeout=renew_in)
                finally:
                    waiter.cancel()
            if self._closing:
                return
            if self._done and len(self._done) < self.options.batch:
                await asyncio.sleep(FLUSH_LINGER)  # the answers arriving now join this batch
            self._wake.clear()
            await self._write()
            if self._broken is not None:
                return
            if self.options.clock() - self._confirmed_at >= self._lease / 3:
                await self._reconfirm()

    async def _write(self) -> None:
        """Record every outcome waiting, in batches; retried while the store fails, then the
        run is marked broken (once broken, one more try only: what cannot be written stays)."""
        async with self._writing:
            while self._done:
                done, self._done = (
                    self._done[: self.options.batch],
                    self._done[self.options.batch :],
                )
                try:
                    if self._broken is not None:
                        await self._complete(self.db.call, done)  # type: ignore[union-attr]
                    else:
                        await self._complete(self._store, done)
                except StoreError as exc:
                    self._done[:0] = done
                    self._broken = self._broken or exc
                    return

    async def _complete(self, call: Callable[..., object], done: list[_Done]) -> None:
        assert self.db is not None
        started = time.perf_counter()
        # on_failure notices go into the store in the same transaction as the failure itself.
        notices = {
            d.job.claim.id: self._failure_notice(d.job.claim, d.result)
            for d in done
            if d.result.status == "failed" and d.job.claim.on_failure
        }
        # Auto-disable's notices, enqueued only by the transaction that pauses their endpoint.
        disabling, endpoint_notices = self._health.disable_notices(
            [(d.job.claim, d.result) for d in done],
            environ=self.options.environ,
            allow_net=self.options.allow_net,
        )
        applied, inserted = await call(  # type: ignore[misc]
            self.db.store.complete_with_follow_ups,
            [d.result for d in done],
            now=self.options.clock(),
            follow_ups={key: new for key, (new, _) in notices.items()},
            claim_token=self.token,
            lease_seconds=self._lease or LEASE_MARGIN,
            endpoint_notices=disabling,
        )
        self._held.difference_update(d.result.delivery_id for d in done)
        self.observer.notify(observe.Flushed(len(done), time.perf_counter() - started))
        for item, ok in zip(done, applied, strict=True):
            if self._turns is not None:
                self._turns.recorded(item.job.claim, item.result.status)
            if not ok:
                # Another process took this delivery over after our lease ran out; its outcome wins.
                continue
            self._report(item.job, item.job.claim.id, item.result)
        jobs = [job for new, job in notices.values() if new.id in inserted]
        jobs += [
            _Job(_claim_of(new, self.token), render_error=error)
            for new, error in endpoint_notices
            if new.id in inserted
        ]
        if self._health.has_news([d.result for d in done]):
            await self._endpoint_news()
        if jobs:
            self._held.update(job.claim.id for job in jobs)  # inserted leased to us
            task = asyncio.ensure_future(self._send_notices(jobs))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)


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
        order_key=new.order_key,
    )
