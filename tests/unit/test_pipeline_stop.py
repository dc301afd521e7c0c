"""The worker's pipeline without Kafka: a failed batch stops it and lets go of every held batch
unfinished; the Kafka fetch long-poll is shortened on the running consumer; the GC is quieted."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing as mp
from types import SimpleNamespace
from typing import Any

import orjson

from app.quiet_gc import GC_THRESHOLDS, quiet_gc
from app.settings import Settings
from app.worker.card_features import BatchResult, Raw
from app.worker.faust_app import Pipeline, Processed, set_fetch_wait
from app.worker.outbox import Message, Sent
from app.worker.sinks import FeatureWriter


class RefusingProducer:
    """Faust's producer as the pipeline sees it, with Kafka gone: every send fails."""

    def _ensure_producer(self) -> Any:
        raise ConnectionError("no broker")


class Sink:
    async def write(self, _rows: Any) -> None: ...


def bad_batch(offset: int) -> list[Raw]:
    """Undecodable input: a dead letter to deliver, so the batch needs the producer."""
    return [Raw(key=b"card", value=b"not json", topic="transactions", partition=0, offset=offset)]


def test_a_failed_delivery_stops_the_worker_and_lets_go_of_every_held_batch_unfinished() -> None:
    released: list[tuple[int, bool]] = []
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    async def run() -> Pipeline:
        pipeline = Pipeline(Settings(), states={}, producer=RefusingProducer(), crash=crash)
        pipeline.features = Sink()  # type: ignore[assignment]
        pipeline.ready.set()
        for n in range(4):  # the first fails in the stage; the others queue behind it or come after
            await pipeline.handle(bad_batch(n), lambda finished, n=n: released.append((n, finished)))
        await asyncio.wait_for(pipeline.to_score.join(), 5)
        await pipeline.drain()  # a stopping worker waits for nothing
        assert pipeline.stopping is not None
        await pipeline.stopping
        return pipeline

    pipeline = asyncio.run(run())
    assert pipeline.failed
    assert sorted(released) == [(0, False), (1, False), (2, False), (3, False)]  # each once, none finished
    assert len(crashes) == 1
    assert isinstance(crashes[0], ConnectionError)
    assert pipeline.counters.dead == 2  # batches 2 and 3 came after the failure: let go before any work


def test_the_kafka_fetch_long_poll_is_shortened_on_the_running_consumer() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)  # Faust's hard-coded value
    consumer = SimpleNamespace(
        _thread=SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_fetcher=fetcher))
    )
    set_fetch_wait(consumer, 0.1)
    assert fetcher._fetch_max_wait_ms == 100


def test_the_worker_freezes_what_it_built_and_collects_garbage_rarely() -> None:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    try:
        quiet_gc(logging.getLogger("test"), "worker")
        assert gc.get_freeze_count() > 1000  # the imports and everything built so far
        assert gc.get_threshold() == GC_THRESHOLDS
        assert len(gc.callbacks) == len(callbacks) + 1  # full collections are timed
        gc.collect()  # the callback runs without error
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks


def test_a_stuck_feature_writer_stops_the_worker_and_its_batch_is_replayed() -> None:
    ctx = mp.get_context("spawn")
    writer = FeatureWriter.__new__(FeatureWriter)  # no process: nobody takes from its queue
    writer.inbox, writer.process = ctx.Queue(1), SimpleNamespace(is_alive=lambda: False)
    writer.STUCK_S = 0.2
    writer.inbox.put([{"full": 1}])
    released: list[bool] = []
    crashes: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashes.append(exc)

    async def run() -> None:
        pipeline = Pipeline(Settings(), states={}, producer=RefusingProducer(), crash=crash)
        pipeline.features = writer
        pipeline.ready.set()
        await pipeline.handle([good_txn()], released.append)
        assert pipeline.stopping is not None
        await pipeline.stopping

    asyncio.run(run())
    assert released == [False]  # not finished: replayed after the restart, never dropped
    assert len(crashes) == 1
    assert "the feature writer took no batch for 0 s (process dead)" in str(crashes[0])


def good_txn() -> Raw:
    value = orjson.dumps({
        "txn_id": "tx-1", "event_time": "2026-11-30T12:00:00+00:00", "card_id": "card-1",
        "merchant_id": "m-1", "amount": 12.5, "currency": "EUR", "mcc": "5411", "channel": "ecommerce",
        "lat": 48.1, "lon": 11.5, "country": "DE",
    })  # fmt: skip
    return Raw(key=b"card-1", value=value, topic="transactions", partition=0, offset=0)


class RecordingOutbox:
    """The outbox as the release step sees it: records what it is asked to send, acks at once."""

    def __init__(self) -> None:
        self.sent: list[bytes | None] = []

    async def send(self, messages: list[Message]) -> list[Sent]:
        self.sent += [m.value for m in messages]
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return [Sent("card-state-changelog", ack)]


def test_card_states_reach_the_changelog_only_after_their_batchs_events_and_in_batch_order() -> None:
    """A state on the changelog makes a replay skip its batch's events (``redelivered``): the state
    must not get there before the events (the kill -9 fault test once found score events missing)."""
    released: list[tuple[int, bool]] = []

    async def crash(_exc: BaseException) -> None: ...

    async def run() -> RecordingOutbox:
        loop = asyncio.get_running_loop()
        pipeline = Pipeline(Settings(), states={}, producer=RefusingProducer(), crash=crash)
        outbox = pipeline.outbox = RecordingOutbox()  # type: ignore[assignment]
        acks = [loop.create_future() for _ in range(3)]  # each batch's score events
        queued = [loop.create_future() for _ in range(3)]

        def batch(n: int) -> Any:
            def release(finished: bool) -> None:
                released.append((n, finished))

            state = Message("card-state-changelog", b"card", f"v{n}".encode(), 0)
            item = Processed(BatchResult(), b"", release)
            before = queued[n - 1] if n else None
            return pipeline._release_when_delivered(
                [Sent("fraud-scores", acks[n])], [state], before, queued[n], item
            )

        tasks = [asyncio.ensure_future(batch(n)) for n in range(3)]
        acks[1].set_result(None)
        await asyncio.sleep(0.01)
        assert outbox.sent == [], "batch 1's events are in, but batch 0's states are not queued yet"
        acks[0].set_result(None)
        await asyncio.wait_for(asyncio.gather(*tasks[:2]), 5)
        assert outbox.sent == [b"v0", b"v1"]
        acks[2].set_exception(ConnectionError("no broker"))  # batch 2's events never arrive
        await asyncio.wait_for(asyncio.gather(tasks[2], return_exceptions=True), 5)
        return outbox

    outbox = asyncio.run(run())
    assert outbox.sent == [b"v0", b"v1"], "batch 2's states never went out"
    assert released == [(0, True), (1, True), (2, False)]
