"""Card-state snapshots: the features folded from a snapshot equal those folded from the first day;
the days a training run reads."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd

from app.history import read_history, write_history
from app.simulator.model import SimConfig, simulate
from features.backfill import card_feature_frame, card_states
from features.snapshot import Snapshot, states_before
from training.jobs import first_day


def _features_from(history: Path, day: str) -> pd.DataFrame:
    states, _ = states_before(history, day)
    return card_feature_frame(read_history(history, since=day), states).set_index("txn_id")


def test_features_folded_from_a_snapshot_equal_those_folded_from_the_first_day(tmp_path: Path) -> None:
    world = simulate(SimConfig(customers=150, merchants=300, days=20, seed=3))
    write_history(world, tmp_path)
    whole = card_feature_frame(world).set_index("txn_id")
    days = sorted({p.name.removeprefix("date=") for p in tmp_path.glob("date=*")})
    first, later = days[10], days[15]

    states, line = states_before(tmp_path, first)
    assert line.endswith(f"from the first day + {(world['event_time'] < first).sum():,} transactions"), line
    assert [s.day for s in Snapshot.all(tmp_path)] == [first]
    got = _features_from(tmp_path, first)
    pd.testing.assert_frame_equal(got, whole.loc[got.index], check_exact=True)

    between = ((world["event_time"] >= first) & (world["event_time"] < later)).sum()
    _, line = states_before(tmp_path, later)
    assert line.endswith(f"from snapshot {first} + {between:,} transactions"), "only the days since"
    got = _features_from(tmp_path, later)
    pd.testing.assert_frame_equal(got, whole.loc[got.index], check_exact=True)

    # all days: the states the seeding folds from the whole history, card by card, byte for byte
    end = (world["event_time"].max() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    states, _ = states_before(tmp_path, end)
    assert {c: s.to_bytes() for c, s in states.items()} == {c: s.to_bytes() for c, s in card_states(world)}
    assert [s.day for s in Snapshot.all(tmp_path)] == [later, end], "the newest two are kept"

    # an unreadable snapshot (a torn disk write) is passed over for the one before it, and named
    newest = Snapshot.all(tmp_path)[-1]
    newest.path.write_bytes(b"not parquet")
    states, line = states_before(tmp_path, end)
    assert f"from snapshot {later} + " in line, line
    assert f"(snapshot {end} unreadable, passed over: " in line, line
    assert {c: s.to_bytes() for c, s in states.items()} == {c: s.to_bytes() for c, s in card_states(world)}

    # a day before the snapshots written again (a late decision exported): neither is used
    old = next(tmp_path.glob(f"date={days[3]}/*.parquet"))
    os.utime(old)
    _, line = states_before(tmp_path, later)
    assert "from the first day" in line, line


def test_a_training_run_reads_its_last_days_before_the_cut_off(tmp_path: Path) -> None:
    world = simulate(SimConfig(customers=50, merchants=100, days=30, seed=4, start=date(2026, 3, 1)))
    write_history(world, tmp_path)  # 2026-03-01 .. 03-30
    assert first_day(tmp_path, None, 10) == "2026-03-21", "ten days before the day after the last"
    assert first_day(tmp_path, pd.Timestamp("2026-03-15", tz="UTC"), 10) == "2026-03-05"
    assert first_day(tmp_path, None, 30) is None, "the history does not reach further back"
    assert first_day(tmp_path, None, 0) is None, "0: every day"
