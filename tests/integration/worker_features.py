"""A features-only worker's outputs, read back, and the check that they equal the batch backfill's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from app.settings import Settings
from features.card import FEATURE_NAMES
from features.store import CARD_VIEW


@dataclass
class Worker:
    settings: Settings
    log: Path

    def feature_log(self) -> pd.DataFrame:
        root = self.settings.feature_log_dir / CARD_VIEW
        if not root.exists():
            return pd.DataFrame(columns=["txn_id"])
        return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()

    def wait_for_rows(self, n: int, timeout_s: float = 120) -> pd.DataFrame:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frame = self.feature_log()
            if len(frame) >= n:
                return frame
            time.sleep(1)
        raise AssertionError(
            f"feature log has {len(self.feature_log())} of {n} rows:\n{self.log.read_text()[-3000:]}"
        )


def assert_batch_features(stream: pd.DataFrame, batch: pd.DataFrame, who: str = "stream") -> None:
    """Every card feature of ``stream`` equals ``batch``'s, row for row (NaN included)."""
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            stream[name].to_numpy(float), batch[name].to_numpy(float), rtol=1e-9, atol=1e-9,
            equal_nan=True, err_msg=f"{who} and batch disagree on {name}",
        )  # fmt: skip
