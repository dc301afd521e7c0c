"""The worker's bulk online writer stores exactly what Feast's own write_to_online_store stores."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from app.settings import Settings
from features.card import FEATURE_NAMES
from features.online_write import OnlineWriter
from features.store import CARD_VIEW, close_store, feature_store
from tests.services import fresh_database

COLUMNS = "entity_key, features, event_ts, created_ts"  # features/packed_store.py: a row per card


START = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _rows(n: int, seed: int = 7, start: datetime = START) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"card_id": f"card-{i:04d}", "event_time": start + timedelta(seconds=37 * i)}
        for j, name in enumerate(FEATURE_NAMES):
            kind = (i + j) % 7
            row[name] = (
                math.nan
                if kind == 0
                else 0.0
                if kind == 1
                else -1.5e-7
                if kind == 2
                else float(rng.normal(50, 400))
            )
        rows.append(row)
    return rows


def _table(settings: Settings) -> list[tuple[Any, ...]]:
    query = f"select {COLUMNS} from {{}}fraudstream_card_features_packed order by entity_key"
    if settings.feast_config == "sqlite":
        with sqlite3.connect(settings.feast_dir / "online.db") as conn:
            return [tuple(r) for r in conn.execute(query.format("")).fetchall()]
    with psycopg.connect(settings.pg_conninfo(reveal=True)) as conn:
        return [(bytes(r[0]), bytes(r[1]), *r[2:]) for r in conn.execute(query.format("feast.")).fetchall()]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_bulk_online_write_stores_what_feast_stores(settings: Settings, tmp_path: Path, kind: str) -> None:
    rows = _rows(60)
    rows[-1].update(dict.fromkeys(FEATURE_NAMES, math.nan))  # a card with no feature value at all
    with fresh_database(settings, "feast-own") as own_db, fresh_database(settings, "feast-bulk") as bulk_db:
        own_s, bulk_s = (
            settings.model_copy(
                update={
                    "feast_config": kind,
                    "feast_dir": tmp_path / name,
                    "feature_log_dir": tmp_path / "log",
                    "pg_db": db,
                }
            )
            for name, db in (("own", own_db), ("bulk", bulk_db))
        )
        own, bulk = feature_store(own_s), feature_store(bulk_s)
        try:
            own.write_to_online_store(
                CARD_VIEW, pd.DataFrame(rows)[["card_id", "event_time", *FEATURE_NAMES]]
            )
            writer = OnlineWriter(bulk, CARD_VIEW, "card_id", FEATURE_NAMES)
            assert writer.bulk, f"the {kind} online store takes the bulk path"
            earlier = _rows(40, seed=8, start=datetime(2026, 10, 30, tzinfo=UTC))
            writer.write(earlier[:30])  # inserts
            writer.write(earlier[30:])
            writer.write(rows[:-1])  # the first 30 again, newer: updated in place, none missing, none twice
            writer.write(rows[-1:])  # alone, and no feature has a value
            writer.write([rows[5], earlier[5], rows[5]])  # one card twice in a write: the last one wins
            expected, got = _table(own_s), _table(bulk_s)
            assert len(got) == len(rows)
            assert got == expected

            online = bulk.get_online_features(
                features=[f"{CARD_VIEW}:{n}" for n in FEATURE_NAMES],
                entity_rows=[{"card_id": r["card_id"]} for r in rows],
            ).to_df()
            for name in FEATURE_NAMES:
                np.testing.assert_array_equal(
                    online[name].to_numpy(float), np.array([r[name] for r in rows], float), err_msg=name
                )
        finally:
            close_store(own)
            close_store(bulk)
