"""The one progress meter (stylekit/logs.py) behind the bulk job's, the video path's and
training's progress lines, on a clock the test moves."""

from __future__ import annotations

import math

import pytest

from stylekit import logs
from stylekit.logs import Progress, format_duration


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    return now


def test_rate_and_time_left_since_the_start(clock: list[float]) -> None:
    meter = Progress(total=100, every=10.0)
    clock[0] += 5.0
    meter.add(20)
    assert meter.rate() == pytest.approx(4.0)
    assert meter.left() == pytest.approx(20.0)  # 80 left at 4/s
    assert format_duration(meter.left()) == "0m20s"


def test_a_window_measures_the_current_speed_not_a_slow_start(clock: list[float]) -> None:
    meter = Progress(window=2)
    clock[0] += 60.0  # a slow first step (warm-up)
    meter.add(4)
    for _ in range(2):
        clock[0] += 1.0
        meter.add(4)
    assert meter.rate() == pytest.approx(4.0)  # the last two steps only
    assert Progress(total=None).left() == math.inf


def test_due_once_every_period(clock: list[float]) -> None:
    meter = Progress(total=3, every=10.0)
    assert not meter.due()
    clock[0] += 10.0
    assert meter.due()
    assert not meter.due()  # not again until another period has passed
    assert Progress(total=3, every=0.0).due()  # every=0: a line at every update


def test_unknown_total_or_rate_has_no_time_left(clock: list[float]) -> None:
    meter = Progress(total=10)
    assert meter.rate() == 0.0
    assert meter.left() == math.inf
    assert format_duration(meter.left()) == "?"
