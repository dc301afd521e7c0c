"""Card states seeded from history: a worker that starts from them gives the next transactions the
features the batch backfill gives them over the whole history (pure: no Kafka here; the worker on a
real broker is tests/integration/test_seed.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.seed import source_partition
from app.simulator.model import SimConfig, simulate
from features.backfill import card_feature_frame, card_states, epoch_seconds
from features.card import FEATURE_NAMES
from features.fold import CardState, Txn, card_features, update

LATENESS_S = 300.0


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    frame = simulate(SimConfig(customers=60, merchants=120, days=21, seed=5))
    return frame.sort_values(["event_time", "txn_id"], kind="stable").reset_index(drop=True)


def split(history: pd.DataFrame, days_before_end: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = history["event_time"].max() - pd.Timedelta(days=days_before_end)
    return history[history["event_time"] < cut], history[history["event_time"] >= cut]


def stream(states: dict[str, CardState], live: pd.DataFrame) -> pd.DataFrame:
    """What the worker computes for ``live`` (in time order), from ``states`` (the others: new cards)."""
    rows = []
    t = epoch_seconds(live["event_time"])
    for r, ts in zip(live.itertuples(), t, strict=True):
        state = states.setdefault(r.card_id, CardState())
        txn = Txn(r.txn_id, float(ts), float(r.amount), float(r.lat), float(r.lon), r.country, r.merchant_id)
        rows.append({"txn_id": r.txn_id, **card_features(state, txn)})
        update(state, txn, LATENESS_S)
    return pd.DataFrame(rows).set_index("txn_id")


def test_seeded_states_give_the_next_transactions_their_batch_features(history: pd.DataFrame) -> None:
    past, live = split(history, days_before_end=3)
    seeded = stream(dict(card_states(past, LATENESS_S)), live)
    batch = card_feature_frame(history).set_index("txn_id").loc[seeded.index]
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            seeded[name].to_numpy(float), batch[name].to_numpy(float), rtol=1e-12, atol=1e-12,
            equal_nan=True, err_msg=f"seeded stream and batch disagree on {name}",
        )  # fmt: skip
    cold = stream({}, live)  # what a worker without the history computes: the 30-day counts fall short
    assert (cold["card_count_30d"] < seeded["card_count_30d"]).mean() > 0.9


def test_a_seeded_state_is_the_state_the_stream_fold_leaves(history: pd.DataFrame) -> None:
    """Seeding skips the features (they do not touch the state): the same bytes as folding each
    transaction the way the worker does, features first."""
    by_card = dict(card_states(history, LATENESS_S))
    folded: dict[str, CardState] = {}
    stream(folded, history)
    assert by_card.keys() == folded.keys()
    assert all(by_card[c].to_bytes() == folded[c].to_bytes() for c in folded)


def test_every_card_is_seeded_once_and_an_empty_history_seeds_none(history: pd.DataFrame) -> None:
    cards = [card for card, _ in card_states(history)]
    assert sorted(cards) == sorted(history["card_id"].unique())
    assert list(card_states(history.iloc[:0])) == []


def test_the_partition_is_the_java_clients_murmur2() -> None:
    """``Utils.murmur2`` values from Kafka's own tests; the partition is its positive part modulo n."""
    murmur2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for key, value in murmur2.items():
        assert source_partition(key, 1 << 31) == value & 0x7FFFFFFF
        assert source_partition(key, 4) == (value & 0x7FFFFFFF) % 4
    assert {source_partition(f"card-{i}".encode(), 4) for i in range(100)} == {0, 1, 2, 3}
