"""The scoring process's recorder: batches persisted in a thread, in order, one answer each, while the
scoring loop goes on; a batch that cannot be recorded is one clear error; close waits for the rest."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from app.worker.scoring_process import Recorder


def recorder(persist: Any, depth: int = 4) -> tuple[Recorder, list[tuple[str, Any]]]:
    answers: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def send(kind: str, detail: Any) -> None:
        with lock:
            answers.append((kind, detail))

    scorer = SimpleNamespace(persist=persist, times=SimpleNamespace(persist=0.25))  # its stage timer
    return Recorder(scorer, send, depth=depth), answers  # type: ignore[arg-type]


def test_batches_are_recorded_in_order_and_each_answered_once() -> None:
    recorded: list[list[Any]] = []
    rec, answers = recorder(recorded.append)
    batches: list[list[Any]] = [[f"decision-{i}"] for i in range(5)]
    for batch in batches:
        rec.put(batch)
    rec.close()  # returns once every batch put before it is recorded
    assert recorded == batches
    assert answers == [("persisted", 0.25)] * 5
    assert not rec.thread.is_alive()


def test_the_scoring_loop_does_not_wait_for_a_slow_write_until_depth_batches_wait() -> None:
    writing, go_on = threading.Event(), threading.Event()
    recorded: list[list[Any]] = []

    def persist(batch: list[Any]) -> None:
        writing.set()
        go_on.wait(5)
        recorded.append(batch)

    rec, answers = recorder(persist, depth=2)
    rec.put(["a"])
    assert writing.wait(5)  # "a" is being written
    rec.put(["b"])  # these two wait in the queue: put returns at once
    rec.put(["c"])
    third = threading.Thread(target=rec.put, args=(["d"],), daemon=True)
    third.start()
    third.join(0.2)
    assert third.is_alive()  # the queue is full: the scoring loop is held (back-pressure)
    assert answers == []
    go_on.set()
    third.join(5)
    rec.close()
    assert recorded == [["a"], ["b"], ["c"], ["d"]]
    assert answers == [("persisted", 0.25)] * 4


def test_a_batch_that_cannot_be_recorded_is_one_line_and_the_next_ones_still_are() -> None:
    recorded: list[list[Any]] = []

    def persist(batch: list[Any]) -> None:
        if batch == ["bad"]:
            raise ValueError("a row the audit refuses\nwith more detail on a second line")
        recorded.append(batch)

    rec, answers = recorder(persist)
    for batch in (["ok-1"], ["bad"], ["ok-2"]):
        rec.put(batch)
    rec.close()
    assert answers == [
        ("persisted", 0.25),
        ("failed", "ValueError: a row the audit refuses"),
        ("persisted", 0.25),
    ]
    assert recorded == [["ok-1"], ["ok-2"]]


def test_a_worker_gone_ends_the_recorder_without_a_traceback() -> None:
    """The pipe to the worker is broken: the answer cannot go, and the thread ends quietly (the
    scoring loop sees the closed pipe too and ends the process)."""

    def send(kind: str, detail: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    failures: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = failures.append
    try:
        rec = Recorder(SimpleNamespace(persist=lambda _: None), send)  # type: ignore[arg-type]
        rec.put(["a"])
        rec.thread.join(5)
    finally:
        threading.excepthook = previous
    assert not rec.thread.is_alive()
    assert failures == []


def test_a_full_queue_behind_a_recorder_that_ended_does_not_hold_the_scoring_loop() -> None:
    """The worker went away while batches waited (a PostgreSQL outage had filled the queue): the
    recorder's answer fails and its thread ends. Putting the next batch, or closing, must not wait
    for ever on a queue nobody empties, or the scoring process outlives the worker."""
    writing, go_on = threading.Event(), threading.Event()

    def persist(batch: list[Any]) -> None:
        writing.set()
        go_on.wait(5)

    def send(kind: str, detail: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    rec = Recorder(SimpleNamespace(persist=persist), send, depth=1)  # type: ignore[arg-type]
    assert rec.put(["a"])
    assert writing.wait(5)  # "a" is being written
    assert rec.put(["b"])  # the queue is full now
    go_on.set()  # "a" is written, its answer cannot go: the thread ends
    rec.thread.join(5)
    assert not rec.thread.is_alive()
    outcome: list[bool] = []
    late = threading.Thread(target=lambda: outcome.append(rec.put(["c"])), daemon=True)
    late.start()
    late.join(5)
    assert outcome == [False]
    closing = threading.Thread(target=rec.close, daemon=True)
    closing.start()
    closing.join(5)
    assert not closing.is_alive()
