"""Create the application's topics (idempotent) with the configured partition count."""

from __future__ import annotations

from app.errors import FraudstreamError
from app.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_transactions,
        settings.topic_scores,
        settings.topic_dlq,
        settings.topic_feedback,
        settings.topic_retrain,
    ]


def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics; return the ones created."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - adapters import their client lazily
    from kafka.admin import NewTopic  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    wanted = names or topic_names(settings)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_servers,
            client_id="fraudstream-admin",
            **settings.kafka_security(),
        )
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


def group_offsets(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    """``group``'s committed offsets, by (topic, partition); a partition never committed is absent."""
    from kafka import KafkaAdminClient  # noqa: PLC0415

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, client_id="fraudstream-admin", **settings.kafka_security()
    )
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def committed(settings: Settings, group: str, topic: str) -> int:
    """Sum of ``group``'s committed offsets on ``topic`` (0: the group never consumed it)."""
    return sum(offset for (t, _), offset in group_offsets(settings, group).items() if t == topic)
