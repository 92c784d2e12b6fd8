"""Rate limits per endpoint and Retry-After holds (issue 15): when a delivery may go out.

Every worker on a store shares one schedule per endpoint, kept by the store
(`reserve_slots`): a delivery sends at a slot it was handed, slots never closer than the
strictest rate any rule named for the endpoint within the store's RATE_MEMORY. A process
reserves slots for the deliveries it has waiting for one endpoint in one write (a batch), so
the cost is a store write per few sends, and nothing at all for an endpoint with no rate.

A slot further away than HORIZON is not waited for: the claim goes back to the queue, due at
about its turn (no attempt spent), and claims skip the endpoint until its schedule has room.
A 429 or 503 with Retry-After holds the whole endpoint (every worker, rule or not) until
then, at most RETRY_AFTER_HOLD from now.

Slots are spaced SPACING_MARGIN wider than the rate asks: a request leaves a few milliseconds
after its slot (the event loop, the lease check, the connection), and two requests delayed
differently would otherwise put one more into some second than the receiver allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from hookctl.errors import StoreError
from hookctl.rules.rate import Rate, parse_rate
from hookctl.store.endpoint import endpoint_of
from hookctl.store.endpoint_records import EndpointLimit
from hookctl.store.records import Claim

if TYPE_CHECKING:
    from hookctl.delivery.storethread import StoreThread
    from hookctl.transport.http import Outcome

HORIZON = 2.0  # seconds: a slot further off is not waited for (well inside any lease)
REFRESH = 1.0  # seconds between reads of the endpoints' shared limits (rates, holds)
MAX_BATCH = 50  # slots reserved in one write at most
SPACING_MARGIN = 0.05  # slots 5% wider than the rate: 5/s sends one every 210 ms
RETRY_AFTER_HOLD = 300.0  # a Retry-After holds its endpoint at most this long (5 minutes)
SLOWING_STATUSES = (429, 503)
LATE = (
    0.02  # seconds: woken this much after its slot, a delivery takes another (the slack is 50 ms)
)
MAX_LATE = 2  # ... at most this many times; then it goes, late (a machine that busy: the slack)
HAND_BACK_LINGER = 0.005  # seconds a release waits for other hand-backs to join it

T = TypeVar("T")


def spacing(rate: Rate) -> float:
    """Seconds between two slots under `rate`, with the margin."""
    return rate.interval * (1 + SPACING_MARGIN)


def stored_rate(claim: Claim) -> Rate | None:
    """The rate the delivery's rule named, as fire stored it with the request; None if none."""
    text = claim.request.get("rate")
    if not text:
        return None
    try:
        return parse_rate(text)
    except ValueError:
        return None  # not ours to fail a delivery over: sent without its own rate


def describe_wait(limit: EndpointLimit, now: float) -> str | None:
    """Why a pending delivery to this endpoint waits now, for the log; None when nothing slows it."""
    import time

    def clock(at: float) -> str:
        return time.strftime("%H:%M:%S UTC", time.gmtime(at))

    if limit.not_before is not None and limit.not_before > now:
        why = f" ({limit.not_before_reason})" if limit.not_before_reason else ""
        return f"endpoint slowed by Retry-After until {clock(limit.not_before)}{why}"
    if limit.rate is not None and limit.next_slot is not None and limit.next_slot > now:
        return f"rate {limit.rate}: next slot {clock(limit.next_slot)}"
    return None


@dataclass
class _Lane:
    """One endpoint's state in this process: slots reserved and not used, who waits for one."""

    slots: deque[float] = field(default_factory=deque)
    wanting: int = 0  # deliveries waiting for a slot now
    reserving: asyncio.Future[None] | None = None
    full_until: float = 0.0  # the store had no slot within the horizon: none until then
    next_free: float = 0.0  # the schedule's end as last seen: where hand-backs line up
    hold: float = 0.0  # a Retry-After this process heard or read: nothing goes before it
    held_to_store: float = 0.0  # the latest hold this process wrote
    rate: tuple[str, float] | None = None  # the strictest (rate, spacing) known here

    def learn(self, rate: str, interval: float) -> None:
        """A rate named for this endpoint: the strictest one known applies."""
        if self.rate is None or interval > self.rate[1]:
            self.rate = (rate, interval)


