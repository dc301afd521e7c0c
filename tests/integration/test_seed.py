"""Card states seeded from history and the decision audit, on the real broker and PostgreSQL: a fresh
worker recovers them from the changelog and gives the next transactions exactly the features the batch
backfill gives them over the whole history; each state lies in its card's partition; a changelog that
holds records is left alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd

from app.audit_export import LATE_MARGIN, Mark, decided_since_export
from app.history import write_history
from app.kafka_admin import card_state_changelog
from app.scoring.store import migrate as migrate_audit
from app.seed import seed_card_states, source_partition
from app.settings import Settings
from app.simulator.jobs import produce_transactions
from app.simulator.model import SimConfig, simulate
from app.worker.process import isolated_env, running_worker, settings_for
from features.backfill import card_feature_frame, card_states
from features.snapshot import states_before
from tests.integration.worker_features import Worker, assert_batch_features
from tests.kafka_helpers import drain
from tests.services import fresh_database, unique
from tests.ui_data import record_approved


def test_a_worker_seeded_from_history_and_the_audit_scores_the_next_transactions_as_the_batch_path(
    settings: Settings, tmp_path: Path
) -> None:
    """The history ends where the last export stopped; the decision audit holds the days after it (a
    deployment that lost its changelog). The seeded states know both."""
    history = simulate(SimConfig(customers=150, merchants=300, days=12, seed=23))
    end = history["event_time"].max()
    exported, cut = end - pd.Timedelta(days=5), end - pd.Timedelta(days=2)
    past = history[history["event_time"] < exported]
    decided = history[(history["event_time"] >= exported) & (history["event_time"] < cut)]
    live = history[history["event_time"] >= cut]
    write_history(past, tmp_path / "past")
    write_history(live, tmp_path / "live")
    env = {**isolated_env(unique("it-seed"), tmp_path), "FRAUDSTREAM_SCORING": "false"}  # features only
    s = settings_for(env)

    with fresh_database(settings, "it_seed") as db:
        audit = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        migrate_audit(audit)
        scored = record_approved(audit, pd.concat([past.tail(20), decided]), "v-seed")  # 20 in the history
        # a training run left the card states before the history's fourth day (features.snapshot); the
        # seed starts from them and reads the days since, the validation only those
        snapshot_day = (past["event_time"].min() + pd.Timedelta(days=3)).strftime("%Y-%m-%d")
        states_before(tmp_path / "past", snapshot_day)
        validated: list[str | None] = []
        line = seed_card_states(
            s, tmp_path / "past", audit=audit, check=lambda _, since: validated.append(since)
        )
        assert validated == [snapshot_day]
        known = pd.concat([past, decided])
        cards = known["card_id"].nunique()
        read = known[known["event_time"] >= pd.Timestamp(snapshot_day, tz="UTC")]
        assert line.startswith(
            f"seed: {cards:,} card states from snapshot {snapshot_day} + {len(read):,} transactions"
            f" ({len(decided):,} of them from the decision audit) up to"
            f" {decided['event_time'].max():%Y-%m-%d %H:%M} UTC"
        ), line
        # exactly the states the fold over everything gives
        written = {
            r.key.decode(): r.value for r in drain(s.kafka_servers, card_state_changelog(s), expected=cards)
        }
        whole = {card: state.to_bytes() for card, state in card_states(known, s.lateness_s)}
        assert written == whole

        # after an export, only what it had not written: the days after its last, and decisions made since
        through = exported.date()
        Mark(0, scored + LATE_MARGIN + timedelta(minutes=5), through).write(tmp_path / "past")
        after = decided_since_export(audit, tmp_path / "past")
        expected = known[known["event_time"] >= pd.Timestamp(through + timedelta(days=1), tz="UTC")]
        assert sorted(after["txn_id"]) == sorted(expected["txn_id"])
        assert after["event_time"].is_monotonic_increasing
        Mark(0, scored + LATE_MARGIN - timedelta(minutes=5), through).write(tmp_path / "past")
        assert len(decided_since_export(audit, tmp_path / "past")) == 20 + len(decided), "decided since"

    changelog = card_state_changelog(s)
    again = seed_card_states(s, tmp_path / "past")
    assert again.startswith(f"seed: {changelog} already holds {cards:,} records; card states not seeded")

    worker = Worker(s, tmp_path / "worker.log")
    with running_worker(worker.log, env):
        summary = produce_transactions(s, source=tmp_path / "live", rate=0, labels=False)
        assert summary.transactions == len(live)
        stream = worker.wait_for_rows(len(live)).set_index("txn_id")
    assert stream.index.is_unique
    batch = card_feature_frame(history).set_index("txn_id").loc[live["txn_id"]]  # over the whole history
    stream = stream.loc[batch.index]
    assert_batch_features(stream, batch, "seeded worker")
    assert (stream["card_prev_txns"] > 0).mean() > 0.9, "the worker knew the cards' history"

    # each card's state went to the partition its transactions go to (the producer's own choice)
    sent = drain(s.kafka_servers, s.topic_transactions, expected=len(live))
    seeded = drain(s.kafka_servers, changelog, expected=cards + live["card_id"].nunique())
    where = {r.key: r.partition for r in sent}
    assert all(where[key] == source_partition(key, s.topic_partitions) for key in where)
    assert all(r.partition == where[r.key] for r in seeded if r.key in where)
