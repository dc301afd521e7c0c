"""The Faust application: agents of a few lines that hand micro-batches to the services.

``create_app(settings)`` builds everything (nothing happens at import). The card agent consumes
``transactions`` (keyed by card_id), keeps card state in the ``card-state`` table (changelogged,
partitioned like the source by the same key partitioner), writes features to Feast and the
offline log, and sends what it cannot process to the dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from app.settings import Settings
from app.worker.card_features import Raw, process_batch
from app.worker.sinks import FeatureLog, OnlineFeatures
from features.store import feature_store

log = logging.getLogger("fraudstream.worker")


@dataclass
class Counters:
    processed: int = 0
    dead: int = 0
    late: int = 0
    duplicates: int = 0
    batches: int = 0


def create_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_servers],
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.worker_web_port,
        web_enabled=False,
        datadir=str(datadir),
        producer_acks=-1,
        producer_linger=0.005,  # batch changelog and DLQ sends instead of one request per message
        producer_max_batch_size=512 * 1024,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    source = app.topic(settings.topic_transactions, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw")
    states = app.Table(
        "card-state",
        default=lambda: None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        use_partitioner=True,  # changelog partition by key, as the producers partition transactions
    )
    # Table writes queue in the producer buffer; Faust pauses the stream while it holds more than
    # max_messages (default 100, i.e. less than one micro-batch of card states).
    app.producer.buffer.max_messages = 4 * settings.batch_size
    counters = Counters()
    sinks: dict[str, Any] = {}

    @app.task
    async def open_sinks() -> None:
        sinks["online"] = OnlineFeatures(feature_store(settings), settings.online_flush_s)
        sinks["log"] = FeatureLog(
            settings.feature_log_dir,
            settings.app_id,
            settings.feature_log_flush_rows,
            settings.feature_log_flush_s,
        )
        log.info("worker: feature store ready (%s)", settings.feast_config)

    @app.agent(source)
    async def card_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            batch = [
                Raw(e.key, e.value, e.message.topic, e.message.partition, e.message.offset) for e in events
            ]
            result = process_batch(batch, states, settings.lateness_s)
            for dead in result.dead:
                log.warning("worker: dead letter: %s", dead.reason)
                await dlq.send(key=dead.masked_key(), value=orjson.dumps(dead.record()))
            while "online" not in sinks:  # the first batch can arrive before the store is open
                await app.sleep(0.1)
            sinks["online"].write(result.features)
            sinks["log"].add(result.features)
            counters.processed += len(result.features)
            counters.dead += len(result.dead)
            counters.late += result.late
            counters.duplicates += result.duplicates
            counters.batches += 1

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info(
            "worker: %d processed, %d dead letters (%d late), %d duplicates, %d batches",
            counters.processed, counters.dead, counters.late, counters.duplicates, counters.batches,
        )  # fmt: skip

    @app.timer(interval=1.0)
    async def flush_log() -> None:
        if "log" in sinks:
            sinks["log"].add([])

    @app.on_before_shutdown.connect
    async def flush_on_stop(_sender: Any, /, *_args: Any, **_kwargs: Any) -> None:
        if "log" in sinks:
            sinks["log"].flush()
            sinks["online"].close()
            log.info(
                "worker: feature log flushed (%d rows), %d online writes (%d failed)",
                sinks["log"].written, sinks["online"].written, sinks["online"].errors,
            )  # fmt: skip

    return app


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; Faust's worker flushes, commits and leaves the group on the way out."""
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
