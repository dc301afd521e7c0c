"""Produce and consume through the real local broker with kafka-python."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from app.kafka_admin import delete_topics
from app.settings import Settings
from app.worker.process import isolated_env, running_worker, settings_for
from tests.kafka_helpers import create_topics, drain, produce_json
from tests.services import unique


def test_keyed_records_round_trip_through_the_broker(settings: Settings) -> None:
    topic = unique("it-roundtrip")
    create_topics(settings.kafka_servers, [topic], partitions=4)
    sent = [(f"card-{i % 17}", {"txn_id": f"t{i}", "amount": i + 0.5}) for i in range(500)]

    assert produce_json(settings.kafka_servers, topic, sent) == 500
    received = drain(settings.kafka_servers, topic, expected=500)

    assert sorted(json.loads(r.value)["txn_id"] for r in received) == sorted(v["txn_id"] for _, v in sent)
    partitions_per_key: dict[str, set[int]] = defaultdict(set)
    for record in received:
        partitions_per_key[record.key.decode()].add(record.partition)
    assert all(len(p) == 1 for p in partitions_per_key.values()), "one key must map to one partition"
    assert len({p for ps in partitions_per_key.values() for p in ps}) > 1, (
        "keys should spread over partitions"
    )


def test_a_runs_topics_are_deleted_by_prefix_and_no_other(settings: Settings) -> None:
    run, other = unique("it-run"), unique("it-other")
    mine = [f"{run}-tx", f"{run}-card-state-changelog"]
    create_topics(settings.kafka_servers, [*mine, f"{other}-tx"], partitions=1)

    assert delete_topics(settings, f"{run}-") == sorted(mine)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers)
    deadline = time.monotonic() + 30  # a deletion reaches the metadata shortly after the answer
    while (left := consumer.topics()) & set(mine) and time.monotonic() < deadline:
        time.sleep(0.2)
    consumer.close()
    assert not left & set(mine)
    assert f"{other}-tx" in left
    with pytest.raises(ValueError, match="a prefix is needed"):
        delete_topics(settings, "")


def test_consumer_group_commits_offsets(settings: Settings) -> None:
    topic, group = unique("it-commit"), unique("it-group")
    create_topics(settings.kafka_servers, [topic], partitions=2)
    produce_json(settings.kafka_servers, topic, [(f"k{i}", {"i": i}) for i in range(50)])

    def consume_some() -> int:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        seen = sum(1 for _ in consumer)
        consumer.commit()
        consumer.close()
        return seen

    assert consume_some() == 50
    assert consume_some() == 0, "a committed group must not re-read what it consumed"


def test_sasl_listener_authenticates_and_the_worker_runs_through_it(
    settings: Settings, tmp_path: Path
) -> None:
    """Security settings reach every client: a worker consumes and produces over SASL_PLAINTEXT."""
    host, port = settings.kafka_servers[0].rsplit(":", 1)
    sasl = {
        "FRAUDSTREAM_KAFKA_BOOTSTRAP": f"{host}:{int(port) + 2}",  # scripts/services: the SASL listener
        "FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FRAUDSTREAM_KAFKA_SASL_USERNAME": "fraudstream",
        "FRAUDSTREAM_KAFKA_SASL_PASSWORD": "fraudstream-local",
    }
    env = {**isolated_env(unique("it-sasl"), tmp_path), **sasl, "FRAUDSTREAM_SCORING": "false"}
    s = settings_for(env)
    with pytest.raises(KafkaError):  # the listener refuses a wrong password
        KafkaConsumer(
            bootstrap_servers=s.kafka_servers, request_timeout_ms=3000, api_version_auto_timeout_ms=3000,
            **{**s.kafka_security(), "sasl_plain_password": "wrong"},
        ).topics()  # fmt: skip
    with running_worker(tmp_path / "worker.log", env):
        producer = KafkaProducer(bootstrap_servers=s.kafka_servers, acks="all", **s.kafka_security())
        producer.send(s.topic_transactions, key=b"card-1", value=b"{not json").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            s.topic_dlq, bootstrap_servers=s.kafka_servers, auto_offset_reset="earliest",
            consumer_timeout_ms=60_000, **s.kafka_security(),
        )  # fmt: skip
        dead = next(iter(consumer))
        consumer.close()
    assert json.loads(dead.value)["reason"].startswith("invalid JSON")
