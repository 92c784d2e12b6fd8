"""Per-host admission: which delivery attempts run now, and which wait behind their host.

The sender bounds connections per host, but an attempt waiting there for its host's slot
still counts against the pipeline's bound on work in flight. A dead host, whose attempts each
take their whole timeout, would fill that bound and stall every other host. So a host with
its share already running gets no more tasks: its next jobs wait in a queue of their own,
bounded like everything else, and start as running jobs end.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

Job = TypeVar("Job")


class Admission(Generic[Job]):
    """Runs `run(job)` as tasks: at most `running` at once, `per_host` of them for one host."""

    def __init__(
        self, run: Callable[[Job], Coroutine[Any, Any, None]], *, waiting: int, running: int = 1
    ) -> None:
        self._run = run
        self.waiting = waiting  # jobs held back for busy hosts, at most: memory stays bounded
        self.running = running
        self.per_host = running
        self.tasks: set[asyncio.Task[None]] = set()
        self._parked: dict[str, deque[Job]] = {}
        self._parked_count = 0
        self._busy: Counter[str] = Counter()
        self.closed = False  # once closed, nothing more starts: jobs added are held back

    def limit(self, *, running: int, per_host: int) -> None:
        """Set how many tasks may run, in all and per host."""
        self.running = max(1, running)
        self.per_host = max(1, min(per_host, self.running))

    def __len__(self) -> int:
        """Jobs admitted and not finished: running, or waiting for their host."""
        return len(self.tasks) + self._parked_count

    def room(self) -> int:
        """How many more jobs `add` would take without waiting, some of them perhaps held back."""
        return min(self.running - len(self.tasks), self.running + self.waiting - len(self))

    async def wait_one(self) -> None:
        """Wait until a running task ends (a waiting job may then start)."""
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def add(self, host: str, job: Job) -> None:
        """Start `job` now, or hold it behind its host; waits while too much is admitted."""
        # Jobs wait only while tasks run (every end starts one), so this always wakes up.
        while not self.closed and len(self) >= self.running + self.waiting:
            await self.wait_one()
        if self.closed or self._busy[host] >= self.per_host or len(self.tasks) >= self.running:
            self._parked.setdefault(host, deque()).append(job)
            self._parked_count += 1
        else:
            self._launch(host, job)

    def take(self, wanted: Callable[[Job], bool]) -> list[Job]:
        """Remove and return the jobs held back (not started) that `wanted` picks."""
        taken: list[Job] = []
        for host in list(self._parked):
            kept: deque[Job] = deque()
            for job in self._parked[host]:
                (taken if wanted(job) else kept).append(job)
            if kept:
                self._parked[host] = kept
            else:
                del self._parked[host]
        self._parked_count -= len(taken)
        return taken

    def close(self) -> list[Job]:
        """Start nothing more; the jobs still held back for their host, removed and returned."""
        self.closed = True
        jobs = [job for waiting in self._parked.values() for job in waiting]
        self._parked.clear()
        self._parked_count = 0
        return jobs

    def _launch(self, host: str, job: Job) -> None:
        self._busy[host] += 1
        task = asyncio.create_task(self._run(job))
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._ended(done, host))

    def _ended(self, task: asyncio.Task[None], host: str) -> None:
        """A slot is free: start a waiting job, this host's first, else one of a host with room."""
        self.tasks.discard(task)
        self._busy[host] -= 1
        if not self._busy[host]:
            del self._busy[host]
        if self.closed:
            return
        for key in (host, *self._parked):
            waiting = self._parked.get(key)
            if waiting and self._busy[key] < self.per_host:
                self._parked_count -= 1
                job = waiting.popleft()
                if not waiting:
                    del self._parked[key]
                self._launch(key, job)
                return
