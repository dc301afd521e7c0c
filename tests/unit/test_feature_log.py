"""The worker's offline feature log: one Parquet part per flush and UTC day, every row once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from app.worker.handoff import Columns
from app.worker.sinks import FeatureLog
from features.card import FEATURE_NAMES
from features.store import CARD_VIEW


def _row(txn_id: str, at: datetime) -> dict[str, Any]:
    return {"txn_id": txn_id, "card_id": "card-1", "event_time": at, **dict.fromkeys(FEATURE_NAMES, 1.5)}


def test_a_flush_splits_rows_by_their_utc_day(tmp_path: Path) -> None:
    paris = timezone(timedelta(hours=1))
    rows = [
        _row("a", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)),
        _row("b", datetime(2026, 12, 1, 0, 30, tzinfo=paris)),  # 23:30 UTC on the 30th
        _row("c", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
        _row("d", datetime(2026, 12, 3, 12, 0, tzinfo=UTC)),
    ]
    log = FeatureLog(tmp_path, "w0", flush_rows=1_000, flush_s=3_600)
    log.add(Columns.of(rows))
    assert log.written == 0  # not due yet
    log.flush()

    found = {
        part.parent.name: sorted(pq.read_table(part).column("txn_id").to_pylist())
        for part in (tmp_path / CARD_VIEW).glob("date=*/part-*.parquet")
    }
    assert found == {"date=2026-11-30": ["a", "b"], "date=2026-12-01": ["c"], "date=2026-12-03": ["d"]}
    assert log.written == 4
    table = pq.read_table(tmp_path / CARD_VIEW / "date=2026-11-30").sort_by("txn_id")
    assert table.column("event_time").to_pylist()[1] == datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert table.column(FEATURE_NAMES[0]).to_pylist() == [1.5, 1.5]
    assert not list((tmp_path / CARD_VIEW).glob("date=*/.part-*"))  # no temporary file left