class Limiter:
    """Decides, per delivery, whether it sends now, after a short wait, or goes back for later."""

    def __init__(self, db: StoreThread | None, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._limits: dict[str, EndpointLimit] = {}
        self._read_at: float | None = None
        self._reading: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # reservations, reads and releases
        self._returning: dict[int, list[str]] = {}  # hand-backs waiting, by second of `until`
        self._flushing: asyncio.Task[bool] | None = None

    def applies(self, claim: Claim) -> bool:
        """Whether anything may slow this delivery (then `turn` says how): its rule's rate, or
        its endpoint's as read from the store or heard here. Synchronous, for the hot path:
        a delivery to an endpoint nothing limits costs these dict lookups, no await."""
        if self.db is None:
            return False
        if self._read_at is None:
            return True  # not read yet: `turn` reads the endpoints' limits first
        if self.clock() - self._read_at >= REFRESH and (
            self._reading is None or self._reading.done()
        ):
            self._reading = self._spawn(self._read(self.clock()))  # in the background
        if "rate" in claim.request:
            return True
        endpoint = endpoint_of(claim.url)
        return endpoint in self._limits or endpoint in self._lanes

    async def turn(self, claim: Claim) -> float | None:
        """Wait for the delivery's slot (at most HORIZON); None: send now. Otherwise the time
        to hand it back until: its turn is further off, or the endpoint is held."""
        if self.db is None:
            return None
        if self._read_at is None:
            await self._refresh()
        endpoint = endpoint_of(claim.url)
        own = stored_rate(claim)
        shared = self._limits.get(endpoint)
        lane = self._lanes.get(endpoint)
        if own is None and shared is None and lane is None:
            return None  # the common case: a dict lookup, nothing more
        if lane is None:
            lane = self._lanes[endpoint] = _Lane()
        if own is not None:
            lane.learn(str(own), spacing(own))  # other rules' deliveries here follow it at once
        if shared is not None and shared.rate is not None:
            lane.learn(shared.rate, shared.interval)
        # Its own rule's rate is recorded with the reservation; a delivery of a rule without
        # one only follows the rate others recorded (it must not keep that rate alive).
        rule = claim.rule if own is not None else None
        late = 0  # slots this delivery woke too late for
        while True:
            now = self.clock()
            hold = max(lane.hold, (shared.not_before or 0.0) if shared else 0.0)
            if hold > now + HORIZON:
                return hold
            if lane.rate is None:
                if hold <= now:
                    return None
                await asyncio.sleep(hold - now)
                continue  # a later Retry-After may have come in meanwhile
            label, interval = (str(own), spacing(own)) if own is not None else lane.rate
            slot = await self._slot(lane, endpoint, rule, label, max(interval, lane.rate[1]))
            if slot is None:
                # Lined up behind the others handed back, due when its turn is near.
                lane.next_free = max(lane.next_free, now) + lane.rate[1]
                return max(now, lane.next_free - HORIZON / 2)
            wait = slot - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if lane.hold > slot:
                continue  # a Retry-After came in while it waited: that slot is void
            if self.clock() > slot + LATE and late < MAX_LATE:
                # Woken late (a busy machine): sent now, it would crowd the next slots, perhaps
                # another process's, into one second. That slot is void; take the next.
                late += 1
                continue
            return None

    async def _slot(
        self, lane: _Lane, endpoint: str, rule: str | None, rate: str, interval: float
    ) -> float | None:
        """A slot reserved for this endpoint, reserving a batch for every waiter if none is left;
        None when the schedule has none within the horizon."""
        lane.wanting += 1
        try:
            while True:
                if lane.slots:
                    return lane.slots.popleft()
                if lane.full_until > self.clock():
                    return None
                if lane.reserving is None or lane.reserving.done():
                    lane.reserving = self._spawn(
                        self._reserve(lane, endpoint, rule, rate, interval)
                    )
                await asyncio.shield(lane.reserving)
        finally:
            lane.wanting -= 1

    async def _reserve(
        self, lane: _Lane, endpoint: str, rule: str | None, rate: str, interval: float
    ) -> None:
        assert self.db is not None
        await asyncio.sleep(0)  # the deliveries starting in this turn of the loop join the batch
        count = min(MAX_BATCH, max(1, lane.wanting - len(lane.slots)))
        now = self.clock()
        try:
            got = await self.db.call(
                self.db.store.reserve_slots,
                endpoint,
                rule=rule,
                rate=rate,
                interval=interval,
                count=count,
                now=now,
                horizon=HORIZON,
            )
        except StoreError:
            lane.full_until = now + REFRESH  # the store cannot say: go back, try again later
            lane.next_free = max(lane.next_free, now + HORIZON)
            return
        lane.slots.extend(got.slots)
        lane.learn(got.rate, got.interval)  # another process's stricter rule, maybe
        lane.next_free = max(lane.next_free, got.next_slot)
        if len(got.slots) < count:
            lane.full_until = got.next_slot - HORIZON

    async def answered(self, claim: Claim, outcome: Outcome) -> None:
        """A 429 or 503 with Retry-After holds the endpoint for every delivery and worker."""
        if outcome.status_code not in SLOWING_STATUSES or not outcome.retry_after:
            return
        endpoint = endpoint_of(claim.url)
        now = self.clock()
        seconds = min(outcome.retry_after, RETRY_AFTER_HOLD)
        until = now + seconds
        lane = self._lanes.setdefault(endpoint, _Lane())
        lane.hold = max(lane.hold, until)
        lane.slots.clear()  # reserved before the hold: void
        if self.db is None or until <= lane.held_to_store + 0.5:
            return  # told the store this (or about this) already
        lane.held_to_store = until
        reason = f"HTTP {outcome.status_code}, Retry-After {seconds:g}s"
        # On a store error this process holds it anyway; the delivery's own retry waits as always.
        with contextlib.suppress(StoreError):
            await self.db.call(
                self.db.store.slow_endpoint, endpoint, until=until, now=now, reason=reason
            )

    async def hand_back(self, delivery_id: str, token: str, until: float) -> bool:
        """Give an unattempted claim back, due at about `until` (no attempt spent): everything
        handed back meanwhile goes in one release per second of `until`. False: the store
        failed (the claim comes back when its lease runs out)."""
        assert self.db is not None
        self._returning.setdefault(math.ceil(until), []).append(delivery_id)
        if self._flushing is None or self._flushing.done():
            self._flushing = self._spawn(self._flush(token))
        return await asyncio.shield(self._flushing)

    async def _flush(self, token: str) -> bool:
        assert self.db is not None
        await asyncio.sleep(HAND_BACK_LINGER)  # the hand-backs coming in now join this write
        ok = True
        while self._returning:
            returning, self._returning = self._returning, {}
            for until, ids in sorted(returning.items()):
                try:
                    await self.db.call(self.db.store.release, ids, token=token, until=until)
                except StoreError:
                    ok = False
        return ok

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """The run is over: let a read of the limits still under way finish (nothing is lost)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        """The run is cancelled: no reservation or release of ours may outlive it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh(self) -> None:
        """Read the endpoints' limits when they are more than REFRESH old (one read, shared)."""
        assert self.db is not None
        now = self.clock()
        if self._read_at is not None and now - self._read_at < REFRESH:
            return
        if self._reading is None or self._reading.done():
            self._reading = self._spawn(self._read(now))
        await asyncio.shield(self._reading)

    async def _read(self, now: float) -> None:
        assert self.db is not None
        with contextlib.suppress(StoreError):  # what was read last stands; read again next time
            self._limits = await self.db.call(self.db.store.endpoint_limits, now=now)
        self._read_at = now
