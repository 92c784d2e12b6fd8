"""How a pipeline run behaves (Options), read by the pipeline and the helpers it is built of."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

BATCH = 256  # events read, deliveries enqueued, or outcomes recorded per transaction


@dataclass
class Options:
    """How a pipeline run behaves; the CLI fills it from flags."""

    environ: Mapping[str, str]
    clock: Callable[[], float] = time.time
    force: bool = False
    dry_run: bool = False
    lease_seconds: float | None = None  # None: the attempt's timeout plus LEASE_MARGIN
    batch: int = BATCH
    # This process's network allow-list; fire records it with each delivery, so a later
    # process refused where this one was allowed holds the delivery instead of failing it.
    allow_net: tuple[str, ...] = ()
    keep_events: bool = True  # store every event read (for `plan`), with its deliveries
    # An event stored already, fired again (`serve`'s events page): its new deliveries name
    # that stored event instead of a new one being stored, so its page lists them.
    event_ref: str | None = None
    # False: fire only commits (serve's intake). What it would send is handed back to the
    # queue, due now, for a drain to claim: intake never waits for a slow receiver.
    send: bool = True
