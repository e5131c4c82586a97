"""Progress bars and messages on stderr (rich), silenced by ``quiet``."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UI:
    """Where long-running API calls report progress. ``quiet`` silences everything but warnings."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        return self._console

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    @contextmanager
    def progress(self):
        """A rich Progress with images/s, or None when quiet."""
        if self.quiet:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        class _Rate(TextColumn):
            def __init__(self):
                super().__init__("")

            def render(self, task):  # type: ignore[override]
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.1f} img/s" if speed else "- img/s", style="progress.data.speed")

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=self.console, transient=True) as prog:
            yield prog
