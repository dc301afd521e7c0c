"""Small kafka-python helpers for tests: create topics, produce JSON, drain a topic."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.serializer import DefaultSerializer, JsonSerializer


def create_topics(bootstrap: list[str], names: Iterable[str], partitions: int = 4) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fraudstream-tests")
    try:
        admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    finally:
        admin.close()


def produce_json(bootstrap: list[str], topic: str, records: Iterable[tuple[str, dict[str, Any]]]) -> int:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        key_serializer=DefaultSerializer(),
        value_serializer=JsonSerializer(),
        acks="all",
        linger_ms=5,
    )
    count = 0
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush(timeout=30)
    finally:
        producer.close()
    return count


def drain(bootstrap: list[str], topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Read a topic from the beginning until ``expected`` records arrived or the timeout passed."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records
