"""Merchant features: windows shifted back by the label delay, only labels known by the day."""

from __future__ import annotations

import math

import pandas as pd

from app.schema import UNOBSERVED
from features.merchant import merchant_daily_features

DAY0 = pd.Timestamp("2026-01-01", tz="UTC")


def tx(day: int, merchant: str = "m1", fraud: int = 0, label_day: float | None = None) -> dict[str, object]:
    event = DAY0 + pd.Timedelta(days=day, hours=12)
    label = DAY0 + pd.Timedelta(days=label_day if label_day is not None else day + 1, hours=12)
    return {"merchant_id": merchant, "event_time": event, "is_fraud": fraud, "label_time": label}


def row(frame: pd.DataFrame, day: int, merchant: str = "m1") -> pd.Series:
    hit = frame[
        (frame["merchant_id"] == merchant) & (frame["event_timestamp"] == DAY0 + pd.Timedelta(days=day))
    ]
    assert len(hit) == 1, f"no row for {merchant} on day {day}"
    return hit.iloc[0]


def test_windows_are_shifted_by_the_label_delay_and_use_known_labels_only() -> None:
    history = pd.DataFrame(
        [tx(0), tx(0, fraud=1, label_day=3), tx(1), tx(2, fraud=1, label_day=20), tx(9)]
        + [tx(d, merchant="m2") for d in range(25)]
    )
    frame = merchant_daily_features(history, label_delay_days=2)

    # day 3 sees transactions of day 0 only ([3-2-1, 3-2) = [0, 1)); the fraud label arrived at day 3.5
    r3 = row(frame, 3)
    assert r3["merchant_count_1d"] == 2
    assert r3["merchant_fraud_rate_1d"] == 0.0, "the label known at 3.5 is not known at day 3 00:00"
    r4 = row(frame, 4)
    assert r4["merchant_count_7d"] == 3  # days 0 and 1 (window [-5, 2))
    assert r4["merchant_fraud_rate_7d"] == 1 / 3
    # day 5: window [-4, 3) holds days 0-2 (4 txns); the day-2 fraud's label arrives only on day 20
    r5 = row(frame, 5)
    assert r5["merchant_count_7d"] == 4
    assert r5["merchant_fraud_rate_7d"] == 1 / 4
    assert row(frame, 21)["merchant_fraud_rate_30d"] == 2 / 5
    # day 9 is in the 1-day window of day 12 only (9 + delay 2 + 1)
    assert row(frame, 11)["merchant_count_1d"] == 0
    assert math.isnan(row(frame, 11)["merchant_fraud_rate_1d"])
    assert row(frame, 12)["merchant_count_1d"] == 1
    assert row(frame, 13)["merchant_count_1d"] == 0


def test_a_day_never_sees_its_own_or_later_transactions() -> None:
    history = pd.DataFrame([tx(d, fraud=d % 2, label_day=d + 0.1) for d in range(30)])
    full = merchant_daily_features(history, label_delay_days=0)
    cut = merchant_daily_features(history[history["event_time"] < DAY0 + pd.Timedelta(days=15)], 0)
    merged = full.merge(cut, on=["merchant_id", "event_timestamp"], suffixes=("", "_cut"))
    upto = merged[merged["event_timestamp"] <= DAY0 + pd.Timedelta(days=15)]
    assert len(upto) == 15
    for name in ("merchant_count_30d", "merchant_fraud_rate_7d"):
        pd.testing.assert_series_equal(upto[name], upto[f"{name}_cut"], check_names=False)


def test_a_history_that_ends_a_label_delay_early_gives_the_same_features_for_today() -> None:
    """The exported history ends ``delay`` days before the day it is exported; the features for that
    day (``through``) are those the whole history would give, and no day after it is made up."""
    history = pd.DataFrame(
        [tx(d, fraud=int(d % 4 == 0), label_day=d + 1.5 + d % 3) for d in range(40)]
        + [tx(d, merchant="m2", fraud=int(d % 9 == 0), label_day=d + 6) for d in range(0, 40, 2)]
    )
    delay, today = 7, 40
    full = merchant_daily_features(history, label_delay_days=delay)
    exported = history[history["event_time"] < DAY0 + pd.Timedelta(days=today - delay)]
    assert exported["event_time"].max() < DAY0 + pd.Timedelta(days=today - delay)
    short = merchant_daily_features(exported, label_delay_days=delay, through=DAY0 + pd.Timedelta(days=today))
    for merchant in ("m1", "m2"):
        assert row(short, today, merchant).equals(row(full, today, merchant)), merchant
    assert short["event_timestamp"].max() == DAY0 + pd.Timedelta(days=today)
    later = merchant_daily_features(exported, label_delay_days=delay, through=DAY0 + pd.Timedelta(days=99))
    assert later["event_timestamp"].max() == DAY0 + pd.Timedelta(days=today), "capped: windows lack days"
    assert merchant_daily_features(exported, delay).equals(
        merchant_daily_features(exported, delay, through=DAY0)
    ), "an earlier through changes nothing"


def test_unobserved_declines_count_as_activity_but_not_in_the_fraud_rate() -> None:
    """A decline nobody labelled is neither fraud nor genuine: counted as genuine, the more of a
    merchant's frauds the system declined, the cleaner the merchant looked."""
    rows = [tx(0, fraud=1, label_day=0.2), tx(0), tx(0), tx(0)]
    scenarios = ["card_testing", "none", UNOBSERVED, UNOBSERVED]
    history = pd.DataFrame(rows).assign(fraud_scenario=scenarios)
    r = row(merchant_daily_features(history, label_delay_days=0), 1)
    assert r["merchant_count_1d"] == 4, "activity: every transaction"
    assert r["merchant_fraud_rate_1d"] == 1 / 2, "one fraud in the two observed"
    without = merchant_daily_features(pd.DataFrame(rows), label_delay_days=0)
    assert row(without, 1)["merchant_fraud_rate_1d"] == 1 / 4, "no fraud_scenario column: all observed"
    only_unobserved = pd.DataFrame([tx(0)]).assign(fraud_scenario=[UNOBSERVED])
    r = row(merchant_daily_features(only_unobserved, label_delay_days=0), 1)
    assert r["merchant_count_1d"] == 1
    assert math.isnan(r["merchant_fraud_rate_1d"]), "no observed transaction: no rate"
