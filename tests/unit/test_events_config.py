"""events.py (progress events, the console renderer) and config.py (settings from the environment)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from transferkit.config import DEFAULT_MAX_PIXELS, Settings, resolve_settings
from transferkit.errors import ConfigError
from transferkit.events import ConsoleRenderer, Event, Reporter, make_reporter


def test_a_task_emits_start_advances_and_one_end_in_order():
    events: list[Event] = []
    rep = Reporter(events.append)
    rep.message("hello", n=1)
    with rep.task("embed", total=5, description="Embedding") as t:
        t.advance(2)
        t.advance(3, rate=1.5)
        t.end()  # ending twice (explicitly, then on exit) reports one end
    assert [e.kind for e in events] == ["message", "start", "advance", "advance", "end"]
    assert events[0].message == "hello" and events[0].data == {"n": 1}
    assert [e.completed for e in events[1:]] == [0, 2, 5, 5]
    assert {e.task_id for e in events[1:]} == {t.id} and events[3].data == {"rate": 1.5}
    assert events[1].to_dict()["description"] == "Embedding" and events[1].total == 5


def test_two_tasks_have_distinct_ids_and_quiet_reports_nothing():
    events: list[Event] = []
    rep = Reporter(events.append)
    a, b = rep.task("a", 1), rep.task("b", 1)
    assert a.id != b.id
    assert make_reporter(None, quiet=True).enabled is False
    assert make_reporter(events.append).callback == events.append
    assert isinstance(make_reporter(None).callback, ConsoleRenderer)


@pytest.mark.parametrize("terminal", [False, True])
def test_console_renderer_prints_messages_and_draws_bars_only_on_a_terminal(terminal):
    buf = io.StringIO()
    render = ConsoleRenderer(Console(file=buf, force_terminal=terminal, width=100, highlight=False), transient=False)
    rep = Reporter(render)
    rep.message("Data: 2 classes")
    rep.warning("skipped x.jpg")
    with rep.task("epoch", total=4, description="epoch 1/3", unit="it") as t:
        t.advance(4)
    out = buf.getvalue()
    assert "Data: 2 classes" in out and "Warning: skipped x.jpg" in out
    assert ("epoch 1/3" in out) is terminal  # a pipe or a log gets no bar (and no blank line where one was)
    if not terminal:
        assert out.splitlines() == ["Data: 2 classes", "Warning: skipped x.jpg"]


def test_settings_from_the_environment_and_their_errors(tmp_path):
    s = Settings.from_env({"TRANSFERKIT_CACHE": str(tmp_path), "TRANSFERKIT_MAX_PIXELS": "1_000"})
    assert s.cache_dir == Path(tmp_path) and s.max_pixels == 1000
    assert Settings.from_env({"TRANSFERKIT_MAX_PIXELS": "0"}).max_pixels is None
    d = Settings.from_env({})
    assert d.max_pixels == DEFAULT_MAX_PIXELS and d.cache_dir == Path.home() / ".cache" / "transferkit"
    with pytest.raises(ConfigError, match=r"TRANSFERKIT_MAX_PIXELS must be a non-negative integer .*got 'lots'"):
        Settings.from_env({"TRANSFERKIT_MAX_PIXELS": "lots"})
    with pytest.raises(ConfigError, match=r"`max_pixels` must be a positive integer or None"):
        Settings(max_pixels=0)
    assert resolve_settings(s) is s and s.replace(max_pixels=5).max_pixels == 5
