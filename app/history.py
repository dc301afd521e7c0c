"""Parquet transaction history on disk: ``<dir>/date=YYYY-MM-DD/part-0.parquet`` per UTC day."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.errors import FraudstreamError
from app.schema import HISTORY_SCHEMA, WEIGHT

PART = "part-0.parquet"


@contextmanager
def parquet_file(path: Path, schema: pa.Schema, compression: str = "zstd") -> Iterator[pq.ParquetWriter]:
    """A writer for ``path`` that writes it whole or not at all: to a hidden name not ending in
    ``.parquet`` (readers glob ``*.parquet``), renamed when the block ends, removed if it fails."""
    tmp = path.with_name(f".{path.stem}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression) as out:
            yield out
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: to a hidden ``.NAME.tmp``, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all (``parquet_file``)."""
    with parquet_file(path, table.schema) as out:
        out.write_table(table)


def write_history(
    frame: pd.DataFrame, out: Path, on_written: Callable[[Path], None] = lambda _: None
) -> list[Path]:
    """Write one Parquet file per UTC day of event_time (replacing that day's file)."""
    table = pa.Table.from_pandas(frame, schema=HISTORY_SCHEMA, preserve_index=False)
    if not frame["event_time"].is_monotonic_increasing:
        raise ValueError("history must be sorted by event_time before writing")
    micros = frame["event_time"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    day_index = micros // 86_400_000_000
    boundaries = [0, *(np.flatnonzero(np.diff(day_index)) + 1).tolist(), len(day_index)]
    days = {int(d): str(np.datetime64(int(d), "D")) for d in np.unique(day_index)}
    written = []
    for lo, hi in itertools.pairwise(boundaries):
        folder = out / f"date={days[int(day_index[lo])]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PART
        pq.write_table(table.slice(lo, hi - lo), path, compression="zstd")
        written.append(path)
        on_written(path)
    return written


@dataclass(frozen=True, order=True)
class Partition:
    day: str
    path: Path


def partitions(root: Path, since: str | None = None, before: str | None = None) -> list[Partition]:
    """The partitions, by day; ``since`` / ``before`` (YYYY-MM-DD): only the days in [since, before)."""
    if not root.is_dir():
        raise FraudstreamError(f"history folder {root} does not exist")
    found = sorted(
        Partition(day=p.parent.name.removeprefix("date="), path=p) for p in root.glob("date=*/*.parquet")
    )
    if not found:
        raise FraudstreamError(f"no date=YYYY-MM-DD/*.parquet partitions under {root}")
    return [p for p in found if (since is None or p.day >= since) and (before is None or p.day < before)]


def iter_history(root: Path, since: str | None = None) -> Iterator[tuple[Partition, pd.DataFrame]]:
    """Each partition (from day ``since``) as written (no type coercion: validation must see what is on
    disk), but a file written before the ``weight`` column gets it: each of its rows weighs 1."""
    for part in partitions(root, since):
        frame = pq.read_table(part.path).to_pandas()
        yield part, frame if WEIGHT in frame else frame.assign(**{WEIGHT: 1.0})


def read_history_file(path: Path) -> pa.Table:
    """One file in the history schema; a file written before the ``weight`` column: weight 1."""
    table = pq.read_table(path, schema=HISTORY_SCHEMA)
    at = HISTORY_SCHEMA.get_field_index(WEIGHT)
    return table.set_column(at, HISTORY_SCHEMA.field(at), pc.fill_null(table.column(at), 1.0))


def read_history(root: Path, since: str | None = None, before: str | None = None) -> pd.DataFrame:
    """The partitions of the days in [since, before) (default: all) in the history schema, sorted by
    event_time."""
    tables = [read_history_file(p.path) for p in partitions(root, since, before)]
    if not tables:
        return HISTORY_SCHEMA.empty_table().to_pandas()
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["event_time", "txn_id"], kind="stable").reset_index(drop=True)
