"""The trainer's merchant features follow the audit's day (``training.feature_refresh``): built once per
new day of the audit's clock, looked for every ``features_refresh_s``, retried after a failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.demo import on_the_demo_clock
from app.errors import FraudstreamError
from app.settings import Settings
from training.feature_refresh import FeatureRefresh

DAY = datetime(2026, 12, 4, 0, 5, tzinfo=UTC)


class World:
    def __init__(self) -> None:
        self.t = 0.0  # the trainer's monotonic clock
        self.audit: datetime | None = None
        self.built: list[datetime] = []
        self.fail = False

    def refresh(self) -> datetime | None:
        if self.fail:
            raise FraudstreamError("export: PostgreSQL: connection refused")
        assert self.audit is not None
        self.built.append(self.audit)
        return self.audit


def _refresh(world: World, every: float = 60.0) -> FeatureRefresh:
    return FeatureRefresh(
        Settings(features_refresh_s=every), Path("history"), audit_clock=lambda: world.audit,
        refresh=world.refresh, clock=lambda: world.t,
    )  # fmt: skip


def test_features_are_built_once_for_each_new_day_of_the_audit() -> None:
    world = World()
    refresh = _refresh(world)
    refresh.maybe_run()
    assert world.built == [], "no decision yet: nothing to build"
    world.audit, world.t = DAY, 60.0
    refresh.maybe_run()
    assert world.built == [DAY], "the first look builds the audit's day (a restarted trainer's too)"
    world.audit, world.t = DAY + timedelta(hours=23), 3600.0
    refresh.maybe_run()
    assert world.built == [DAY], "the same day: nothing new"
    world.audit, world.t = DAY + timedelta(days=1), 3630.0
    refresh.maybe_run()
    assert world.built == [DAY], "looked 30 s ago: not yet"
    world.t = 3660.0
    refresh.maybe_run()
    assert world.built == [DAY, DAY + timedelta(days=1)]
    world.audit, world.t = DAY - timedelta(days=3), 7200.0  # an audit that went back (a restored database)
    refresh.maybe_run()
    assert len(world.built) == 2


def test_a_failed_refresh_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    refresh = _refresh(world)
    world.audit, world.fail = DAY, True
    refresh.maybe_run()
    assert "merchant features not refreshed: export: PostgreSQL: connection refused" in caplog.text
    assert refresh.day is None
    world.fail, world.t = False, 60.0
    refresh.maybe_run()
    assert world.built == [DAY]
    assert refresh.day == DAY.date()


def test_zero_turns_it_off() -> None:
    world = World()
    world.audit = DAY
    refresh = _refresh(world, every=0)
    for world.t in (0.0, 1e6):
        refresh.maybe_run()
    assert world.built == []


def test_the_demo_keeps_the_features_on_its_simulated_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDSTREAM_FEATURES_REFRESH_S", raising=False)
    monkeypatch.delenv("FRAUDSTREAM_MERCHANT_CACHE_S", raising=False)
    # 1,000 cards at 200 txn/s: a simulated day every ~10 s
    assert on_the_demo_clock(1000, 200) == {
        "trainer": {"FRAUDSTREAM_FEATURES_REFRESH_S": "2"},
        "worker": {"FRAUDSTREAM_MERCHANT_CACHE_S": "0"},
    }
    assert on_the_demo_clock(100, 1000)["trainer"] == {"FRAUDSTREAM_FEATURES_REFRESH_S": "1"}
    monkeypatch.setenv("FRAUDSTREAM_FEATURES_REFRESH_S", "30")
    assert on_the_demo_clock(1000, 200)["trainer"] == {"FRAUDSTREAM_FEATURES_REFRESH_S": "30"}
