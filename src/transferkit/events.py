"""Progress events: long operations report through a callback.

Library code never prints. It reports through a :class:`Reporter`, which turns calls into
:class:`Event` objects for a callback: the CLI (and the Python API by default) renders them
with Rich on stderr (:class:`ConsoleRenderer`), a server can stream them, a test can collect
them in a list::

    events = []
    tk.embed_folder(ex, "data/", "store/", progress=events.append)
    [e.kind for e in events]  # ['start', 'advance', ..., 'end', 'message']
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["message", "warning", "start", "advance", "end"]


@dataclass(frozen=True)
class Event:
    """One progress event.

    Attributes:
        kind: ``message`` / ``warning`` (a line of text), ``start`` (a task with ``total`` steps
            begins), ``advance`` (``completed`` steps done so far), ``end`` (the task finished).
        task: the task's name (``"embed"``, ``"features"``, ``"epoch"``, ``"evaluate"``, ...);
            empty for messages.
        task_id: distinguishes tasks that run at the same time (unique per reporter).
        description: a human label for the task (``"epoch 2/5"``).
        total: the task's number of steps (images, usually), or None when unknown.
        completed: steps done so far.
        message: the text of a message.
        data: structured extras (e.g. ``{"images_per_second": 120.5}``).
        unit: what a step of the task is (``"img"``, ``"it"``), for rates.
    """

    kind: EventKind
    task: str = ""
    task_id: int = 0
    description: str = ""
    total: int | None = None
    completed: int = 0
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    unit: str = "img"
    time: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "task": self.task, "task_id": self.task_id, "description": self.description,
                "total": self.total, "completed": self.completed, "message": self.message, "data": dict(self.data),
                "unit": self.unit}


Callback = Callable[[Event], None]
_ids = itertools.count(1)


class Task:
    """A running task of a :class:`Reporter`; use as a context manager."""

    def __init__(self, reporter: Reporter, name: str, total: int | None, description: str, unit: str = "img"):
        self._reporter = reporter
        self.unit = unit
        self.name = name
        self.total = total
        self.description = description or name
        self.completed = 0
        self.id = next(_ids)
        self._ended = False

    def __enter__(self) -> Task:
        self._emit("start")
        return self

    def __exit__(self, *exc) -> None:
        self.end()

    def advance(self, n: int = 1, **data: Any) -> None:
        self.completed += int(n)
        self._emit("advance", data)

    def end(self, **data: Any) -> None:
        if not self._ended:
            self._ended = True
            self._emit("end", data)

    def _emit(self, kind: EventKind, data: Mapping[str, Any] | None = None) -> None:
        self._reporter.emit(Event(kind, task=self.name, task_id=self.id, description=self.description, total=self.total,
                                  completed=self.completed, data=dict(data or {}), unit=self.unit))


class Reporter:
    """What library code reports through: messages and tasks, forwarded to ``callback`` (or dropped)."""

    def __init__(self, callback: Callback | None = None):
        self.callback = callback

    @property
    def enabled(self) -> bool:
        return self.callback is not None

    def emit(self, event: Event) -> None:
        if self.callback is not None:
            self.callback(event)

    def message(self, text: str, **data: Any) -> None:
        self.emit(Event("message", message=text, data=data))

    def warning(self, text: str, **data: Any) -> None:
        self.emit(Event("warning", message=text, data=data))

    def task(self, name: str, total: int | None = None, description: str = "", *, unit: str = "img") -> Task:
        return Task(self, name, total, description, unit)


def make_reporter(progress: Callback | Reporter | None = None, *, quiet: bool = False) -> Reporter:
    """The reporter of a public function: ``progress`` if given, silent when ``quiet``, else a :class:`ConsoleRenderer`."""
    if isinstance(progress, Reporter):
        return progress
    if progress is not None:
        return Reporter(progress)
    return Reporter(None if quiet else ConsoleRenderer())


class ConsoleRenderer:
    """Renders events on stderr with Rich: messages as lines, tasks as progress bars with images/s."""

    def __init__(self, console=None, *, transient: bool = True):
        self._console = console
        self._transient = transient
        self._progress = None
        self._tasks: dict[int, Any] = {}

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        return self._console

    def __call__(self, event: Event) -> None:
        if event.kind in ("message", "warning"):
            text = event.message if event.kind == "message" else f"Warning: {event.message}"
            self.console.print(text, markup=False)
        elif not self.console.is_terminal:  # a log file or a pipe gets the lines, not bars' leftovers
            return
        elif event.kind == "start":
            prog = self._ensure_progress()
            self._tasks[event.task_id] = prog.add_task(event.description, total=event.total, unit=event.unit)
        elif event.kind == "advance" and event.task_id in self._tasks:
            self._progress.update(self._tasks[event.task_id], completed=event.completed)
        elif event.kind == "end" and event.task_id in self._tasks:
            self._progress.remove_task(self._tasks.pop(event.task_id))
            if not self._tasks:
                self._progress.stop()
                self._progress = None

    def _ensure_progress(self):
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.text import Text

            class _Rate(TextColumn):
                def __init__(self):
                    super().__init__("")

                def render(self, task):  # type: ignore[override]
                    speed = task.finished_speed or task.speed
                    unit = task.fields.get("unit", "img")
                    return Text(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                      transient=self._transient)
            self._progress.start()
        return self._progress
