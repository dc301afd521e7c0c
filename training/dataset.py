"""Point-in-time training data: history -> labels known at a cut-off -> card + merchant features.

Temporal protocol (Fraud Detection Handbook, ch. 5): for a cut-off C,

    [ train ....................... ) [ delay gap ) [ test ............ )
                              C - test - delay    C - test            C

The model trains on transactions before ``C - test - delay`` with only the labels known at
``C - test`` (a chargeback that arrived later does not exist for training); it is evaluated on
``[C - test, C)`` with the history's labels (all that will ever be known of them). The last
``valid_days`` of the training period are the validation set for the hyper-parameter search and
early stopping.

Card features come from the shared batch backfill (``features.backfill``); merchant features from
Feast's point-in-time retrieval over the daily merchant table, with a row id so that no entity row
can silently go missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from app.errors import FraudstreamError
from app.schema import UNOBSERVED, WEIGHT
from app.settings import Settings
from features.backfill import card_feature_frame
from features.fold import CardState
from features.merchant import MERCHANT_FEATURES, merchant_daily_features
from features.model_input import MODEL_FEATURES, ONE_HOT_CHANNELS

__all__ = ["LABEL", "MODEL_FEATURES", "Periods", "build_training_frame", "known_labels"]
LABEL = "label"
PIT_CHUNK = 200_000


@dataclass(frozen=True)
class Periods:
    cutoff: pd.Timestamp
    train_start: pd.Timestamp
    train_end: pd.Timestamp  # exclusive; = test_start - delay
    valid_start: pd.Timestamp
    test_start: pd.Timestamp
    label_known_for_train: pd.Timestamp  # = test_start

    @classmethod
    def make(
        cls,
        history: pd.DataFrame,
        cutoff: pd.Timestamp | None,
        test_days: int,
        delay_days: int,
        valid_days: int,
    ) -> Periods:
        first = history["event_time"].min().normalize()
        cut = cutoff if cutoff is not None else history["event_time"].max().normalize() + timedelta(days=1)
        test_start = cut - timedelta(days=test_days)
        train_end = test_start - timedelta(days=delay_days)
        valid_start = train_end - timedelta(days=valid_days)
        if valid_start <= first + timedelta(days=valid_days):
            raise FraudstreamError(
                f"history from {first.date()} to {cut.date()} is too short for {test_days} test, "
                f"{delay_days} delay and {valid_days} validation days"
            )
        return cls(cut, first, train_end, valid_start, test_start, test_start)

    def describe(self) -> str:
        return (
            f"train [{self.train_start.date()}, {self.valid_start.date()}) + validation "
            f"[{self.valid_start.date()}, {self.train_end.date()}), gap until {self.test_start.date()}, "
            f"test [{self.test_start.date()}, {self.cutoff.date()})"
        )


def one_class_splits(frame: pd.DataFrame) -> list[str]:
    """'split (n rows, f labelled fraud)' for each of train, valid and test whose labels are all one
    class: no model can be fitted, chosen or measured on it (a small or young deployment's week)."""
    bad = []
    for split in ("train", "valid", "test"):
        labels = frame.loc[frame["split"] == split, LABEL]
        if labels.nunique() < 2:
            bad.append(f"{split} ({len(labels):,} rows, {int(labels.sum()):,} labelled fraud)")
    return bad


def known_labels(history: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """The label as it was known at ``as_of``: a fraud whose chargeback came later looks genuine."""
    return ((history["is_fraud"] == 1) & (history["label_time"] <= as_of)).astype(np.int8)


def merchant_features_pit(settings: Settings, rows: pd.DataFrame, daily: pd.DataFrame) -> pd.DataFrame:
    """Feast point-in-time join of the daily merchant features onto ``rows`` (one output row per input)."""
    from features.store import MERCHANT_VIEW, feature_store  # noqa: PLC0415 - Feast import is slow

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    daily.to_parquet(settings.feast_dir / "merchant_features.parquet", index=False)
    store = feature_store(settings)
    entity = pd.DataFrame(
        {
            "row_id": np.arange(len(rows)),
            "merchant_id": rows["merchant_id"].to_numpy(),
            "event_timestamp": rows["event_time"].to_numpy(),
        }
    )
    refs = [f"{MERCHANT_VIEW}:{n}" for n in MERCHANT_FEATURES]
    # in chunks: Feast's Dask-based file store needs >20 GB for 1.8M entity rows in one call
    joined = pd.concat(
        [
            store.get_historical_features(entity_df=entity.iloc[lo : lo + PIT_CHUNK], features=refs).to_df()
            for lo in range(0, len(entity), PIT_CHUNK)
        ],
        ignore_index=True,
    )
    if joined["row_id"].duplicated().any():
        raise FraudstreamError("point-in-time join returned an entity row twice")
    # Feast's file offline store drops entity rows with no feature row inside the TTL instead of
    # returning nulls: put every row back (no merchant history yet -> NaN, which XGBoost handles)
    out = joined.set_index("row_id").reindex(entity["row_id"])[list(MERCHANT_FEATURES)]
    return out.reset_index(drop=True)


def splits(event_time: pd.Series, fraud_scenario: pd.Series, periods: Periods) -> np.ndarray:
    """Each row's set: train, valid, test, the label-delay gap, or ``unobserved`` (a decline nobody
    labelled: its label is not known, so it neither teaches nor grades a model)."""
    t = event_time
    return np.select(
        [fraud_scenario.to_numpy() == UNOBSERVED, t < periods.valid_start, t < periods.train_end,
         t >= periods.test_start],
        ["unobserved", "train", "valid", "test"],
        default="gap",
    )  # fmt: skip


def build_training_frame(
    settings: Settings, history: pd.DataFrame, periods: Periods, states: dict[str, CardState] | None = None
) -> pd.DataFrame:
    """Every transaction before the cut-off with its features, split and labels (no future data).
    ``states``: the cards' states before ``history`` (consumed), where it is not the first day's."""
    history = history[history["event_time"] < periods.cutoff].reset_index(drop=True)
    # merchant labels: only what was known at each day (built into the daily table), never past C
    visible = history.assign(is_fraud=known_labels(history, periods.cutoff))
    daily = merchant_daily_features(visible, settings.label_delay_days)
    cards = card_feature_frame(history, states).set_index("txn_id").loc[history["txn_id"]].reset_index()
    merchants = merchant_features_pit(settings, history, daily)
    frame = pd.concat([cards, merchants], axis=1)
    for channel in ONE_HOT_CHANNELS:  # as features.model_input.channel_features, vectorised
        frame[f"channel_{channel}"] = (history["channel"] == channel).astype(np.float64).to_numpy()
    frame["merchant_id"] = history["merchant_id"].to_numpy()
    frame["fraud_scenario"] = history["fraud_scenario"].to_numpy()
    frame[WEIGHT] = history[WEIGHT].to_numpy()
    frame["split"] = splits(frame["event_time"], frame["fraud_scenario"], periods)
    # training sees the labels known at the test start; evaluation uses the history's labels
    train_label = known_labels(history, periods.label_known_for_train).to_numpy()
    frame[LABEL] = np.where(frame["split"] == "test", history["is_fraud"].to_numpy(), train_label)
    return frame
