"""The worker's side of the pipe to the scoring process: answers read on the event loop, small and big
batches alike; a failed batch and a dead child are one clear error each."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from types import SimpleNamespace
from typing import Any

import pytest

from app.errors import FraudstreamError
from app.worker.scoring_process import INLINE_SEND_BYTES, RemoteScorer, Scored


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
        return ("scored", Scored([(t.encode(), b"{}") for t in txns], flagged=len(features) // 2))

    scorer, thread, received = remote(answer)
    features = [{"txn_id": f"tx-{i}", "card_count_1h": float(i), "pad": "x" * 40} for i in range(rows)]
    txns = [f"card-{i}" for i in range(rows)]
    scored = asyncio.run(scorer.score(features, txns, [1.0] * rows))  # type: ignore[arg-type]
    thread.join(5)
    assert received[0][0] == "score"
    assert received[0][1][0] == features
    assert [k for k, _ in scored.events] == [t.encode() for t in txns]
    assert scored.flagged == rows // 2
    size = len(ForkingPickler.dumps(received[0]))
    assert (size > INLINE_SEND_BYTES) == (rows == 3_000)  # the parametrisation covers both ways of writing


def test_a_failed_batch_is_one_clear_error() -> None:
    scorer, thread, _ = remote(lambda _: ("failed", "OperationalError: connection refused"))
    with pytest.raises(FraudstreamError, match="scoring failed: OperationalError: connection refused"):
        asyncio.run(scorer.score([{"txn_id": "t"}], ["card"], [None]))  # type: ignore[list-item]
    thread.join(5)


def test_a_child_that_dies_mid_batch_stops_the_batch() -> None:
    scorer, thread, _ = remote(lambda _: None)
    with pytest.raises(FraudstreamError, match="the scoring process died"):
        asyncio.run(scorer.score([{"txn_id": "t"}], ["card"], [None]))  # type: ignore[list-item]
    thread.join(5)


@pytest.mark.parametrize("rows", [1, 2_000])  # sent inline, and from a thread
def test_a_child_already_dead_when_the_batch_is_sent_is_the_same_one_line_error(rows: int) -> None:
    """Seen in clean-clone CI: the scoring process killed between two batches, so the next send
    met a broken pipe (a bare BrokenPipeError) instead of the read's clear error."""
    ours, theirs = mp.get_context("spawn").Pipe()
    scorer = RemoteScorer.__new__(RemoteScorer)
    scorer.conn, scorer.process = ours, SimpleNamespace(exitcode=-9)
    theirs.close()  # the child is gone
    batch = [{"txn_id": f"t{i}", "blob": "x" * 100} for i in range(rows)]
    with pytest.raises(FraudstreamError, match=r"the scoring process died \(exit code -9\)"):
        asyncio.run(scorer.score(batch, ["card"] * rows, [None] * rows))  # type: ignore[list-item]
