"""Lease renewal: keep the leases of the claims a run holds, and say whether one is still ours.

Before a request goes out, a claim whose lease is not known to be fresh is confirmed first
(one re-extension for every claim waiting, shared); one another worker took over is lost, and
dropped unsent. The pipeline (pipeline.py) mixes this in; the writer (outcomes.py) renews.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hookctl.delivery import observe
from hookctl.errors import StoreError

if TYPE_CHECKING:
    from hookctl.delivery.options import Options
    from hookctl.delivery.storethread import StoreThread

LEASE_MARGIN = 120.0  # a claim outlives its attempt by this much before others may take it


class Leases:
    """The leases of what a run holds; state set up by Pipeline.__init__."""

    db: StoreThread | None
    options: Options
    observer: observe.Observer
    token: str
    _held: set[str]  # claimed and not yet recorded: their leases are renewed
    _lost: set[str]  # claims another worker took over once our lease ran out
    _lease: float
    _confirmed_at: float  # when every claim in _held was last known ours
    _renewal: asyncio.Future[None] | None
    _writing: asyncio.Lock  # writes and lease renewals, one at a time
    _healthy: asyncio.Event  # clear while a store call is failing: sends wait
    _broken: StoreError | None  # the store stayed unwritable: stop sending

    async def _still_ours(self, delivery_id: str) -> bool:
        """Whether this claim's lease still holds, cheaply: a clock read while the leases were
        confirmed recently; otherwise one re-extension for every claim held, shared."""
        if not self._healthy.is_set():
            await self._healthy.wait()  # a store call is failing: wait for it to go through
        if self._broken is not None:
            return False
        if self.options.clock() - self._confirmed_at >= self._lease / 2:
            await self._reconfirm()
            if self.options.clock() - self._confirmed_at >= self._lease:
                return False  # the store could not say: the lease may have run out
        return delivery_id not in self._lost

    async def _reconfirm(self) -> None:
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self._renew_leases())
        await asyncio.shield(self._renewal)

    async def _renew_leases(self) -> None:
        """Push out the lease of every claim held; those another worker took are lost.

        A failure leaves the leases as they were, to be tried again by the next caller."""
        assert self.db is not None
        async with self._writing:  # not beside a write: its claims leave _held when it ends
            ids = sorted(self._held)
            started = self.options.clock()
            if ids:
                try:
                    kept = await self.db.call(
                        self.db.store.extend_lease,
                        ids,
                        token=self.token,
                        until=started + self._lease,
                    )
                except StoreError:
                    return
                lost = self._held.intersection(ids).difference(kept)
                if lost:
                    self._lost |= lost
                    self._held -= lost
                    self.observer.notify(observe.LeaseLost(len(lost)))
            self._confirmed_at = started
