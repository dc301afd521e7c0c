"""The worker's pipeline without Kafka: a failed batch stops it and lets go of every held batch
unfinished; the Kafka fetch long-poll is shortened on the running consumer; the GC is quieted."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

from app.settings import Settings
from app.worker.card_features import Raw
from app.worker.faust_app import GC_THRESHOLDS, Pipeline, quiet_gc, set_fetch_wait


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
        quiet_gc()
        assert gc.get_freeze_count() > 1000  # the imports and everything built so far
        assert gc.get_threshold() == GC_THRESHOLDS
        assert len(gc.callbacks) == len(callbacks) + 1  # full collections are timed
        gc.collect()  # the callback runs without error
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks
