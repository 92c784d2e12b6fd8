"""What one request's templates may spend, and the budget in effect while they render.

Every loop draws on an iteration budget, every render on a time budget, and every result a
template builds is checked against the output cap; results that each fit can still pile up (a
loop appending 1 MB strings to a list), so each is also charged to an allowance of
BUILT_FACTOR times the cap. `limits()` makes a budget the current one for a block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from jinja2.sandbox import SecurityError

MAX_OUTPUT = 1024 * 1024  # characters one rendering may produce (webhook.max_body overrides)
MAX_ITERATIONS = 1_000_000  # loop iterations in one request's templates, all loops together
RENDER_SECONDS = 1.0  # time for one request's templates, all together
# What one render may build in all (every intermediate string and list), in output caps: a
# filter chain over a big field builds a few caps' worth; a bomb builds thousands.
BUILT_FACTOR = 16


class Budget:
    """What one request's templates may still spend; set as current with `limits()`."""

    def __init__(
        self,
        output: int = MAX_OUTPUT,
        iterations: int = MAX_ITERATIONS,
        seconds: float | None = None,  # None: RENDER_SECONDS, read when the budget starts
    ) -> None:
        self.output = output
        self.iterations = iterations
        self.seconds = RENDER_SECONDS if seconds is None else seconds
        self.deadline = time.monotonic() + self.seconds
        self.built = 0  # characters (or list items) template operations have built so far

    def tick(self) -> None:
        """Spend one loop iteration (and check the clock)."""
        self.iterations -= 1
        if self.iterations < 0:
            raise SecurityError(f"more than {MAX_ITERATIONS:,} loop iterations")
        self.check_time()

    def check_time(self) -> None:
        """Refuse to go on once the time budget is spent."""
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {self.seconds:g}s")

    def check_size(self, size: int, what: str = "result") -> None:
        """Refuse a string or list larger than the output cap."""
        if size > self.output:
            raise SecurityError(f"{what} would be larger than {self.output:,} characters")

    def spend(self, size: int) -> None:
        """Charge a result just built; refuse once the render has built too much in all."""
        self.built += size
        if self.built > BUILT_FACTOR * self.output:
            raise SecurityError(
                f"the templates built more than {BUILT_FACTOR * self.output:,} characters "
                "of intermediate results"
            )


_current: ContextVar[Budget | None] = ContextVar("hookctl_budget", default=None)


def current() -> Budget:
    """The budget of the rendering in progress (a default one outside `limits()`)."""
    return _current.get() or Budget()


@contextlib.contextmanager
def limits(budget: Budget) -> Iterator[Budget]:
    """Make `budget` the one templates rendered in this block draw on."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)
