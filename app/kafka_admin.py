"""Kafka administration: the application's topics (idempotent), group offsets, where a log starts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from app.errors import FraudstreamError
from app.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_transactions,
        settings.topic_scores,
        settings.topic_dlq,
        settings.topic_feedback,
        settings.topic_retrain,
    ]


CARD_TABLE = "card-state"  # the worker's Faust table of card states


def card_state_changelog(settings: Settings) -> str:
    """The card-state table's changelog topic, named as Faust names it (``<app id>-<table>-changelog``)."""
    return f"{settings.app_id}-{CARD_TABLE}-changelog"


def ensure_changelog(settings: Settings) -> tuple[str, int]:
    """The card-state changelog, created as Faust would (compacted, partitioned like the transactions
    topic, which is created first if missing); its name and partition count."""
    from kafka.admin import NewTopic  # noqa: PLC0415 - adapters import their client lazily

    ensure_topics(settings, [settings.topic_transactions])
    topic = card_state_changelog(settings)
    admin = _admin(settings)
    try:
        source = admin.describe_topics([settings.topic_transactions])[0]
        partitions = len(source["partitions"])
        if topic not in set(admin.list_topics()):
            config = {"cleanup.policy": "compact"}
            admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
        return topic, partitions
    finally:
        admin.close()


def records_in(settings: Settings, topic: str) -> int:
    """Records ``topic`` holds: its end offsets minus its start offsets, over its partitions."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, **settings.kafka_security())
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        start, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        return sum(end[tp] - start[tp] for tp in parts)
    finally:
        consumer.close()


def _admin(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client for the application's broker (close it when done)."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - adapters import their client lazily

    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, client_id="fraudstream-admin", **settings.kafka_security()
    )


def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics; return the ones created."""
    from kafka.admin import NewTopic  # noqa: PLC0415 - adapters import their client lazily
    from kafka.errors import KafkaError  # noqa: PLC0415

    wanted = names or topic_names(settings)
    try:
        admin = _admin(settings)
    except KafkaError as exc:
        raise FraudstreamError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        if missing:
            admin.create_topics(
                [NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1) for t in missing]
            )
        return missing
    finally:
        admin.close()


def delete_topics(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a bench run's own, when it is over: the
    local broker keeps its log in memory); return their names."""
    if not prefix:
        raise ValueError("a prefix is needed: an empty one would name every topic")
    admin = _admin(settings)
    try:
        doomed = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        if doomed:
            admin.delete_topics(doomed)
        return doomed
    finally:
        admin.close()


def group_offsets(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """``group``'s committed offsets, by (topic, partition); a partition never committed is absent."""
    admin = _admin(settings)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def committed(settings: Settings, group: str, topic: str) -> int:
    """Sum of ``group``'s committed offsets on ``topic`` (0: the group never consumed it)."""
    return sum(offset for (t, _), offset in group_offsets(settings, group).items() if t == topic)


def first_offset(settings: Settings, topic: str, partition: int, offset: int) -> int | None:
    """The offset a read of ``topic``/``partition`` from ``offset`` starts with (a plain consumer,
    outside any group; before the log start it starts at the log start); None if nothing came back."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, auto_offset_reset="earliest",
        **settings.kafka_security(),
    )  # fmt: skip
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000, max_records=1).values():
                return int(records[0].offset)
        return None
    finally:
        consumer.close()
