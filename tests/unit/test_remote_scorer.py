"""The worker's side of the pipe to the scoring process: answers read on the event loop, small and big
batches alike; a failed batch and a dead child are one clear error each."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from types import SimpleNamespace
from typing import Any

import pytest

from app.errors import FraudstreamError
from app.schema import Transaction
from app.worker.handoff import Columns, pack, transactions, unpack
from app.worker.scoring_process import INLINE_SEND_BYTES, RemoteScorer, Scored
from features.card import FEATURE_NAMES

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def txn(i: int) -> Transaction:
    return Transaction.model_validate({
        "txn_id": f"tx-{i}", "event_time": NOW, "card_id": f"card-{i}", "merchant_id": "m1", "amount": 20.0,
        "currency": "EUR", "mcc": "5411", "channel": "ecommerce", "lat": 48.8, "lon": 2.3, "country": "FR",
    })  # fmt: skip


def bare(conn: Connection) -> RemoteScorer:
    """A RemoteScorer on ``conn``, with no process behind it (its child "died" with exit code -9)."""
    scorer = RemoteScorer.__new__(RemoteScorer)
    scorer.conn, scorer.process = conn, SimpleNamespace(exitcode=-9)
    scorer.answers = {"scored": deque(), "persisted": deque()}
    return scorer


def remote(answer: Any, batches: int = 1) -> tuple[RemoteScorer, threading.Thread, list[Any]]:
    """A RemoteScorer whose child is a thread: for each of ``batches`` messages it receives, it sends
    the answers ``answer(message)`` gives, in order (None: closes its end, as a dead child does)."""
    ours, theirs = mp.get_context("spawn").Pipe()
    scorer = bare(ours)
    received: list[Any] = []

    def child(conn: Connection) -> None:
        for _ in range(batches):
            received.append(conn.recv())
            for reply in answer(received[-1]):
                if reply is None:
                    conn.close()
                    return
                conn.send(reply)

    thread = threading.Thread(target=child, args=(theirs,), daemon=True)
    thread.start()
    return scorer, thread, received


def scored_and_persisted(message: Any) -> list[Any]:
    """A child's two answers to a batch: its events (one per card), then its decisions persisted."""
    _, (features, txns, _) = message
    cards = unpack(features).card_ids
    events = Scored([(c.encode(), b"{}") for c in cards], flagged=len(txns) // 2)
    return [("scored", events), ("persisted", None)]


def columns(txns: list[Transaction]) -> bytes:
    empty = dict.fromkeys(FEATURE_NAMES)
    return pack(Columns.of([
        {"txn_id": t.txn_id, "card_id": t.card_id, "event_time": t.event_time, **empty, FEATURE_NAMES[0]: i}
        for i, t in enumerate(txns)
    ]))  # fmt: skip


async def score_and_persist(scorer: RemoteScorer, features: bytes, txns: list[Transaction]) -> Scored:
    scored, persisted = await scorer.score(features, txns, [1.0] * len(txns))
    await asyncio.wait_for(persisted, 5)
    return scored


@pytest.mark.parametrize("rows", [3, 3_000])  # one payload written on the loop, one from a thread
def test_a_batch_is_sent_whole_and_its_answers_read_on_the_loop(rows: int) -> None:
    scorer, thread, received = remote(scored_and_persisted)
    txns = [txn(i) for i in range(rows)]
    scored = asyncio.run(score_and_persist(scorer, columns(txns), txns))
    thread.join(5)
    assert received[0][0] == "score"
    sent = unpack(received[0][1][0])
    assert (sent.txn_ids, sent.card_ids) == ([t.txn_id for t in txns], [t.card_id for t in txns])
    assert sent.values[:, 0].tolist() == list(range(rows))
    assert transactions(received[0][1][1]) == txns  # rebuilt whole, not validated again
    assert [k for k, _ in scored.events] == [t.card_id.encode() for t in txns]
    assert scored.flagged == rows // 2
    assert not scorer.waiting()  # both answers read: nothing is listened for
    size = len(ForkingPickler.dumps(received[0]))
    assert (size > INLINE_SEND_BYTES) == (rows == 3_000)  # the parametrisation covers both ways of writing


def test_the_events_come_back_before_the_decisions_are_persisted() -> None:
    """The events are the first answer: the worker sends them to Kafka while the child writes the audit."""
    persisting = threading.Event()

    def answer(message: Any) -> Iterator[Any]:
        events, persisted = scored_and_persisted(message)
        yield events
        persisting.wait(5)  # the second answer only once the test has looked
        yield persisted

    async def run() -> tuple[Scored, bool]:
        txns = [txn(0)]
        scored, persisted = await scorer.score(columns(txns), txns, [None])
        early = persisted.done()
        persisting.set()
        await asyncio.wait_for(persisted, 5)
        return scored, early

    scorer, thread, _ = remote(answer)
    scored, early = asyncio.run(run())
    thread.join(5)
    assert [k for k, _ in scored.events] == [b"card-0"]
    assert early is False


def test_the_next_batch_is_sent_before_the_previous_one_is_persisted_and_both_settle_in_order() -> None:
    async def run() -> list[int]:
        order: list[int] = []
        pending = []
        for i in range(2):
            txns = [txn(i)]
            scored, persisted = await scorer.score(columns(txns), txns, [None])
            assert [k for k, _ in scored.events] == [f"card-{i}".encode()]
            persisted.add_done_callback(lambda _, i=i: order.append(i))
            pending.append(persisted)
        await asyncio.wait_for(asyncio.gather(*pending), 5)
        return order

    scorer, thread, received = remote(scored_and_persisted, batches=2)
    assert asyncio.run(run()) == [0, 1]
    thread.join(5)
    assert len(received) == 2


def test_the_events_of_the_next_batch_may_come_before_the_previous_one_is_persisted() -> None:
    """The child records a batch in a thread while it scores the next one: both batches' events come
    before either "persisted", and each answer settles the oldest future of its own kind."""
    held: list[Any] = []

    def answer(message: Any) -> list[Any]:
        events, persisted = scored_and_persisted(message)
        held.append(persisted)
        return [events] if len(held) == 1 else [events, *held]

    async def run() -> tuple[list[list[bytes]], list[bool]]:
        cards, early = [], []
        pending = []
        for i in range(2):
            txns = [txn(i)]
            scored, persisted = await scorer.score(columns(txns), txns, [None])
            cards.append([k for k, _ in scored.events])
            early.append(persisted.done())
            pending.append(persisted)
        await asyncio.wait_for(asyncio.gather(*pending), 5)
        return cards, early

    scorer, thread, _ = remote(answer, batches=2)
    cards, early = asyncio.run(run())
    thread.join(5)
    assert cards == [[b"card-0"], [b"card-1"]]
    assert early == [False, False]
    assert not scorer.waiting()


def test_an_answer_nobody_waits_for_is_one_clear_error() -> None:
    scorer, thread, _ = remote(lambda _: [("closed", {})])
    with pytest.raises(FraudstreamError, match="unexpected answer 'closed'"):
        asyncio.run(scorer.score(columns([txn(0)]), [txn(0)], [None]))
    thread.join(5)


def test_a_failed_batch_is_one_clear_error() -> None:
    scorer, thread, _ = remote(lambda _: [("failed", "OperationalError: connection refused")])
    with pytest.raises(FraudstreamError, match="scoring failed: OperationalError: connection refused"):
        asyncio.run(scorer.score(b"columns", [txn(0)], [None]))
    thread.join(5)


def test_a_batch_whose_decisions_cannot_be_persisted_fails_its_persisted_future() -> None:
    """The events went out; the audit write failed for good: the worker must not acknowledge the batch."""

    async def run() -> None:
        txns = [txn(0)]
        _, persisted = await scorer.score(columns(txns), txns, [None])
        await asyncio.wait_for(persisted, 5)

    scorer, thread, _ = remote(lambda m: [scored_and_persisted(m)[0], ("failed", "DataError: bad row")])
    with pytest.raises(FraudstreamError, match="scoring failed: DataError: bad row"):
        asyncio.run(run())
    thread.join(5)
    assert not scorer.waiting()


def test_a_child_that_dies_mid_batch_stops_the_batch() -> None:
    scorer, thread, _ = remote(lambda _: [None])
    with pytest.raises(FraudstreamError, match="the scoring process died"):
        asyncio.run(scorer.score(b"columns", [txn(0)], [None]))
    thread.join(5)


def test_a_child_that_dies_before_persisting_fails_the_persisted_future() -> None:
    async def run() -> None:
        txns = [txn(0)]
        _, persisted = await scorer.score(columns(txns), txns, [None])
        await asyncio.wait_for(persisted, 5)

    scorer, thread, _ = remote(lambda m: [scored_and_persisted(m)[0], None])  # events, then gone
    with pytest.raises(FraudstreamError, match=r"the scoring process died \(exit code -9\)"):
        asyncio.run(run())
    thread.join(5)
    assert not scorer.waiting()


@pytest.mark.parametrize("rows", [1, 2_000])  # sent inline, and from a thread
def test_a_child_already_dead_when_the_batch_is_sent_is_the_same_one_line_error(rows: int) -> None:
    """Seen in clean-clone CI: the scoring process killed between two batches, so the next send
    met a broken pipe (a bare BrokenPipeError) instead of the read's clear error."""
    ours, theirs = mp.get_context("spawn").Pipe()
    scorer = bare(ours)
    theirs.close()  # the child is gone
    batch = b"x" * 100 * rows
    with pytest.raises(FraudstreamError, match=r"the scoring process died \(exit code -9\)"):
        asyncio.run(scorer.score(batch, [], []))
