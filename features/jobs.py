"""Batch feature jobs: build the daily merchant features and materialise them online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from app.errors import FraudstreamError
from app.history import read_history
from app.settings import Settings
from features.merchant import WINDOWS, merchant_daily_features
from features.store import MERCHANT_VIEW, close_store, feature_store


def build_merchant_features(
    settings: Settings, history_dir: Path, until: datetime | None = None, through: datetime | None = None
) -> str:
    """Daily merchant features from history (labels known as of each day) -> Parquet -> online store
    (the last feature day: the day after the history, or ``through``'s day; ``merchant_daily_features``).

    With ``through``, only the days its features read (its longest window, the label delay before it):
    the history grows with the exported live days."""
    since = None
    if through is not None:
        since = (through - timedelta(days=settings.label_delay_days + max(WINDOWS) + 1)).strftime("%Y-%m-%d")
    history = read_history(history_dir, since=since)
    if until is not None:
        cutoff = pd.Timestamp(until).tz_localize(UTC) if until.tzinfo is None else pd.Timestamp(until)
        history = history[history["event_time"] < cutoff]
        # a label not known yet at the cut-off does not exist for this run
        unknown = history["label_time"] >= cutoff
        history.loc[unknown, "is_fraud"] = 0
    if history.empty:
        raise FraudstreamError(f"no transactions in {history_dir} before the cut-off")
    frame = merchant_daily_features(history, settings.label_delay_days, through)
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    path = settings.feast_dir / "merchant_features.parquet"
    frame.to_parquet(path, index=False)
    merchants = frame["merchant_id"].nunique()
    online = materialize_merchant_features(settings, frame)
    return f"features: {len(frame)} merchant-day rows ({merchants} merchants) -> {path}; {online}"


def materialize_merchant_features(settings: Settings, frame: pd.DataFrame | None = None) -> str:
    """Write the latest day of the merchant features (``frame``, or the Parquet the last build
    wrote) to the online store. ``init`` runs it when a champion exists already, so that an online
    store that is new (another layout, a lost volume) holds the merchants before the worker starts."""
    path = settings.feast_dir / "merchant_features.parquet"
    if frame is None:
        if not path.exists():
            return f"no merchant features at {path} yet"
        frame = pd.read_parquet(path)
    store = feature_store(settings)
    latest = frame["event_timestamp"].max()
    try:
        store.materialize(
            start_date=(latest - pd.Timedelta(days=1)).to_pydatetime(),
            end_date=(latest + pd.Timedelta(seconds=1)).to_pydatetime(),
            feature_views=[MERCHANT_VIEW],
        )
    finally:
        close_store(store)
    day = frame["event_timestamp"] == latest
    return f"{int(day.sum())} merchants materialised online for {latest.date()}"
