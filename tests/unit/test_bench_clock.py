"""The pipeline bench flags a run during which the host paused this virtual machine."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from app import bench_pipeline
from app.bench_pipeline import ClockWatch, clock_leap


def test_a_wall_clock_ahead_of_the_monotonic_clock_is_a_leap() -> None:
    assert clock_leap(0.1, 0.1) == 0.0
    assert clock_leap(0.099, 0.1) == 0.0, "a wall clock slewed back is not a pause"
    assert clock_leap(2.4, 0.1) == pytest.approx(2.3)


def test_the_clock_watch_records_a_pause_once(monkeypatch: pytest.MonkeyPatch) -> None:
    paused = [0.0]  # seconds the host "paused" us: the wall clock is stepped, the monotonic one is not
    fake = SimpleNamespace(time=lambda: time.time() + paused[0], monotonic=time.monotonic)
    monkeypatch.setattr(bench_pipeline, "time", fake)
    watch = ClockWatch()
    watch.start()
    time.sleep(0.35)
    paused[0] = 2.3
    time.sleep(0.35)
    watch.stop.set()
    watch.join(timeout=5)
    ours = [leap for _, leap in watch.jumps if abs(leap - 2.3) <= 0.02]  # a real pause may add its own
    assert len(ours) == 1, watch.jumps
