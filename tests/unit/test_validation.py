"""Great Expectations validation: passes simulated history, fails clearly on corrupted copies."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.errors import FraudstreamError
from app.history import partitions, read_history, write_history
from app.schema import HISTORY_SCHEMA
from app.simulator.model import SimConfig, simulate
from expectations.validate import validate_frame, validate_history
from features.backfill import card_feature_frame
from features.merchant import MERCHANT_FEATURES


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    write_history(simulate(SimConfig(customers=400, merchants=800, days=6, seed=3)), root)
    return root


def _corrupt(
    clean: Path, tmp_path: Path, change: Callable[[pd.DataFrame], pd.DataFrame], typed: bool = True
) -> Path:
    root = tmp_path / "history"
    shutil.copytree(clean, root)
    target = partitions(root)[2].path
    frame = change(pq.read_table(target).to_pandas())
    table = pa.Table.from_pandas(frame, schema=HISTORY_SCHEMA if typed else None, preserve_index=False)
    pq.write_table(table, target)
    return root


def test_simulated_history_passes(clean: Path, tmp_path: Path) -> None:
    summary = validate_history(clean, tmp_path / "report")
    assert summary.success, summary.one_line()
    assert summary.evaluated >= 30
    assert summary.quarantined_rows == 0
    assert (tmp_path / "report" / "summary.json").exists()
    docs = Path(summary.data_docs.removeprefix("file://"))
    assert docs.exists()
    assert "transactions" in docs.read_text()


def _set(column: str, value: object, rows: slice = slice(0, 3)) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(object)
        frame.loc[frame.index[rows], column] = value
        return frame

    return change


def _duplicate_id(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[5], "txn_id"] = frame.loc[frame.index[0], "txn_id"]
    return frame


@pytest.mark.parametrize(
    ("name", "change", "typed", "expect_in_line", "quarantined"),
    [
        ("nulls", _set("amount", None), True, "amount: amount is required", 3),
        ("negative", _set("amount", -12.5), True, "amounts are positive", 3),
        ("duplicate", _duplicate_id, True, "txn_id is the idempotency key", 2),
        ("pan", _set("card_id", "4111 1111 1111 1111"), True, "never a card number", 3),
        ("weight", _set("weight", -1.0), True, "weight: a row stands for itself", 3),
        (
            "types",
            lambda f: f.assign(amount=f["amount"].astype(str)),
            False,
            "do not match the history schema",
            None,
        ),
    ],
)
def test_corrupted_copies_fail_clearly_and_quarantine_rows(
    clean: Path,
    tmp_path: Path,
    name: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    typed: bool,
    expect_in_line: str,
    quarantined: int | None,
) -> None:
    root = _corrupt(clean, tmp_path, change, typed)
    summary = validate_history(root, tmp_path / "report")
    line = summary.one_line()
    assert not summary.success
    assert "\n" not in line
    assert line.startswith("validate: FAILED")
    assert expect_in_line in line, line
    quarantine = pd.read_parquet(summary.quarantine)
    assert len(quarantine) >= 1
    if quarantined is not None:
        assert len(quarantine) == quarantined, quarantine[["txn_id", "_reason"]]
    assert quarantine["_reason"].str.len().gt(0).all()


def test_a_file_written_before_the_weight_column_passes_and_each_row_weighs_1(
    clean: Path, tmp_path: Path
) -> None:
    root = tmp_path / "history"
    shutil.copytree(clean, root)
    target = partitions(root)[2].path
    pq.write_table(pq.read_table(target).drop_columns(["weight"]), target)
    summary = validate_history(root, tmp_path / "report")
    assert summary.success, summary.one_line()
    history = read_history(root)
    assert (history["weight"] == 1.0).all(), "no null, every row itself"
    assert len(history) == summary.rows


def test_unknown_suite_is_a_one_line_error(clean: Path, tmp_path: Path) -> None:
    with pytest.raises(FraudstreamError, match="unknown suite 'nope'"):
        validate_history(clean, tmp_path, "nope")


def _training_like_frame() -> pd.DataFrame:
    history = simulate(SimConfig(customers=300, merchants=600, days=10, seed=12))
    frame = card_feature_frame(history)
    for name in MERCHANT_FEATURES:
        frame[name] = np.nan
    frame["channel_ecommerce"] = 0.0
    frame["channel_atm"] = 0.0
    frame["label"] = history.set_index("txn_id").loc[frame["txn_id"], "is_fraud"].to_numpy()
    frame["split"] = "train"
    frame["weight"] = 1.0
    return frame


def test_training_set_suite_passes_real_features_and_fails_corrupted_ones(tmp_path: Path) -> None:
    frame = _training_like_frame()
    assert validate_frame(frame, tmp_path / "ok", "training_set").success
    broken = frame.copy()
    broken.loc[broken.index[:3], "label"] = 2
    broken.loc[broken.index[3:5], "km_from_prev"] = -1.0
    broken.loc[broken.index[5], "weight"] = -2.0
    summary = validate_frame(broken, tmp_path / "bad", "training_set")
    assert not summary.success
    line = summary.one_line()
    assert "label: binary label (3 rows)" in line
    assert "km_from_prev" in line
    assert "weight: how many transactions a row stands for" in line
    assert summary.quarantined_rows == 6
