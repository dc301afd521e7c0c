"""Batch backfill of card features from Parquet history: the stream's fold, run over a DataFrame.

Also the card states that fold leaves, which seed a fresh deployment's worker (``app/seed.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from features.card import FEATURE_NAMES, PENDING_S
from features.fold import CardState, Txn, card_features, update

KEYS = ("txn_id", "card_id", "event_time")


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC timestamps as float seconds since the epoch, exactly as ``datetime.timestamp()`` gives."""
    micros = times.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    return np.asarray(micros / 1e6, dtype=np.float64)


def card_feature_frame(history: pd.DataFrame, initial: dict[str, CardState] | None = None) -> pd.DataFrame:
    """Features of every transaction as of its own event time (txn_id, card_id, event_time + features).

    ``initial``: the cards' states before ``history`` (``features.snapshot``), folded into and taken
    out of the dict; without it each card starts new."""
    order = _by_card(history)
    rows: list[dict[str, float]] = []
    for _, state, txn in _fold(order, initial):
        rows.append(card_features(state, txn))
        update(state, txn)
    features = pd.DataFrame(rows, columns=list(FEATURE_NAMES), index=order.index)
    out = pd.concat([order[list(KEYS)], features], axis=1)
    return out.sort_values(["event_time", "txn_id"], kind="stable").reset_index(drop=True)


def card_states(
    history: pd.DataFrame, pending_s: float = PENDING_S, initial: dict[str, CardState] | None = None
) -> Iterator[tuple[str, CardState]]:
    """Each card's state after its whole history, folded as the stream worker folds it (its
    lateness as ``pending_s``): what a worker that had read the history would hold. ``initial``: the
    states before ``history`` (consumed), the cards without a transaction in it included as they are."""
    current: tuple[str, CardState] | None = None
    for card, state, txn in _fold(_by_card(history), initial):
        if current is not None and current[0] != card:
            yield current
        update(state, txn, pending_s)
        current = card, state
    if current is not None:
        yield current
    yield from (initial or {}).items()


def _by_card(history: pd.DataFrame) -> pd.DataFrame:
    return history.sort_values(["card_id", "event_time", "txn_id"], kind="stable")


def _fold(
    order: pd.DataFrame, initial: dict[str, CardState] | None = None
) -> Iterator[tuple[str, CardState, Txn]]:
    """(card, its state, txn) for every transaction of ``order`` (by card, then time): one state per
    card, taken out of ``initial`` or new, which the caller folds each transaction into."""
    initial = {} if initial is None else initial
    t = epoch_seconds(order["event_time"])
    state = CardState()
    current = None
    columns = zip(
        order["card_id"].to_numpy(), order["txn_id"].to_numpy(), t, order["amount"].to_numpy(),
        order["lat"].to_numpy(), order["lon"].to_numpy(), order["country"].to_numpy(),
        order["merchant_id"].to_numpy(), strict=True,
    )  # fmt: skip
    for card, txn_id, ts, amount, lat, lon, country, merchant in columns:
        if card != current:
            known = initial.pop(card, None)
            state, current = CardState() if known is None else known, card
        yield card, state, Txn(txn_id, float(ts), float(amount), float(lat), float(lon), country, merchant)
