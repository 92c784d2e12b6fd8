"""Ordered delivery in the pipeline (issue 15): which of a fire batch go now, and a drain pass
that claims the next of a key once the one before it is recorded.

The store decides whose turn it is (store/contract.py, "Order per key"): an ordered delivery
that is not its key's turn is enqueued unleased. `fire` asks which of its ordered ones it
holds (one `extend_lease` for the batch, only when the batch has ordered deliveries) and
sends only those; the rest wait, pending, for the claim that takes them in turn (`retry-loop`,
`serve`, or a later pass).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from hookctl.store.records import Claim, NewDelivery

WAITING = "an earlier delivery of its order_by key is pending; sent in turn"


def ordered_ids(
    deliveries: Sequence[NewDelivery], results: Sequence[tuple[str, bool]]
) -> list[str]:
    """The ids of the inserted deliveries that have an order key (usually none: no cost)."""
    return [
        delivery_id
        for d, (delivery_id, inserted) in zip(deliveries, results, strict=True)
        if inserted and d.order_key is not None
    ]


# How long a pass waits, at most, between looks at what it still holds of its ordered claims
# (a claim can leave without an outcome: dropped, handed back).
LOOK_EVERY = 0.25


class Turns:
    """A drain pass's ordered claims: once one of them is recorded finished (succeeded or
    failed for good), the next of its key may be claimable, so the pass claims again instead
    of leaving it for the next pass. A pass with no ordered claims never waits here."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._finished = False
        self._wake = asyncio.Event()

    def claimed(self, claims: Iterable[Claim]) -> None:
        """Note the ordered ones among a pass's claims."""
        self._ids.update(c.id for c in claims if c.order_key is not None)

    def recorded(self, claim: Claim, status: str) -> None:
        """An outcome was applied; a finished ordered one frees its key's next."""
        if claim.id in self._ids:
            self._ids.discard(claim.id)
            self._finished = self._finished or status != "pending"
            self._wake.set()

    async def next_turn(self, held: Callable[[], set[str]], stopped: Callable[[], bool]) -> bool:
        """Wait until an ordered claim of the pass has finished (True: claim again) or none
        is held any more (False: the pass is done)."""
        while not stopped():
            if self._finished:
                self._finished = False
                return True
            self._ids &= held()
            if not self._ids:
                return False
            self._wake.clear()
            # Not wait_for: on 3.11 it can swallow a cancel that lands as the event is set.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait([waiter], timeout=LOOK_EVERY)
            finally:
                waiter.cancel()
        return False
