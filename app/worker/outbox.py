"""A micro-batch's outputs to Kafka as record batches: one future per topic partition, not per message.

``producer.send`` costs the worker ~20-30 µs per message in Python (a metadata wait, the
partitioner building lists of partitions, a future and an accumulator entry each); a micro-batch
of 500 transactions sends ~500 score events and up to 500 card states. ``Outbox.send`` groups the
messages by topic partition, appends them to aiokafka's record-batch builders (C code) and hands
each builder to the producer with ``send_batch``. Partitions are those ``producer.send`` would
pick: aiokafka's default partitioner (murmur2 of the key, like the Java client) unless the message
names its partition. Order is kept within each partition, as the producer keeps it. A message
larger than a batch goes alone in its own; if the broker refuses it, the delivery fails and the
worker stops naming the topic (as with ``producer.send``, which refuses it before sending).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from aiokafka.partitioner import DefaultPartitioner


class Message(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: by key, as the producer's default partitioner would


class Sent(NamedTuple):
    """Part of a batch's output: its topic (for diagnostics), and the future Kafka's ack resolves."""

    topic: str
    ack: Awaitable[Any]


class Outbox:
    """Sends messages through an aiokafka producer in record batches (``producer`` is asked for the
    producer at each send: Faust starts its producer after the pipeline is built)."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        self.producer = producer
        self.partitioner = DefaultPartitioner()
        self.partitions: dict[str, list[int]] = {}  # a topic's partitions, asked of Kafka once

    async def partition_list(self, topic: str) -> list[int]:
        known = self.partitions.get(topic)
        if known is None:
            known = self.partitions[topic] = sorted(await self.producer().partitions_for(topic))
        return known

    async def send(self, messages: Iterable[Message]) -> list[Sent]:
        """Queue every message with the producer; returns one ``Sent`` per record batch."""
        producer = self.producer()
        builders: dict[tuple[str, int], Any] = {}
        sent: list[Sent] = []
        for m in messages:
            partition = m.partition
            if partition is None:
                parts = await self.partition_list(m.topic)
                partition = self.partitioner(m.key, parts, parts)
            tp = (m.topic, partition)
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            if builder.append(key=m.key, value=m.value, timestamp=None) is None:  # full: send it, start anew
                sent.append(await self._submit(producer, builder, tp))
                builder = builders[tp] = producer.create_batch()
                builder.append(key=m.key, value=m.value, timestamp=None)  # an empty batch takes any message
        for tp, builder in builders.items():
            sent.append(await self._submit(producer, builder, tp))
        return sent

    @staticmethod
    async def _submit(producer: Any, builder: Any, tp: tuple[str, int]) -> Sent:
        builder.close()  # nothing else may join it (producer.send could, into an open one)
        return Sent(tp[0], await producer.send_batch(builder, tp[0], partition=tp[1]))
