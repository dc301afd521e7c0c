"""Card states seeded from history on the real broker: a fresh worker recovers them from the changelog
and gives the next transactions exactly the features the batch backfill gives them over the whole
history; each state lies in its card's partition; a changelog that holds records is left alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from app.history import write_history
from app.kafka_admin import card_state_changelog
from app.seed import seed_card_states, source_partition
from app.settings import Settings
from app.simulator.jobs import produce_transactions
from app.simulator.model import SimConfig, simulate
from app.worker.process import isolated_env, running_worker, settings_for
from features.backfill import card_feature_frame
from tests.integration.worker_features import Worker, assert_batch_features
from tests.kafka_helpers import drain
from tests.services import unique


def test_a_worker_seeded_from_history_scores_the_next_transactions_as_the_batch_path(
    settings: Settings, tmp_path: Path
) -> None:
    history = simulate(SimConfig(customers=150, merchants=300, days=12, seed=23))
    cut = history["event_time"].max() - pd.Timedelta(days=2)
    past, live = history[history["event_time"] < cut], history[history["event_time"] >= cut]
    write_history(past, tmp_path / "past")
    write_history(live, tmp_path / "live")
    env = {**isolated_env(unique("it-seed"), tmp_path), "FRAUDSTREAM_SCORING": "false"}  # features only
    s = settings_for(env)

    line = seed_card_states(s, tmp_path / "past")
    cards = past["card_id"].nunique()
    assert line.startswith(f"seed: {cards:,} card states from {len(past):,} transactions"), line
    changelog = card_state_changelog(s)
    again = seed_card_states(s, tmp_path / "past")
    assert again.startswith(f"seed: {changelog} already holds {cards:,} records; card states not seeded")

    worker = Worker(s, tmp_path / "worker.log")
    with running_worker(worker.log, env):
        summary = produce_transactions(s, source=tmp_path / "live", rate=0, labels=False)
        assert summary.transactions == len(live)
        stream = worker.wait_for_rows(len(live)).set_index("txn_id")
    assert stream.index.is_unique
    batch = card_feature_frame(history).set_index("txn_id").loc[live["txn_id"]]
    stream = stream.loc[batch.index]
    assert_batch_features(stream, batch, "seeded worker")
    assert (stream["card_prev_txns"] > 0).mean() > 0.9, "the worker knew the cards' history"

    # each card's state went to the partition its transactions go to (the producer's own choice)
    sent = drain(s.kafka_servers, s.topic_transactions, expected=len(live))
    seeded = drain(s.kafka_servers, changelog, expected=cards + live["card_id"].nunique())
    where = {r.key: r.partition for r in sent}
    assert all(where[key] == source_partition(key, s.topic_partitions) for key in where)
    assert all(r.partition == where[r.key] for r in seeded if r.key in where)
