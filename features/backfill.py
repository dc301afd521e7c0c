"""Batch backfill of card features from Parquet history: the stream's fold, run over a DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.card import FEATURE_NAMES
from features.fold import CardState, Txn, card_features, update

KEYS = ("txn_id", "card_id", "event_time")


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC timestamps as float seconds since the epoch, exactly as ``datetime.timestamp()`` gives."""
    micros = times.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    return np.asarray(micros / 1e6, dtype=np.float64)


def card_feature_frame(history: pd.DataFrame) -> pd.DataFrame:
    """Features of every transaction as of its own event time (txn_id, card_id, event_time + features)."""
    order = history.sort_values(["card_id", "event_time", "txn_id"], kind="stable")
    t = epoch_seconds(order["event_time"])
    rows: list[dict[str, float]] = []
    state = CardState()
    current = None
    columns = zip(
        order["card_id"].to_numpy(), order["txn_id"].to_numpy(), t, order["amount"].to_numpy(),
        order["lat"].to_numpy(), order["lon"].to_numpy(), order["country"].to_numpy(),
        order["merchant_id"].to_numpy(), strict=True,
    )  # fmt: skip
    for card, txn_id, ts, amount, lat, lon, country, merchant in columns:
        if card != current:
            state, current = CardState(), card
        txn = Txn(txn_id, float(ts), float(amount), float(lat), float(lon), country, merchant)
        rows.append(card_features(state, txn))
        update(state, txn)
    features = pd.DataFrame(rows, columns=list(FEATURE_NAMES), index=order.index)
    out = pd.concat([order[list(KEYS)], features], axis=1)
    return out.sort_values(["event_time", "txn_id"], kind="stable").reset_index(drop=True)
