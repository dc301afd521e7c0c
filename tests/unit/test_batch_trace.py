"""Per-batch step stamps: taken by the card agent and the pipeline, written at the end, summed up
by the bench into where the latency goes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.worker import batch_trace
from app.worker.batch_trace import STEPS, BatchTrace, mark, stage_latencies, stages_over_time
from app.worker.faust_app import Pipeline
from tests.unit.test_pipeline_stop import Sink, bad_batch


def test_a_batch_starts_with_its_oldest_produce_time_and_when_it_was_fetched(tmp_path: Path) -> None:
    trace = BatchTrace(tmp_path)
    fetched = time.monotonic() - 0.25  # its fetched list waited 250 ms for the agent
    stamps = trace.start([None, 1_000.5, 1_000.25], fetched, 3)
    assert stamps is not None
    assert stamps["n"] == 3
    assert stamps["produced"] == 1_000.25  # the oldest: the batch counts for its worst-off message
    assert stamps["taken"] - stamps["fetched"] == pytest.approx(0.25, abs=0.05)
    mark(stamps, "features")
    assert stamps["taken"] <= stamps["features"] <= time.time()
    path = trace.write()
    assert path is not None
    assert path.parent == tmp_path
    assert batch_trace.read(tmp_path) == [stamps]


def test_tracing_is_off_without_a_folder_and_keeps_at_most_its_limit(tmp_path: Path) -> None:
    off = BatchTrace(None)
    assert not off.on
    assert off.start([1.0], time.monotonic(), 1) is None
    assert off.write() is None
    mark(None, "features")  # a batch without stamps: nothing to do
    bounded = BatchTrace(tmp_path, limit=2)
    assert [bounded.start([1.0], time.monotonic(), 1) is not None for _ in range(3)] == [True, True, False]
    assert len(bounded.batches) == 2


def batch(n: int, **ms_before: float) -> dict[str, Any]:
    """Stamps 1 ms apart, or as given: ``ms_before[step]`` ms after the previous step."""
    stamps: dict[str, Any] = {"n": n}
    t = 1_000.0
    for step in STEPS:
        t += ms_before.get(step, 1.0) / 1000
        stamps[step] = t
    return stamps


def test_stage_latencies_are_the_ms_before_each_step_over_finished_batches() -> None:
    batches = [batch(10, taken=10.0, scored=4.0), batch(30, taken=10.0, scored=8.0)]
    unfinished = batch(500, taken=900.0)
    del unfinished["acked"]  # still waiting for Kafka when the worker stopped: not counted
    result = stage_latencies([*batches, unfinished])
    assert result["batches"] == 2
    assert result["messages_per_batch"] == 20.0
    assert result["taken"] == {"p50": 10.0, "p90": 10.0, "p99": 10.0, "max": 10.0}
    assert result["scored"]["p50"] == 6.0
    assert result["scored"]["max"] == 8.0
    assert result["features"]["max"] == 1.0
    # produced -> sent: fetched, taken, features, queued, scoring, scored, sent
    assert result["produced_to_sent"]["max"] == pytest.approx(1 + 10 + 1 + 1 + 1 + 8 + 1)
    assert stage_latencies([unfinished]) == {"batches": 0}


def test_stages_over_time_split_the_batches_by_when_their_oldest_message_was_produced() -> None:
    slow_start = batch(10, scored=40.0)
    later = [batch(10, scored=4.0), batch(10, scored=6.0)]
    for b in later:  # produced 7 s after the first
        for step in STEPS:
            b[step] += 7.0
    windows = stages_over_time([slow_start, *later], 5.0)
    assert [(w["from_s"], w["batches"]) for w in windows] == [(0.0, 1), (5.0, 2)]
    assert windows[0]["scored"] == [40.0, 40.0]
    assert windows[1]["scored"][0] == 5.0
    assert windows[1]["taken"] == [1.0, 1.0]
    assert stages_over_time([], 5.0) == []


class AcceptingProducer:
    """Kafka as the outbox sees it, acknowledging every record batch at once."""

    class Builder:
        def append(self, **_kw: Any) -> object:
            return object()

        def close(self) -> None: ...

    def _ensure_producer(self) -> AcceptingProducer:
        return self

    async def partitions_for(self, _topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> AcceptingProducer.Builder:
        return self.Builder()

    async def send_batch(self, _builder: Any, _topic: str, partition: int) -> asyncio.Future[int]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(partition)
        return done


def test_the_pipeline_stamps_every_step_of_a_traced_batch_in_order(tmp_path: Path) -> None:
    trace = BatchTrace(tmp_path)
    released: list[bool] = []

    async def run() -> None:
        pipeline = Pipeline(Settings(), states={}, producer=AcceptingProducer())
        pipeline.features = Sink()  # type: ignore[assignment]
        pipeline.ready.set()
        stamps = trace.start([time.time()], time.monotonic(), 1)
        await pipeline.handle(bad_batch(0), released.append, stamps)  # a dead letter to deliver
        await asyncio.wait_for(pipeline.drain(), 5)

    asyncio.run(run())
    assert released == [True]
    (stamps,) = trace.batches
    assert [step for step in STEPS if step in stamps] == list(STEPS)
    times = [stamps[step] for step in STEPS[1:]]
    assert times == sorted(times)
    assert stage_latencies(trace.batches)["batches"] == 1
