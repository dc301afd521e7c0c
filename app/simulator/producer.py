"""Replay history (or live simulated traffic) into Kafka at a target rate.

Transactions go to the transactions topic keyed by card_id, in event-time order, without labels,
with their simulated event times. Chargebacks (the fraud labels) go to the feedback topic when
the replayed event time reaches their label_time. Live traffic is the simulated world going on
(app/simulator/jobs.py): its clock runs as fast as ``rate`` sends it, so every card keeps the
pace of its history (a card of the demo transacts a few times a day, not every few seconds) and
its velocity and travel features look like those the champion was trained on. Stamping live
transactions with the wall clock instead put each card's transactions seconds apart at 6,000 km/h
(session 29: the features' median was ~100x the training data's).

The pacing and label logic is pure over a ``Sink`` and a clock, so unit tests drive it with fakes;
``KafkaSink`` is the real adapter.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pandas as pd

from app.errors import FraudstreamError
from app.schema import TRANSACTION_FIELDS, encode

CHUNK = 5_000


class Sink(Protocol):
    def send(self, topic: str, key: str, value: bytes) -> None: ...
    def flush(self) -> int:
        """Wait for outstanding sends; return how many failed since the last flush."""
        ...


@dataclass
class ProduceSummary:
    transactions: int = 0
    frauds: int = 0
    interrupted: bool = False
    cards: set[str] = field(default_factory=set)
    chargebacks_on_time: int = 0
    chargebacks_at_end: int = 0
    chargebacks_pending: int = 0
    failed: int = 0
    seconds: float = 0.0
    clock: datetime | None = None  # the event time of the latest transaction sent

    def one_line(self, topic: str, feedback_topic: str) -> str:
        rate = self.transactions / self.seconds if self.seconds else 0.0
        end = f" + {self.chargebacks_at_end} at end" if self.chargebacks_at_end else ""
        pending = f", {self.chargebacks_pending} not yet due" if self.chargebacks_pending else ""
        return (
            f"produce: {self.transactions} transactions ({len(self.cards)} cards) to {topic} in "
            f"{self.seconds:.1f}s ({rate:,.0f} txn/s); {self.chargebacks_on_time}{end} chargebacks to "
            f"{feedback_topic}{pending}; {self.failed} failed"
        )


@dataclass(frozen=True)
class Pacer:
    """Sleeps so that ``n`` sends take ``n / rate`` seconds; rate 0 means as fast as possible."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def wait(self, started: float, sent: int) -> None:
        if self.rate <= 0:
            return
        ahead = started + sent / self.rate - self.clock()
        if ahead > 0:
            self.sleep(ahead)


def _chunks(frame: pd.DataFrame) -> Iterator[list[dict[str, Any]]]:
    cols = [*TRANSACTION_FIELDS, "is_fraud", "label_time", "fraud_scenario"]
    for lo in range(0, len(frame), CHUNK):
        part = frame.iloc[lo : lo + CHUNK][cols]
        yield part.to_dict("records")


def produce(
    frames: Iterable[pd.DataFrame],
    sink: Sink,
    *,
    topic: str,
    feedback_topic: str,
    pacer: Pacer,
    live: bool = False,
    labels: bool = True,
    duration_s: float | None = None,
    on_status: Callable[[ProduceSummary, float], None] | None = None,
    status_every_s: float = 2.0,
) -> ProduceSummary:
    """Send every transaction of ``frames`` (sorted by event_time) and its chargeback when due.

    ``live``: the frames go on for ever (``duration_s`` or Ctrl-C ends them), and chargebacks not
    yet due at the end stay unsent; a replay's end sends them all. Ctrl-C (KeyboardInterrupt) stops
    it cleanly: outstanding sends are flushed and counted.
    """
    summary = ProduceSummary()
    started = pacer.clock()
    pending: list[tuple[float, int, dict[str, Any]]] = []  # chargebacks not yet due: (due, seq, feedback)
    try:
        return _produce(
            frames, sink, summary, pending, started, topic=topic, feedback_topic=feedback_topic, pacer=pacer,
            live=live, labels=labels, duration_s=duration_s, on_status=on_status,
            status_every_s=status_every_s,
        )  # fmt: skip
    except KeyboardInterrupt:
        summary.interrupted = True
        return _finish(
            summary, sink, pending, feedback_topic, flush_labels=False, seconds=pacer.clock() - started
        )


