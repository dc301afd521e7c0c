"""A batch's outputs go where ``producer.send`` would send them, in order, one future per partition."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from app.worker.outbox import Message, Outbox


class FakeProducer:
    """Record batches as aiokafka builds them; what was submitted, per topic partition, in order."""

    def __init__(self, partitions: int, batch_size: int = 16_384) -> None:
        self.count, self.batch_size = partitions, batch_size
        self.submitted: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.asked = 0

    async def partitions_for(self, topic: str) -> set[int]:
        self.asked += 1
        return set(range(self.count))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)  # as the producer makes them: no compression

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch._closed
        self.submitted.append((topic, partition, self._contents(batch)))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    @staticmethod
    def _contents(batch: BatchBuilder) -> list[tuple[bytes | None, bytes | None]]:
        buffer = batch._builder.build()
        return [(r.key, r.value) for r in DefaultRecordBatch(buffer)]


def run(outbox: Outbox, messages: list[Message]) -> list[Any]:
    return asyncio.run(outbox.send(messages))


def test_keyed_messages_go_where_the_default_partitioner_sends_them_in_order() -> None:
    producer = FakeProducer(partitions=4)
    keys = [f"card-{i % 37}".encode() for i in range(300)]
    messages = [Message("scores", k, f"{n}".encode()) for n, k in enumerate(keys)]
    sent = run(Outbox(lambda: producer), messages)

    expected = DefaultPartitioner()
    by_partition: dict[int, list[bytes]] = {}
    for k, m in zip(keys, messages, strict=True):
        by_partition.setdefault(expected(k, [0, 1, 2, 3], [0, 1, 2, 3]), []).append(m.value or b"")
    got = {p: [v for _, v in records] for _, p, records in producer.submitted}
    assert got == by_partition  # same partitions, same order within each
    assert len(sent) == len(producer.submitted) == len(by_partition)  # one future per partition
    assert producer.asked == 1  # the topic's partitions are asked for once


def test_a_named_partition_is_kept_and_topics_are_separate() -> None:
    producer = FakeProducer(partitions=4)
    messages = [
        Message("changelog", b"card-1", b"s1", 3),
        Message("dlq", None, b"bad"),
        Message("changelog", b"card-2", b"s2", 3),
    ]
    run(Outbox(lambda: producer), messages)
    changelog = [(p, records) for t, p, records in producer.submitted if t == "changelog"]
    assert changelog == [(3, [(b"card-1", b"s1"), (b"card-2", b"s2")])]
    assert [t for t, _, _ in producer.submitted].count("dlq") == 1


def test_a_full_batch_is_sent_and_a_new_one_started() -> None:
    producer = FakeProducer(partitions=1, batch_size=1_000)
    messages = [Message("scores", b"k", bytes([65 + n % 26]) * 300) for n in range(10)]
    sent = run(Outbox(lambda: producer), messages)
    assert len(sent) > 1
    assert [v for _, _, records in producer.submitted for _, v in records] == [m.value for m in messages]


def test_a_message_larger_than_a_batch_goes_alone_in_its_own() -> None:
    producer = FakeProducer(partitions=1, batch_size=1_000)
    messages = [
        Message("scores", b"k", b"a"),
        Message("scores", b"k", b"x" * 5_000),
        Message("scores", b"k", b"b"),
    ]
    run(Outbox(lambda: producer), messages)
    assert [[v for _, v in records] for _, _, records in producer.submitted] == [
        [b"a"],
        [b"x" * 5_000],
        [b"b"],
    ]
