"""Ordered delivery in `fire` (issue 15): which of a batch it may send now, which wait.

The store decides whose turn it is (store/contract.py, "Order per key"): an ordered delivery
that is not its key's turn is enqueued unleased. `fire` asks which of its ordered ones it
holds (one `extend_lease` for the batch, only when the batch has ordered deliveries) and
sends only those; the rest wait, pending, for the claim that takes them in turn (`retry-loop`,
`serve`, or a later pass).
"""

from __future__ import annotations

from collections.abc import Sequence

from hookctl.store.records import NewDelivery

WAITING = "waiting: an earlier delivery of its order_by key is pending; sent in turn"


def ordered_ids(
    deliveries: Sequence[NewDelivery], results: Sequence[tuple[str, bool]]
) -> list[str]:
    """The ids of the inserted deliveries that have an order key (usually none: no cost)."""
    return [
        delivery_id
        for d, (delivery_id, inserted) in zip(deliveries, results, strict=True)
        if inserted and d.order_key is not None
    ]
