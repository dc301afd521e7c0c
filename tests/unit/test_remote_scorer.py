"""The worker's side of the pipe to the scoring process: answers read on the event loop, small and big
batches alike; a failed batch and a dead child are one clear error each."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
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


def remote(answer: Any) -> tuple[RemoteScorer, threading.Thread, list[Any]]:
    """A RemoteScorer whose child is a thread: it receives one message, then answers ``answer(message)``
    (None: closes its end, as a dead child does)."""
    ours, theirs = mp.get_context("spawn").Pipe()
    scorer = RemoteScorer.__new__(RemoteScorer)
    scorer.conn, scorer.process = ours, SimpleNamespace(exitcode=-9)
    received: list[Any] = []

    def child(conn: Connection) -> None:
        received.append(conn.recv())
        reply = answer(received[-1])
        if reply is None:
            conn.close()
        else:
            conn.send(reply)

    thread = threading.Thread(target=child, args=(theirs,), daemon=True)
    thread.start()
    return scorer, thread, received


@pytest.mark.parametrize("rows", [3, 3_000])  # one payload written on the loop, one from a thread
def test_a_batch_is_sent_whole_and_its_answer_read_on_the_loop(rows: int) -> None:
    def answer(message: Any) -> Any:
        _, (features, txns, _) = message
        cards = unpack(features).card_ids
        return ("scored", Scored([(c.encode(), b"{}") for c in cards], flagged=len(txns) // 2))

    scorer, thread, received = remote(answer)
    txns = [txn(i) for i in range(rows)]
    empty = dict.fromkeys(FEATURE_NAMES)
    features = [
        {"txn_id": t.txn_id, "card_id": t.card_id, "event_time": t.event_time, **empty, FEATURE_NAMES[0]: i}
        for i, t in enumerate(txns)
    ]
    scored = asyncio.run(scorer.score(pack(Columns.of(features)), txns, [1.0] * rows))
    thread.join(5)
    assert received[0][0] == "score"
    sent = unpack(received[0][1][0])
    assert (sent.txn_ids, sent.card_ids) == ([t.txn_id for t in txns], [t.card_id for t in txns])
    assert sent.values[:, 0].tolist() == list(range(rows))
    assert transactions(received[0][1][1]) == txns  # rebuilt whole, not validated again
    assert [k for k, _ in scored.events] == [t.card_id.encode() for t in txns]
    assert scored.flagged == rows // 2
    size = len(ForkingPickler.dumps(received[0]))
    assert (size > INLINE_SEND_BYTES) == (rows == 3_000)  # the parametrisation covers both ways of writing


def test_a_failed_batch_is_one_clear_error() -> None:
    scorer, thread, _ = remote(lambda _: ("failed", "OperationalError: connection refused"))
    with pytest.raises(FraudstreamError, match="scoring failed: OperationalError: connection refused"):
        asyncio.run(scorer.score(b"columns", [txn(0)], [None]))
    thread.join(5)


def test_a_child_that_dies_mid_batch_stops_the_batch() -> None:
    scorer, thread, _ = remote(lambda _: None)
    with pytest.raises(FraudstreamError, match="the scoring process died"):
        asyncio.run(scorer.score(b"columns", [txn(0)], [None]))
    thread.join(5)


@pytest.mark.parametrize("rows", [1, 2_000])  # sent inline, and from a thread
def test_a_child_already_dead_when_the_batch_is_sent_is_the_same_one_line_error(rows: int) -> None:
    """Seen in clean-clone CI: the scoring process killed between two batches, so the next send
    met a broken pipe (a bare BrokenPipeError) instead of the read's clear error."""
    ours, theirs = mp.get_context("spawn").Pipe()
    scorer = RemoteScorer.__new__(RemoteScorer)
    scorer.conn, scorer.process = ours, SimpleNamespace(exitcode=-9)
    theirs.close()  # the child is gone
    batch = b"x" * 100 * rows
    with pytest.raises(FraudstreamError, match=r"the scoring process died \(exit code -9\)"):
        asyncio.run(scorer.score(batch, [], []))
