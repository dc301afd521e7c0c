"""The feature log's compaction: one file a day, each transaction once, nothing a worker writes
meanwhile lost, old days dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.worker.handoff import Columns
from app.worker.sinks import FeatureLog
from features import log_compaction
from features.card import FEATURE_NAMES
from features.log_compaction import COMPACTED, compact_feature_log
from features.store import CARD_VIEW

DAY = datetime(2026, 11, 27, tzinfo=UTC)


def _row(txn_id: str, at: datetime, value: float = 1.5) -> dict[str, Any]:
    return {"txn_id": txn_id, "card_id": "card-1", "event_time": at, **dict.fromkeys(FEATURE_NAMES, value)}


def _flush(log: FeatureLog, rows: list[dict[str, Any]]) -> None:
    log.add(Columns.of(rows))
    log.flush()


def _log(tmp_path: Path) -> Path:
    """Days 11-26 (one part), 11-27 (three parts, one transaction logged twice), 11-28 (one part) and
    11-30, the newest (two parts)."""
    log = FeatureLog(tmp_path, "w0", flush_rows=1_000, flush_s=3_600)
    _flush(log, [_row("old", DAY - timedelta(days=1))])
    _flush(log, [_row("b", DAY + timedelta(hours=2)), _row("a", DAY + timedelta(hours=1))])
    _flush(log, [_row("c", DAY + timedelta(hours=3)), _row("b", DAY + timedelta(hours=2), 9.9)])  # b again
    _flush(log, [_row("d", DAY + timedelta(hours=4)), _row("e", DAY + timedelta(days=1))])
    _flush(log, [_row("f", DAY + timedelta(days=3))])
    _flush(log, [_row("g", DAY + timedelta(days=3, hours=1))])
    return tmp_path / CARD_VIEW


def _parts(root: Path, day: str) -> list[str]:
    return sorted(p.name for p in (root / f"date={day}").glob("part-*.parquet"))


def test_each_day_but_the_newest_becomes_one_file_holding_each_transaction_once(tmp_path: Path) -> None:
    root = _log(tmp_path)
    assert [len(_parts(root, d)) for d in ("2026-11-26", "2026-11-27", "2026-11-28", "2026-11-30")] == [
        1,
        3,
        1,
        2,
    ]
    newest = _parts(root, "2026-11-30")

    done = compact_feature_log(root, keep_days=3)
    assert done.line() == (
        "feature log: 3 parts of 1 day(s) merged into one file a day (4 rows, 1 logged twice left out);"
        " 1 day(s) 2026-11-26 removed (older than the retention)"
    )
    assert not (root / "date=2026-11-26").exists()
    (merged,) = _parts(root, "2026-11-27")
    assert merged.startswith(COMPACTED)
    table = pq.read_table(root / "date=2026-11-27" / merged)
    assert table.schema == pq.read_schema(next((root / "date=2026-11-28").glob("part-*.parquet")))
    assert table.column("txn_id").to_pylist() == ["b", "a", "c", "d"], "as they were written"
    b = table.filter(pa.compute.equal(table.column("txn_id"), "b"))
    assert b.column(FEATURE_NAMES[0]).to_pylist() == [1.5], "the first row logged"
    assert len(_parts(root, "2026-11-28")) == 1, "a single part is left as it is"
    assert _parts(root, "2026-11-30") == newest, "the newest day is still being written"
    assert not list(root.glob("date=*/.*")), "no temporary file left"

    again = compact_feature_log(root, keep_days=3)
    assert again.line() == "feature log: nothing to merge"
    assert _parts(root, "2026-11-27") == [merged]


def test_a_part_written_while_the_day_is_merged_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _log(tmp_path)
    merge = log_compaction._merge
    late = FeatureLog(tmp_path, "w1", flush_rows=1_000, flush_s=3_600)

    def merge_while_a_worker_writes(parts: list[Path], target: Path) -> tuple[int, int]:
        _flush(late, [_row("late", DAY + timedelta(hours=5))])  # after the parts were listed
        return merge(parts, target)

    monkeypatch.setattr(log_compaction, "_merge", merge_while_a_worker_writes)
    compact_feature_log(root, keep_days=0)
    kept = _parts(root, "2026-11-27")
    assert len(kept) == 2
    assert any(name.startswith(COMPACTED) for name in kept)
    rows = pq.read_table(root / "date=2026-11-27").column("txn_id").to_pylist()
    assert sorted(rows) == ["a", "b", "c", "d", "late"]
    assert (root / "date=2026-11-26").exists(), "keep_days 0 keeps every day"


def test_a_day_with_an_unreadable_part_is_left_as_it_was_and_named(tmp_path: Path) -> None:
    root = _log(tmp_path)
    torn = root / "date=2026-11-27" / "part-w9-1-000000.parquet"
    torn.write_bytes(b"PAR1 not a parquet file")
    before = _parts(root, "2026-11-27")
    done = compact_feature_log(root, keep_days=0)
    assert done.parts == 0
    assert done.failed[0].startswith("2026-11-27 (ArrowInvalid: ")
    assert done.line().startswith(
        "feature log: nothing to merge; not merged, left as they were: 2026-11-27 ("
    )
    assert _parts(root, "2026-11-27") == before
