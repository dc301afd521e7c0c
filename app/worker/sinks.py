"""Where computed features go: the Feast online store (per micro-batch) and the offline log.

The offline log is date-partitioned Parquet written in large batches by this process, one new
file per flush (``date=YYYY-MM-DD/part-<worker>-<seq>.parquet``): never Feast's offline push,
which rewrites the whole Parquet file on every call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.card import FEATURE_NAMES
from features.store import CARD_VIEW

if TYPE_CHECKING:
    from feast import FeatureStore

LOG_SCHEMA = pa.schema(
    [
        ("txn_id", pa.string()),
        ("card_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        *((name, pa.float64()) for name in FEATURE_NAMES),
    ]
)


class FeatureLog:
    def __init__(self, root: Path, worker: str, flush_rows: int, flush_s: float) -> None:
        self.root = root / CARD_VIEW
        self.worker = f"{worker}-{os.getpid()}"
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        self.last_flush = time.monotonic()
        self.written = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=LOG_SCHEMA)
        days = pd.Series(table.column("event_time").to_pandas()).dt.strftime("%Y-%m-%d").to_numpy()
        for day in sorted(set(days)):
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".part-{self.worker}-{self.seq:06d}.tmp"
            pq.write_table(table.filter(pa.array(days == day)), tmp, compression="zstd")
            tmp.rename(folder / f"part-{self.worker}-{self.seq:06d}.parquet")  # readers never see half a file
        self.seq += 1
        self.written += len(self.rows)
        self.rows = []


class OnlineFeatures:
    """Micro-batched writes of the latest card features to the Feast online store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        frame = pd.DataFrame(rows)
        latest = frame.sort_values("event_time").drop_duplicates("card_id", keep="last")
        self.store.write_to_online_store(CARD_VIEW, latest.drop(columns=["txn_id"]))