def _produce(
    frames: Iterable[pd.DataFrame],
    sink: Sink,
    summary: ProduceSummary,
    pending: list[tuple[float, int, dict[str, Any]]],
    started: float,
    *,
    topic: str,
    feedback_topic: str,
    pacer: Pacer,
    live: bool,
    labels: bool,
    duration_s: float | None,
    on_status: Callable[[ProduceSummary, float], None] | None,
    status_every_s: float,
) -> ProduceSummary:
    last_status = started
    seq = itertools.count()

    def due_labels(now: float) -> None:
        while pending and pending[0][0] <= now:
            _, _, feedback = heapq.heappop(pending)
            sink.send(feedback_topic, feedback["card_id"], encode(feedback))
            summary.chargebacks_on_time += 1

    for frame in frames:
        for chunk in _chunks(frame):
            for row in chunk:
                if duration_s is not None and pacer.clock() - started >= duration_s:
                    return _finish(
                        summary, sink, pending, feedback_topic, flush_labels=False,
                        seconds=pacer.clock() - started,
                    )  # fmt: skip
                pacer.wait(started, summary.transactions)
                if on_status is not None and (now := pacer.clock()) - last_status >= status_every_s:
                    on_status(summary, now - started)
                    last_status = now
                event_time = row["event_time"]
                txn = {k: row[k] for k in TRANSACTION_FIELDS}
                sink.send(topic, row["card_id"], encode(txn))
                summary.transactions += 1
                summary.cards.add(row["card_id"])
                summary.frauds += int(row["is_fraud"])
                summary.clock = event_time
                if labels and row["is_fraud"] == 1:
                    label_time = row["label_time"]
                    feedback = {
                        "txn_id": row["txn_id"],
                        "card_id": row["card_id"],
                        "is_fraud": 1,
                        "label_time": label_time,
                        "source": "chargeback",
                        "fraud_scenario": row["fraud_scenario"],
                    }
                    heapq.heappush(pending, (label_time.timestamp(), next(seq), feedback))
                due_labels(event_time.timestamp())
            summary.failed += sink.flush()
    return _finish(
        summary, sink, pending, feedback_topic, flush_labels=not live, seconds=pacer.clock() - started
    )


def _finish(
    summary: ProduceSummary,
    sink: Sink,
    pending: list[tuple[float, int, dict[str, Any]]],
    feedback_topic: str,
    *,
    flush_labels: bool,
    seconds: float,
) -> ProduceSummary:
    """A finished replay fast-forwards: every remaining chargeback is sent, none is dropped.

    A live run that stops reports how many chargebacks were not yet due.
    """
    if flush_labels:
        for _, _, feedback in sorted(pending, key=lambda p: (p[0], p[1])):
            sink.send(feedback_topic, feedback["card_id"], encode(feedback))
        summary.chargebacks_at_end = len(pending)
    else:
        summary.chargebacks_pending = len(pending)
    summary.failed += sink.flush()
    summary.seconds = seconds
    return summary


class KafkaSink:
    """kafka-python producer that counts failed deliveries instead of losing them silently."""

    def __init__(self, bootstrap: list[str], **config: Any) -> None:
        from kafka import KafkaProducer  # noqa: PLC0415
        from kafka.errors import KafkaError  # noqa: PLC0415

        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                linger_ms=10,
                batch_size=256 * 1024,
                enable_idempotence=True,
                **config,
            )
        except KafkaError as exc:
            raise FraudstreamError(f"cannot reach Kafka at {','.join(bootstrap)}: {exc}") from exc
        self._failed = 0

    def _count_failure(self, _exc: BaseException) -> None:
        self._failed += 1

    def send(self, topic: str, key: str, value: bytes) -> None:
        self._producer.send(topic, key=key.encode(), value=value).add_errback(self._count_failure)

    def flush(self) -> int:
        self._producer.flush(timeout=60)
        failed, self._failed = self._failed, 0
        return failed

    def close(self) -> None:
        self._producer.close(timeout=30)
