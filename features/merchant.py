"""Merchant features, built daily in batch from history and labels.

For the feature day D (valid from D 00:00 UTC) and window w in 1/7/30 days, a merchant's
transaction count and fraud rate cover the transactions of the days [D - delay - w, D - delay),
counting only frauds whose label was known before D. The label-delay shift keeps recent
transactions, whose chargebacks have not arrived yet, from looking clean.

The count is every transaction (the merchant's activity). The rate's denominator leaves out the
``unobserved`` ones (``app.schema.UNOBSERVED``: declines nobody labelled, whose outcome nobody will
learn): counted as genuine, they made a merchant whose frauds the system declines look cleaner the
more it declined, and NaN when the window holds no observed transaction.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from app.schema import UNOBSERVED

WINDOWS = (1, 7, 30)
MERCHANT_FEATURES: tuple[str, ...] = (
    *(f"merchant_count_{w}d" for w in WINDOWS),
    *(f"merchant_fraud_rate_{w}d" for w in WINDOWS),
)


def _day_index(times: pd.Series, origin: pd.Timestamp) -> np.ndarray:
    return np.asarray(((times - origin) // pd.Timedelta(days=1)).to_numpy(), dtype=np.int64)


def _observed(history: pd.DataFrame) -> np.ndarray:
    """Rows whose outcome is known or will be (all but ``unobserved``; all where history has no
    ``fraud_scenario``)."""
    if "fraud_scenario" not in history:
        return np.ones(len(history), dtype=bool)
    return np.asarray(history["fraud_scenario"].to_numpy() != UNOBSERVED)


def merchant_daily_features(
    history: pd.DataFrame, label_delay_days: int, through: datetime | None = None
) -> pd.DataFrame:
    """One row per (merchant, day D) with activity in its 30-day window; D runs to the day after the
    data, or to ``through``'s day when that is later. A history exported from the decision audit ends
    ``label_delay_days`` before the day it is exported (``app.audit_export``): its feature days run on
    that far, and no further, with every window complete (``through`` is capped there)."""
    origin = history["event_time"].min().normalize()
    merchants, m_idx = np.unique(history["merchant_id"].to_numpy(), return_inverse=True)
    tx_day = _day_index(history["event_time"], origin)
    last = int(tx_day.max()) + 1
    if through is not None:
        wanted = int((pd.Timestamp(through).normalize() - origin) // pd.Timedelta(days=1))
        last = max(last, min(wanted, last + label_delay_days))
    n_days = int(tx_day.max()) + 2 + label_delay_days + max(WINDOWS)
    counts = np.zeros((len(merchants), n_days), dtype=np.int64)
    np.add.at(counts, (m_idx, tx_day), 1)
    cum = np.concatenate([np.zeros((len(merchants), 1), np.int64), counts.cumsum(axis=1)], axis=1)
    observed = np.zeros_like(counts)
    seen = _observed(history)
    np.add.at(observed, (m_idx[seen], tx_day[seen]), 1)
    cum_observed = np.concatenate([np.zeros((len(merchants), 1), np.int64), observed.cumsum(axis=1)], axis=1)

    fraud = history["is_fraud"].to_numpy() == 1
    label_day = _day_index(history["label_time"], origin)
    days = np.arange(1, last + 1)  # feature days D (index from origin)
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        hi = np.clip(days - label_delay_days, 0, n_days)  # window [D - delay - w, D - delay)
        lo = np.clip(hi - w, 0, n_days)
        window_counts = cum[:, hi] - cum[:, lo]
        window_observed = cum_observed[:, hi] - cum_observed[:, lo]
        # a fraud on day d counts for D in [max(d + delay + 1, label_day + 1), d + delay + w]
        diff = np.zeros((len(merchants), n_days + 2), dtype=np.int64)
        start = np.maximum(tx_day[fraud] + label_delay_days + 1, label_day[fraud] + 1)
        end = tx_day[fraud] + label_delay_days + w
        ok = start <= end
        np.add.at(diff, (m_idx[fraud][ok], np.minimum(start[ok], n_days + 1)), 1)
        np.add.at(diff, (m_idx[fraud][ok], np.minimum(end[ok] + 1, n_days + 1)), -1)
        known = diff.cumsum(axis=1)[:, days]
        out[f"merchant_count_{w}d"] = window_counts.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"merchant_fraud_rate_{w}d"] = np.where(window_observed > 0, known / window_observed, np.nan)

    active = out[f"merchant_count_{max(WINDOWS)}d"] > 0
    m_rows, d_cols = np.nonzero(active)
    frame = pd.DataFrame(
        {
            "merchant_id": merchants[m_rows],
            "event_timestamp": origin + pd.to_timedelta(days[d_cols], unit="D"),
            **{name: out[name][m_rows, d_cols] for name in MERCHANT_FEATURES},
        }
    )
    return frame.sort_values(["event_timestamp", "merchant_id"]).reset_index(drop=True)
