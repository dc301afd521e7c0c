"""Replay pacing and chargeback timing, with a fake sink and a fake clock."""

from __future__ import annotations

import orjson
import pandas as pd

from app.schema import TRANSACTION_FIELDS, Feedback, Transaction
from app.simulator.model import SimConfig, simulate
from app.simulator.producer import Pacer, produce


class FakeSink:
    def __init__(self, fail_every: int = 0) -> None:
        self.sent: list[tuple[str, str, dict[str, object]]] = []
        self.fail_every = fail_every

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.sent.append((topic, key, orjson.loads(value)))

    def flush(self) -> int:
        return len(self.sent) // self.fail_every if self.fail_every else 0

    def on(self, topic: str) -> list[dict[str, object]]:
        return [v for t, _, v in self.sent if t == topic]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def _history() -> pd.DataFrame:
    return simulate(SimConfig(customers=300, merchants=600, days=20, seed=5))


def test_replay_sends_every_transaction_in_order_without_labels() -> None:
    history, sink, clock = _history(), FakeSink(), FakeClock()
    summary = produce([history], sink, topic="tx", feedback_topic="fb", pacer=Pacer(0, clock, clock.sleep))
    sent = sink.on("tx")
    assert [v["txn_id"] for v in sent] == history["txn_id"].tolist()
    assert all(set(v) == set(TRANSACTION_FIELDS) for v in sent), "labels never travel with transactions"
    assert all(key == value["card_id"] for topic, key, value in sink.sent if topic == "tx")
    Transaction.model_validate(sent[0])
    assert summary.transactions == len(history)
    assert clock.slept == 0


def test_chargebacks_follow_their_label_time_and_none_are_lost() -> None:
    history, sink, clock = _history(), FakeSink(), FakeClock()
    summary = produce([history], sink, topic="tx", feedback_topic="fb", pacer=Pacer(0, clock, clock.sleep))
    frauds = history[history["is_fraud"] == 1]
    labels = sink.on("fb")
    assert sorted(v["txn_id"] for v in labels) == sorted(frauds["txn_id"])
    assert summary.chargebacks_on_time + summary.chargebacks_at_end == len(frauds)
    assert summary.chargebacks_on_time > 0
    assert summary.chargebacks_at_end > 0, "the last weeks' chargebacks are only due after the replay"
    # a chargeback is sent only after a transaction at or past its label_time was replayed
    position = {v["txn_id"]: i for i, (t, _, v) in enumerate(sink.sent) if t == "tx"}
    event_times = history.set_index("txn_id")["event_time"]
    last_tx_before: dict[str, str] = {}
    current = None
    for topic, _, value in sink.sent:
        if topic == "tx":
            current = value["txn_id"]
        else:
            last_tx_before[str(value["txn_id"])] = str(current)
    for label in labels[: summary.chargebacks_on_time]:
        feedback = Feedback.model_validate(label)
        assert event_times[last_tx_before[feedback.txn_id]] >= feedback.label_time
        assert position[feedback.txn_id] < position[last_tx_before[feedback.txn_id]] + 1


def test_rate_paces_sends() -> None:
    history, sink, clock = _history().iloc[:500], FakeSink(), FakeClock()
    summary = produce(
        [history], sink, topic="tx", feedback_topic="fb", pacer=Pacer(100, clock, clock.sleep), labels=False
    )
    assert summary.transactions == 500
    assert 4.9 <= clock.slept <= 5.0, "500 transactions at 100/s take 5 s"


def test_live_mode_keeps_the_simulated_times_and_stops_after_duration() -> None:
    history, sink, clock = _history(), FakeSink(), FakeClock()
    summary = produce(
        [history], sink, topic="tx", feedback_topic="fb", pacer=Pacer(50, clock, clock.sleep),
        live=True, duration_s=100,
    )  # fmt: skip
    assert 4_999 <= summary.transactions <= 5_001
    sent = history.iloc[: summary.transactions]
    # each card keeps its history's pace: no wall-clock stamp squeezes its transactions together
    assert [v["event_time"] for v in sink.on("tx")] == [t.isoformat() for t in sent["event_time"]]
    assert summary.clock == sent["event_time"].iloc[-1]
    due = sent[(sent["is_fraud"] == 1) & (sent["label_time"] <= sent["event_time"].iloc[-1])]
    assert len(due) > 0
    assert sorted(v["txn_id"] for v in sink.on("fb")) == sorted(due["txn_id"])
    assert summary.chargebacks_pending == int(sent["is_fraud"].sum()) - len(due), "live: not sent before due"
    assert summary.chargebacks_pending > 0
    assert summary.chargebacks_at_end == 0


def test_delivery_failures_are_counted() -> None:
    history, clock = _history().iloc[:100], FakeClock()
    summary = produce(
        [history], FakeSink(fail_every=50), topic="tx", feedback_topic="fb",
        pacer=Pacer(0, clock, clock.sleep), labels=False,
    )  # fmt: skip
    assert summary.failed > 0
