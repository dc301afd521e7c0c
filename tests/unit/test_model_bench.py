"""The model micro-benchmark's scoring-step timing, on CPU (the GPU figures come from a lent machine)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import model_bench
from app.model_bench import reference_rows, stage_bench, synthetic_model


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """stage_bench sets the scoring process's collector settings (quiet_gc): put the test run's back."""
    thresholds = gc.get_threshold()
    yield None
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = [c for c in gc.callbacks if getattr(c, "__name__", "") != "timed"]


def test_stage_bench_reports_each_batch_and_mode_with_the_traffics_flagged_share(restore_gc: None) -> None:
    model = synthetic_model(10, 3, "cpu", threads=1)
    x = np.zeros((400, len(model.features)), np.float32)
    x[::2, 0], x[1::2, 0] = 5.0, -5.0  # every other row far on the fraud side of the synthetic label
    scores = model.predict(x[:2])
    assert scores[0] >= 0.5 > scores[1]  # so any even-sized batch is exactly half flagged

    rows = stage_bench(model, x, batches=(10, 50), rounds=4)

    assert [(r["explain_all"], r["batch"]) for r in rows] == [
        (False, 10),
        (False, 50),
        (True, 10),
        (True, 50),
    ]
    for r in rows:
        assert r["device"] == "cpu"
        assert r["batches"] == 4
        assert r["flagged_share"] == 0.5
        assert 0 < r["ms_per_batch_p50"] <= r["ms_per_batch_p95"]
        assert r["rows_per_s"] > 0


def test_reference_rows_come_in_the_models_feature_order(tmp_path: Path) -> None:
    features = ("amount", "card_count_1h", "km_from_home")
    table = pa.table(
        {"km_from_home": [3.0, None], "label": [0, 1], "amount": [10.5, 20.0], "card_count_1h": [1, 2]}
    )
    pq.write_table(table, tmp_path / "reference.parquet")

    x = reference_rows(tmp_path, features)

    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([[10.5, 1, 3.0], [20.0, 2, np.nan]], np.float32))


def test_stage_needs_a_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["model_bench", "--stage", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        model_bench.main()
    assert not (tmp_path / "x.json").exists()
