"""The GPU path without a GPU: the model benchmark's scoring-step timing on CPU (the GPU figures come
from a lent machine), and the one-line refusal of ``device cuda`` where no GPU can be used."""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import model_bench
from app.errors import FraudstreamError
from app.model_bench import reference_rows, stage_bench, synthetic_model
from app.scoring.model import check_device
from app.settings import Settings
from app.worker.scoring_process import RemoteScorer


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """stage_bench sets the scoring process's collector settings (quiet_gc): put the test run's back."""
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield None
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


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


def test_a_model_without_reference_rows_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = synthetic_model(5, 2, "cpu", threads=1)
    model.booster.save_model(str(tmp_path / "model.ubj"))
    (tmp_path / "metadata.json").write_text(json.dumps({"features": list(model.features)}))
    out = tmp_path / "x.json"
    monkeypatch.setattr(sys, "argv", ["model_bench", "--model", str(tmp_path), "--stage", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"^model_bench: no reference rows for .*reference\.parquet"):
        model_bench.main()
    assert not out.exists()


def test_stage_needs_a_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["model_bench", "--stage", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        model_bench.main()
    assert not (tmp_path / "x.json").exists()


def test_a_cpu_device_needs_nothing() -> None:
    check_device("cpu")


def test_cuda_without_a_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDriver:
        class cuda:  # noqa: N801 - CuPy's own name
            class runtime:  # noqa: N801
                @staticmethod
                def getDeviceCount() -> int:  # noqa: N802
                    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\nmore")

    monkeypatch.setitem(sys.modules, "cupy", NoDriver)
    with pytest.raises(FraudstreamError, match=r"^device cuda: no GPU can be used \(cudaErrorNoDevice"):
        check_device("cuda")
    monkeypatch.setattr("xgboost.build_info", lambda: {"USE_CUDA": False})
    with pytest.raises(FraudstreamError, match="built without CUDA"):
        check_device("cuda")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="this machine may have a GPU")
def test_the_scoring_process_refuses_to_start_on_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a silent wait for a model that can never load: the worker gets the reason at start."""
    monkeypatch.setenv("FRAUDSTREAM_DEVICE", "cuda")
    scorer = RemoteScorer(Settings())
    try:
        with pytest.raises(FraudstreamError, match=r"did not start: .*device cuda: no GPU can be used"):
            scorer.wait_ready(ready_timeout_s=120)
    finally:
        scorer.process.join(timeout=30)
    assert scorer.process.exitcode == 0
