"""produce -> real Kafka -> consume round-trips every record (transactions and chargebacks)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson

from app.history import read_history, write_history
from app.schema import Feedback, Transaction
from app.settings import Settings
from app.simulator.jobs import produce_transactions, resume_day
from app.simulator.model import SimConfig, simulate
from app.ui.store import UiStore
from tests.kafka_helpers import drain
from tests.services import fresh_database, unique
from tests.ui_data import T0, populate


def test_replay_round_trips_every_record(settings: Settings, tmp_path: Path) -> None:
    write_history(simulate(SimConfig(customers=300, merchants=600, days=10, seed=21)), tmp_path)
    history = read_history(tmp_path)
    topics = settings.model_copy(
        update={"topic_transactions": unique("it-tx"), "topic_feedback": unique("it-fb")}
    )

    summary = produce_transactions(topics, source=tmp_path, rate=0)

    assert summary.failed == 0
    assert summary.transactions == len(history)
    txns = drain(settings.kafka_servers, topics.topic_transactions, expected=len(history), timeout_s=90)
    frauds = history[history["is_fraud"] == 1]
    labels = drain(settings.kafka_servers, topics.topic_feedback, expected=len(frauds), timeout_s=60)

    parsed = [Transaction.model_validate_json(r.value) for r in txns]
    assert sorted(t.txn_id for t in parsed) == sorted(history["txn_id"]), "every transaction exactly once"
    assert all(r.key.decode() == t.card_id for r, t in zip(txns, parsed, strict=True))
    by_id = history.set_index("txn_id")
    for txn in parsed[:500]:
        row = by_id.loc[txn.txn_id]
        assert txn.event_time == row["event_time"].to_pydatetime()
        assert txn.amount == row["amount"]
        assert (txn.lat, txn.lon, txn.country) == (row["lat"], row["lon"], row["country"])
    assert not any(b"is_fraud" in r.value for r in txns), "labels never ride on transactions"

    feedback = [Feedback.model_validate_json(r.value) for r in labels]
    assert sorted(f.txn_id for f in feedback) == sorted(frauds["txn_id"]), "every chargeback exactly once"
    for f in feedback:
        assert f.label_time == by_id.loc[f.txn_id, "label_time"].to_pydatetime()
        assert f.source == "chargeback"
    # per card, transactions arrive in event-time order (one key -> one partition)
    per_card: dict[str, list[str]] = {}
    for r in sorted(txns, key=lambda r: (r.partition, r.offset)):
        per_card.setdefault(r.key.decode(), []).append(orjson.loads(r.value)["event_time"])
    assert all(times == sorted(times) for times in per_card.values())


def test_live_traffic_reaches_the_broker(settings: Settings) -> None:
    topics = settings.model_copy(
        update={"topic_transactions": unique("it-live-tx"), "topic_feedback": unique("it-live-fb")}
    )
    summary = produce_transactions(topics, source=None, live=True, rate=300, duration_s=2, customers=200)
    assert summary.failed == 0
    assert 450 <= summary.transactions <= 620
    received = drain(settings.kafka_servers, topics.topic_transactions, expected=summary.transactions)
    assert len(received) == summary.transactions

    # a second run (a restarted demo): the same kind of traffic under new ids, so the worker scores it
    again = produce_transactions(topics, source=None, live=True, rate=300, duration_s=1, customers=200)
    both = drain(
        settings.kafka_servers, topics.topic_transactions, expected=summary.transactions + again.transactions
    )
    first_ids = {orjson.loads(r.value)["txn_id"] for r in received}
    second_ids = {orjson.loads(r.value)["txn_id"] for r in both} - first_ids
    assert len(second_ids) == again.transactions


def test_live_traffic_resumes_after_the_latest_transaction_scored(settings: Settings, tmp_path: Path) -> None:
    history_end = date(2026, 3, 1)
    with fresh_database(settings, "it_resume") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        assert resume_day(conninfo, history_end) == history_end, "no audit yet"
        UiStore(conninfo).migrate()
        decided = populate(conninfo, tmp_path / "model", n=4)  # T0 (2026-03-02 12:00) + 7 min apart
        assert max(d.txn.event_time for d in decided).date() == T0.date()
        # a restart goes on the day after: transactions older than the cards' states would be late
        assert resume_day(conninfo, history_end) == date(2026, 3, 3)
        assert resume_day(conninfo, date(2026, 4, 1)) == date(2026, 4, 1), "a later history end wins"
    unreachable = settings.model_copy(update={"pg_port": 1}).pg_conninfo(reveal=True)
    assert resume_day(unreachable, history_end) == history_end, "Kafka-only use: no database needed"
