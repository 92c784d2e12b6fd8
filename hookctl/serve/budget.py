"""Intake first: during a burst of posts, sends start only as fast as a share of what is committed.

`serve` commits posted events and sends their deliveries on one event loop (one core). Left
alone, the sends of the last burst take the CPU the next posts need, and every 202 waits
longer. So while intake is busy, a send has to wait for its turn: each delivery committed
earns the sending side `share` of a turn. Busy means intake committed a batch of at least
`busy_batch` events in the last `quiet` seconds (group commit makes batch size a measure of
how many posts are waiting at once; at a light load each batch holds one or two). Outside a
burst, sends start freely. The deliveries are in the store either way: a turn only decides
when one goes out, never whether.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from hookctl.transport.http import Outcome, Sender

SHARE = 0.1  # send turns per delivery committed, while intake is busy
BUSY_BATCH = 8  # a committed batch this big means posts are waiting at once
QUIET = 0.1  # seconds with no such batch before sends start freely again


class SendBudget:
    """Turns for sends: free while intake is quiet, `share` per delivery committed while busy."""

    def __init__(
        self,
        *,
        share: float = SHARE,
        busy_batch: int = BUSY_BATCH,
        quiet: float = QUIET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self.busy_batch = busy_batch
        self.quiet = quiet
        self.clock = clock
        self._busy_until = 0.0
        self._turns = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def busy(self) -> bool:
        """Whether intake is in a burst (sends wait for turns)."""
        return self.clock() < self._busy_until

    def committed(self, events: int, deliveries: int) -> None:
        """Intake committed `events` posted events, and `deliveries` new deliveries for them."""
        if events >= self.busy_batch:
            self._busy_until = self.clock() + self.quiet
            self._wake_when_quiet()
        # Turns saved up are capped, so a burst after a quiet spell starts with a few, not many.
        self._turns = min(self._turns + self.share * deliveries, float(self.busy_batch))
        self._release()

    async def turn(self) -> None:
        """Wait until this send may start."""
        if not self._waiting:
            if not self.busy():
                return
            if self._turns >= 1:
                self._turns -= 1
                return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._wake_when_quiet()
        try:
            await future
        except asyncio.CancelledError:
            if future in self._waiting:
                self._waiting.remove(future)
            raise

    def _release(self) -> None:
        """Start the waiting sends there are turns for (all of them once intake is quiet)."""
        free = not self.busy()
        while self._waiting and (free or self._turns >= 1):
            future = self._waiting.popleft()
            if future.done():
                continue
            if not free:
                self._turns -= 1
            future.set_result(None)

    def _wake_when_quiet(self) -> None:
        """Release every waiting send when the burst ends, even if nothing more is committed."""
        if not self._waiting:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self._busy_until - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_quiet)

    def _on_quiet(self) -> None:
        self._timer = None
        if self.busy():
            self._wake_when_quiet()
        else:
            self._release()


class BudgetedSender(Sender):
    """The HTTP sender, each attempt waiting for its turn in `budget` first."""

    def __init__(self, budget: SendBudget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    async def send(self, *args: Any, **kwargs: Any) -> Outcome | None:  # type: ignore[override]
        """Sender.send, once the budget gives this attempt its turn."""
        await self.budget.turn()
        return await super().send(*args, **kwargs)
