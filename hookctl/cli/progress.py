"""The progress bar on stderr that long batches show on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from hookctl.delivery import observe

PROGRESS_AFTER = 0.5  # seconds a batch runs before a progress bar appears


class ProgressBar:
    """A transient progress bar on stderr for long batches; silent unless stderr is a terminal.

    It also stays away when stdout is the same terminal: there the line printed per delivery is
    the progress, and a live bar would tear those lines apart. It appears only once a batch has
    run for PROGRESS_AFTER seconds, so short runs never flicker.
    """

    def __init__(self, label: str, *, total: int | None = None, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled and sys.stderr.isatty() and not sys.stdout.isatty()
        self.done = 0
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self.console: Any = None  # a rich Console to draw on (default: stderr)

    def notify(self, event: observe.PipelineEvent) -> None:
        """A pipeline observer: a step per decided delivery; a one-off pass's size as total."""
        if isinstance(event, observe.Reported):
            self.advance()
        elif isinstance(event, observe.Due) and self._bar is None:
            self.total = event.count

    def advance(self) -> None:
        """Count one item done."""
        self.done += 1
        if (
            self._bar is None
            and self.enabled
            and time.monotonic() - self._started >= PROGRESS_AFTER
        ):
            self._start()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def stop(self) -> None:
        """Remove the bar (it leaves no trace on the terminal)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _start(self) -> None:
        from rich import progress
        from rich.console import Console

        self._bar = progress.Progress(
            *progress_columns(self.total),
            console=self.console or Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
        self._bar.start()


def progress_columns(total: int | None) -> list[Any]:
    """What the bar shows: done (of total), the rate, and the time left (or taken, if the total
    is not known)."""
    from rich import progress
    from rich.text import Text

    class Rate(progress.ProgressColumn):
        """Items a second, over rich's recent window."""

        def render(self, task: progress.Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")

    columns: list[Any] = [progress.TextColumn("{task.description}"), progress.BarColumn()]
    if total:
        columns += [
            progress.MofNCompleteColumn(),
            Rate(),
            progress.TextColumn("eta"),
            progress.TimeRemainingColumn(),
        ]
    else:
        columns += [progress.TextColumn("{task.completed}"), Rate(), progress.TimeElapsedColumn()]
    return columns
