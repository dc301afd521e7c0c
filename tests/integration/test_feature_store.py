"""Feast: merchant features materialised online; the PostgreSQL variant used by docker-compose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from app.history import read_history, write_history
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from features.backfill import card_feature_frame
from features.card import FEATURE_NAMES
from features.jobs import build_merchant_features
from features.merchant import MERCHANT_FEATURES
from features.packed_store import POSTGRES_TYPE
from features.store import CARD_VIEW, MERCHANT_VIEW, close_store, feature_store


def test_merchant_features_are_materialised_online(settings: Settings, tmp_path: Path) -> None:
    write_history(simulate(SimConfig(customers=300, merchants=600, days=20, seed=3)), tmp_path / "h")
    local = settings.model_copy(update={"feast_dir": tmp_path / "feast", "feature_log_dir": tmp_path / "log"})
    line = build_merchant_features(local, tmp_path / "h")
    assert line.startswith("features: ")

    daily = pd.read_parquet(tmp_path / "feast" / "merchant_features.parquet")
    today = daily[daily["event_timestamp"] == daily["event_timestamp"].max()].sample(10, random_state=0)
    online = (
        feature_store(local, apply=False)
        .get_online_features(
            features=[f"{MERCHANT_VIEW}:{n}" for n in MERCHANT_FEATURES],
            entity_rows=[{"merchant_id": m} for m in today["merchant_id"]],
        )
        .to_df()
    )
    for name in MERCHANT_FEATURES:
        np.testing.assert_allclose(online[name].to_numpy(float), today[name].to_numpy(float), equal_nan=True)


def test_postgres_online_store_and_sql_registry(settings: Settings, tmp_path: Path) -> None:
    pg = settings.model_copy(
        update={
            "feast_config": "postgres",
            "feast_dir": tmp_path / "feast",
            "feature_log_dir": tmp_path / "log",
        }
    )
    write_history(simulate(SimConfig(customers=50, merchants=100, days=3, seed=4)), tmp_path / "h")
    rows = card_feature_frame(read_history(tmp_path / "h"))
    latest = rows.drop_duplicates("card_id", keep="last")

    store = feature_store(pg)
    try:
        _write_and_read(store, pg, latest)
    finally:
        close_store(store)


def _write_and_read(store: FeatureStore, pg: Settings, latest: pd.DataFrame) -> None:
    assert store.config.online_store.type == POSTGRES_TYPE, "one row per card (features/packed_store.py)"
    assert store.config.online_store.sslmode == pg.pg_sslmode, "never Feast's sslmode=require default"
    store.write_to_online_store(CARD_VIEW, latest.drop(columns=["txn_id"]))
    online = store.get_online_features(
        features=[f"{CARD_VIEW}:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"card_id": c} for c in latest["card_id"][:5]],
    ).to_df()
    np.testing.assert_allclose(
        online["card_sum_24h"].to_numpy(float), latest["card_sum_24h"][:5].to_numpy(float), equal_nan=True
    )
