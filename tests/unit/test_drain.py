"""Faust's fetch loop, one flow-control wait per fetched batch: every message delivered once, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

from app.worker import drain


class TP(NamedTuple):
    topic: str
    partition: int


P0, P1 = TP("transactions", 0), TP("transactions", 1)


@dataclass(frozen=True)
class Message:
    tp: TP
    offset: int

    @property
    def topic(self) -> str:
        return self.tp.topic


@dataclass
class Consumer:
    """The parts of Faust's consumer the fetch loop touches; ``fetches`` are getmany's answers."""

    fetches: list[list[tuple[TP, Message]]]
    on_deliver: Callable[[Consumer, Message], None] = lambda consumer, message: None
    delivered: list[Message] = field(default_factory=list)
    waits: int = 0  # wait_first calls
    gaps: list[tuple[TP, int, int]] = field(default_factory=list)
    commits: int = 0

    def __post_init__(self) -> None:
        self._stopped = asyncio.Event()
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = 3
        self._n_acked = 0
        self.flow_active = True
        self.should_stop = False
        self.suspend_flow = asyncio.Event()
        self.consumer_stopped_errors = (ConnectionError,)
        topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
        self.app = SimpleNamespace(consumer_generation_id=1, topics=topics)
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.log = SimpleNamespace(info=lambda *a: None, exception=lambda *a: None)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if not self.fetches:
            self._stopped.set()  # nothing more to fetch: the consumer stops
            return
        for pair in self.fetches.pop(0):
            yield pair

    async def callback(self, message: Message) -> None:
        self.delivered.append(message)
        self._n_acked += 1
        self.on_deliver(self, message)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_first(self, *coros: Awaitable[Any]) -> None:
        self.waits += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _add_gap(self, tp: TP, start: int, stop: int) -> None:
        self.gaps.append((tp, start, stop))

    async def commit(self) -> None:
        self.commits += 1


def run(consumer: Consumer) -> None:
    drain.install(consumer)
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    asyncio.run(asyncio.wait_for(consumer._drain_messages(fetcher), 5))  # type: ignore[attr-defined]


def batch(tp: TP, *offsets: int) -> list[tuple[TP, Message]]:
    return [(tp, Message(tp, o)) for o in offsets]


def test_every_message_is_delivered_in_order_with_one_wait_per_fetched_batch() -> None:
    fetches = [batch(P0, 0, 1, 2) + batch(P1, 0, 1), batch(P0, *range(3, 250))]
    consumer = Consumer([list(f) for f in fetches])
    run(consumer)
    assert consumer.delivered == [m for f in fetches for _, m in f]
    assert consumer.waits == 2  # Faust's loop: one per message (252)
    assert consumer._read_offset == {P0: 249, P1: 1}
    assert consumer.commits == 251 // 3  # before a message, once 3 are acknowledged (Faust's rule)


def test_a_message_below_the_read_offset_is_skipped_and_a_jump_in_offsets_is_a_gap() -> None:
    consumer = Consumer([batch(P0, 5, 6), batch(P0, 6, 5, 9)])
    run(consumer)
    assert [m.offset for m in consumer.delivered] == [5, 6, 6, 9]  # Faust's: the last one read again
    assert consumer.gaps == [(P0, 7, 9)]


def test_a_rebalance_during_the_delivery_stops_it_and_the_rest_is_not_marked_read() -> None:
    def rebalance_at_offset_1(consumer: Consumer, message: Message) -> None:
        if message.offset == 1:
            consumer.flow_active = False

    consumer = Consumer([batch(P0, 0, 1, 2, 3)], on_deliver=rebalance_at_offset_1)
    run(consumer)
    assert [m.offset for m in consumer.delivered] == [0, 1]
    assert consumer._read_offset[P0] == 1  # 2 and 3 are read again after the seek


def test_a_new_generation_during_the_delivery_stops_it() -> None:
    def new_generation(consumer: Consumer, message: Message) -> None:
        consumer.app.consumer_generation_id = 2

    consumer = Consumer([batch(P0, 0, 1), batch(P0, 2)], on_deliver=new_generation)
    run(consumer)
    assert [m.offset for m in consumer.delivered] == [0, 2]  # the next fetch is of the new generation


def test_a_suspended_flow_cancels_a_delivery_that_waits() -> None:
    async def blocked(message: Message) -> None:  # a full stream buffer
        consumer.delivered.append(message)
        consumer.suspend_flow.set()
        await asyncio.sleep(3600)

    consumer = Consumer([batch(P0, 0, 1)])
    consumer.callback = blocked  # type: ignore[method-assign]
    run(consumer)
    assert [m.offset for m in consumer.delivered] == [0]
    assert consumer._read_offset[P0] is None
