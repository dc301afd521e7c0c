"""The worker's books for the source topic: no gap is processed, only a finished prefix is committed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from app.worker.offsets import STALL_S, SourceOffsets, seek_on_consumer_thread

SOURCE = "transactions"


class TP(NamedTuple):
    topic: str
    partition: int


P0, P1 = TP(SOURCE, 0), TP(SOURCE, 1)


@dataclass(eq=False)
class Message:
    tp: TP
    offset: int
    current: bool = True
    acked: bool = False

    @property
    def topic(self) -> str:
        return self.tp.topic

    def ack(self, consumer: Any) -> bool:
        return bool(consumer.ack(self))


@dataclass
class Consumer:
    """The parts of Faust's consumer that SourceOffsets touches."""

    committed: dict[TP, int | None] = field(default_factory=dict)  # what Faust has recorded
    in_kafka: dict[TP, int] = field(default_factory=dict)  # what the group has committed
    faust_acks: list[Message] = field(default_factory=list)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    lookups: list[list[TP]] = field(default_factory=list)  # the partitions each Kafka lookup asked for

    def __post_init__(self) -> None:
        self._committed_offset = self.committed
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._unacked_messages: set[Message] = set()
        self._waiting_for_ack: Any = None
        self._read_offset: dict[TP, int | None] = {}
        self._paused_partitions: set[TP] = set()
        self.flow_active = True

    def ack(self, message: Message) -> bool:
        self.faust_acks.append(message)
        return True

    def _new_offset(self, tp: TP) -> int | None:
        return -1  # Faust's own arithmetic

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def wait_empty(self) -> None:  # Faust's: wait until every tracked message is acknowledged
        assert not self._unacked_messages, "the shutdown would wait for these until SIGTERM"


def books(consumer: Consumer, log_starts: dict[int, int] | None = None) -> SourceOffsets:
    async def first_offset(tp: TP, offset: int) -> int | None:
        return max(offset, (log_starts or {}).get(offset, offset))

    async def committed(tps: list[TP]) -> dict[TP, int]:
        consumer.lookups.append(tps)
        return {tp: consumer.in_kafka[tp] for tp in tps if tp in consumer.in_kafka}

    offsets = SourceOffsets(consumer, SOURCE, first_offset, current=lambda m: m.current, committed=committed)
    offsets.install()
    return offsets


def admit(offsets: SourceOffsets, *messages: Message) -> list[bool]:
    return asyncio.run(offsets.admit(messages))


def test_a_gap_is_refused_and_sought_back_then_read_in_order() -> None:
    consumer = Consumer(committed={P0: 10})
    offsets = books(consumer)
    m = [Message(P0, o) for o in range(10, 16)]
    assert admit(offsets, m[0], m[1], m[4], m[5]) == [True, True, False, False]
    assert consumer.seeks == [(P0, 12)]  # once, not once per refused message
    assert offsets.refused == 2
    assert admit(offsets, m[2], m[3], m[4], m[5]) == [True, True, True, True]
    assert offsets.next[P0] == 16


def test_a_gap_still_open_is_sought_again_even_when_no_message_arrives() -> None:
    consumer = Consumer(committed={P0: 10})
    offsets = books(consumer)
    assert admit(offsets, Message(P0, 10), Message(P0, 40)) == [True, False]
    assert consumer.seeks == [(P0, 11)]
    sought_at = offsets.sought[P0][1]
    asyncio.run(offsets.reseek_stalled(now=sought_at + 1))
    assert consumer.seeks == [(P0, 11)]  # not yet
    asyncio.run(offsets.reseek_stalled(now=sought_at + 6))
    assert consumer.seeks == [(P0, 11), (P0, 11)]  # the input is quiet: sought again anyway
    assert admit(offsets, Message(P0, 11)) == [True]
    asyncio.run(offsets.reseek_stalled(now=sought_at + 20))
    assert consumer.seeks == [(P0, 11), (P0, 11)]  # the gap closed: nothing more to do


def test_a_quiet_partition_with_messages_waiting_in_kafka_is_sought_back_once_idle() -> None:
    consumer = Consumer(committed={P0: 10, P1: 0})
    offsets = books(consumer)
    assert admit(offsets, Message(P0, 10), Message(P1, 0)) == [True, True]
    ends = {P0: 25, P1: 1}  # P0 has 14 messages the worker never got; P1 is simply idle
    asked: list[list[TP]] = []

    async def end_offsets(tps: list[TP]) -> dict[TP, int]:
        asked.append(tps)
        return {tp: ends[tp] for tp in tps}

    t0 = time.monotonic()

    def look(after_s: float) -> None:
        asyncio.run(offsets.seek_stalled(end_offsets, now=t0 + after_s))

    look(STALL_S - 1)
    assert (asked, consumer.seeks) == ([], [])  # not quiet for long enough: Kafka is not even asked
    held = Message(P1, 1)
    assert admit(offsets, held) == [True]
    consumer._unacked_messages.add(held)  # the pipeline holds a message (of P1): busy, not stalled
    look(STALL_S + 1)
    consumer._unacked_messages.clear()
    offsets.waiting = lambda: 3  # fetched messages wait for the agent: busy too
    look(STALL_S + 1.5)
    offsets.waiting = lambda: 0
    consumer._unacked_messages.add(held)
    consumer.flow_active = False  # a rebalance
    offsets.release([held])
    consumer._unacked_messages.clear()
    look(STALL_S + 2)
    assert (asked, consumer.seeks) == ([], [])
    consumer.flow_active = True
    look(STALL_S + 3)
    assert asked == [[P0, P1]]
    assert consumer.seeks == [(P0, 11)]  # P1 has nothing waiting: left alone
    look(STALL_S + 4)
    assert consumer.seeks == [(P0, 11)]  # once per STALL_S, not once a second
    look(2 * STALL_S + 5)
    assert consumer.seeks == [(P0, 11), (P0, 11)]


def test_the_partitions_a_batch_starts_are_looked_up_in_kafka_together() -> None:
    """A fresh group: Faust has recorded no commit, so each partition's start is asked of Kafka, once
    for all of a batch's new partitions (one lookup each held a first batch ~120 ms)."""
    P2 = TP(SOURCE, 2)  # noqa: N806 - a partition, like P0 and P1
    consumer = Consumer(committed={P0: 4}, in_kafka={P1: 7})  # P2: never committed
    offsets = books(consumer)
    batch = [Message(P1, 7), Message(P0, 4), Message(P2, 0), Message(P1, 8), Message(P2, 1)]
    assert admit(offsets, *batch) == [True] * 5
    assert consumer.lookups == [[P1, P2]]  # P0's start is Faust's record: not asked
    assert admit(offsets, Message(P1, 9), Message(P2, 2)) == [True, True]
    assert consumer.lookups == [[P1, P2]]  # started: never asked again
    assert (offsets.next[P0], offsets.next[P1], offsets.next[P2]) == (5, 10, 3)


def test_the_committed_offsets_are_asked_at_the_assignment_not_under_the_first_batch() -> None:
    consumer = Consumer(in_kafka={P1: 7})  # a fresh group's worker: Faust has recorded nothing

    async def main() -> list[bool]:
        offsets = books(consumer)
        offsets.assigned([P0, P1, TP("other", 0)])
        await asyncio.sleep(0)  # the lookup runs while no message has come yet
        assert consumer.lookups == [[P0, P1]]
        return await offsets.admit([Message(P1, 7), Message(P0, 0), Message(P1, 8)])

    assert asyncio.run(main()) == [True, True, True]
    assert consumer.lookups == [[P0, P1]], "the first batch asks nothing more"


def test_a_failed_lookup_at_the_assignment_is_asked_again_when_the_partition_starts() -> None:
    consumer = Consumer(in_kafka={P0: 3})

    async def main() -> list[bool]:
        offsets = books(consumer)
        broken = offsets.committed

        async def fails_once(tps: list[TP]) -> dict[TP, int]:
            offsets.committed = broken
            raise ConnectionError("broker not available")

        offsets.committed = fails_once
        offsets.assigned([P0])
        await asyncio.sleep(0)
        return await offsets.admit([Message(P0, 3)])

    assert asyncio.run(main()) == [True]
    assert consumer.lookups == [[P0]]  # the second ask, at the start: it starts at 3


def test_a_partition_that_never_delivers_a_message_is_sought_back_to_the_committed_offset() -> None:
    P2 = TP(SOURCE, 2)  # noqa: N806 - a partition, like P0 and P1
    consumer = Consumer(committed={P0: 10}, in_kafka={P1: 7})  # Faust has not recorded P1 and P2 yet
    offsets = books(consumer)
    t0 = time.monotonic()
    offsets.assigned([P0, P1, P2, TP("other", 0)], now=t0)
    assert set(offsets.silent) == {P0, P1, P2}
    assert admit(offsets, Message(P0, 10)) == [True]  # P0 delivers: no longer silent
    assert set(offsets.silent) == {P1, P2}
    ends = {P0: 11, P1: 30, P2: 0}  # P1 has 23 messages past its commit; P2 is empty

    async def end_offsets(tps: list[TP]) -> dict[TP, int]:
        return {tp: ends[tp] for tp in tps}

    consumer._paused_partitions.add(P1)  # still recovering at first
    asyncio.run(offsets.seek_stalled(end_offsets, now=t0 + STALL_S + 1))
    assert consumer.seeks == []
    consumer._paused_partitions.clear()
    asyncio.run(offsets.seek_stalled(end_offsets, now=t0 + STALL_S + 2))
    assert consumer.seeks == [], "the wait counts from the end of the recovery"
    asyncio.run(offsets.seek_stalled(end_offsets, now=t0 + 2 * STALL_S + 2))
    assert consumer.seeks == [(P1, 7)]  # the group's commit, asked of Kafka; P2 has nothing waiting
    offsets.forget([P1, P2])
    assert offsets.silent == {}


def test_only_a_finished_prefix_is_committed_whatever_order_batches_finish_in() -> None:
    consumer = Consumer(committed={P0: None})  # Faust says None for "committed 0" and "no commit"
    offsets = books(consumer)
    first, second = [Message(P0, o) for o in range(3)], [Message(P0, o) for o in range(3, 6)]
    assert all(admit(offsets, *first, *second))
    assert consumer._new_offset(P0) == 0
    offsets.release(second)  # the later batch's outputs were delivered first
    assert consumer._new_offset(P0) == 0
    offsets.release(first)
    assert consumer._new_offset(P0) == 6
    assert consumer.faust_acks == []  # Faust's own ack bookkeeping never sees source messages
    assert all(m.acked for m in first + second)


def test_messages_let_go_unfinished_are_acknowledged_but_never_committed() -> None:
    consumer = Consumer(committed={P0: 3})
    offsets = books(consumer)
    first, second = [Message(P0, o) for o in range(3, 5)], [Message(P0, o) for o in range(5, 7)]
    assert all(admit(offsets, *first, *second))
    consumer._unacked_messages.update(first + second)
    offsets.release(second, finished=False)  # the worker is stopping: Faust's shutdown must not wait
    assert consumer._unacked_messages == set(first)
    assert all(m.acked for m in second)
    offsets.release(first)
    assert consumer._new_offset(P0) == 5  # 5 and 6 are replayed after the restart
    assert consumer._unacked_messages == set()


def test_a_worker_that_gives_up_lets_go_of_every_source_message_and_commits_none_of_them() -> None:
    consumer = Consumer(committed={P0: 3})
    offsets = books(consumer)
    held = [Message(P0, o) for o in range(3, 6)]
    assert all(admit(offsets, *held))
    other = Message(TP("card-state-changelog", 0), 9)  # Faust's own books for other topics stay
    consumer._unacked_messages.update([*held, other])
    offsets.give_up()  # a batch failed: the worker stops
    assert consumer._unacked_messages == {other}
    queued = Message(P0, 6)  # tracked after giving up: still in a stream queue when the fetcher stops
    consumer._unacked_messages.add(queued)
    consumer._unacked_messages.discard(other)
    asyncio.run(consumer.wait_empty())  # the shutdown lets go of it, and neither waits nor commits
    assert queued.acked
    assert consumer._new_offset(P0) == 3  # nothing past the committed offset: all replayed


def test_a_message_skipped_by_faust_is_never_committed() -> None:
    consumer = Consumer(committed={P0: 4})
    offsets = books(consumer)
    kept, skipped = Message(P0, 4), Message(P0, 5)
    assert admit(offsets, kept, skipped) == [True, True]
    consumer._unacked_messages.add(skipped)
    skipped.ack(consumer)  # Faust's stream acknowledging a message it skipped
    assert skipped not in consumer._unacked_messages
    offsets.release([kept])
    assert consumer._new_offset(P0) == 5


def test_offsets_missing_from_the_log_are_skipped_and_committed_over() -> None:
    consumer = Consumer(committed={P0: 7})
    offsets = books(consumer, log_starts={7: 9})  # 7 and 8 are gone (retention, compaction, markers)
    assert admit(offsets, Message(P0, 9)) == [True]
    assert consumer.seeks == []
    offsets.release([Message(P0, 9)])
    assert consumer._new_offset(P0) == 10


def test_messages_from_before_a_rebalance_wait_for_the_new_assignment() -> None:
    consumer = Consumer(committed={P0: 20, P1: 3})
    offsets = books(consumer)
    assert admit(offsets, Message(P0, 20), Message(P0, 21)) == [True, True]
    offsets.forget([P0, P1])  # revoked; Faust seeks to the committed offsets after the assignment
    assert admit(offsets, Message(P0, 22, current=False), Message(P1, 9, current=False)) == [False, False]
    assert consumer.seeks == []
    consumer.committed[P0] = 21
    assert admit(offsets, Message(P0, 21), Message(P0, 22), Message(P1, 3)) == [True, True, True]
    offsets.release([Message(P0, 20)])  # finished before the revocation: below the new start
    assert consumer._new_offset(P0) == 21


def test_a_re_read_below_the_next_offset_goes_through() -> None:
    consumer = Consumer(committed={P0: 0})
    offsets = books(consumer)
    assert all(admit(offsets, *(Message(P0, o) for o in range(5))))
    assert admit(offsets, Message(P0, 2), Message(P0, 3)) == [True, True]  # Faust sought to a commit
    assert offsets.next[P0] == 5


def test_other_topics_keep_fausts_bookkeeping() -> None:
    consumer = Consumer()
    books(consumer)
    other = Message(TP("card-state-changelog", 0), 3)
    assert other.ack(consumer) is True
    assert consumer.faust_acks == [other]
    assert consumer._new_offset(other.tp) == -1


def test_a_commit_faust_has_not_recorded_yet_is_asked_of_kafka() -> None:
    consumer = Consumer(committed={}, in_kafka={P0: 231})  # Faust's seek comes after the first fetch
    offsets = books(consumer)
    assert admit(offsets, Message(P0, 231), Message(P0, 232)) == [True, True]
    assert consumer.seeks == []  # not sought back to 0: the partition is not re-read from the start
    assert offsets.next[P0] == 233


def test_a_failed_lookup_falls_back_to_reading_again() -> None:
    consumer = Consumer(committed={})
    offsets = books(consumer)

    async def broken(tp: TP) -> int | None:
        raise OSError("broker unreachable")

    offsets.committed = broken
    assert admit(offsets, Message(P0, 40)) == [False]  # started at 0: sought back, nothing skipped
    assert consumer.seeks == [(P0, 0)]


class ConsumerThread:
    """Faust's consumer thread: its own event loop, where aiokafka's consumer lives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.seeks: list[tuple[TP, int, int]] = []  # (tp, offset, the thread that ran aiokafka's seek)

    async def call_thread(self, fun: Any, *args: Any) -> Any:  # mode's: runs fun on the thread's loop
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fun(*args), self.loop))

    def seek(self, tp: TP, offset: int) -> None:  # aiokafka's seek, which must not run elsewhere
        self.seeks.append((tp, offset, threading.get_ident()))


def test_a_seek_runs_on_the_consumer_thread() -> None:
    consumer = Consumer()
    thread = ConsumerThread()
    consumer._thread = thread  # type: ignore[attr-defined]
    seek_on_consumer_thread(consumer)  # Faust's Consumer.seek awaits _seek, then records the read offset
    try:
        asyncio.run(consumer._seek(P0, 12))  # type: ignore[attr-defined]
        asyncio.run(consumer._seek(P1, 0))  # type: ignore[attr-defined]
    finally:
        thread.loop.call_soon_threadsafe(thread.loop.stop)
        thread.thread.join(timeout=5)
        thread.loop.close()
    assert [(tp, offset) for tp, offset, _ in thread.seeks] == [(P0, 12), (P1, 0)]
    assert {ident for _, _, ident in thread.seeks} == {thread.thread.ident}, "never the caller's thread"


def test_lag_is_what_kafka_holds_beyond_the_finished_prefix() -> None:
    consumer = Consumer(committed={P0: 10, P1: 0})
    offsets = books(consumer)
    m = [Message(P0, o) for o in range(10, 14)]
    assert admit(offsets, *m) == [True] * 4
    offsets.finish(P0, 10)
    offsets.finish(P0, 12)  # 11 not finished: the prefix ends at 11
    ends: dict[TP, int | None] = {P0: 30}
    asked: list[list[TP]] = []

    def highwater(tp: TP) -> int | None:
        if tp != P0:
            raise AssertionError("only started partitions: their fetcher's highwater")
        return ends.get(tp)

    async def end_offsets(tps: list[TP]) -> dict[TP, int]:
        asked.append(tps)
        return {tp: end for tp in tps if (end := ends.get(tp)) is not None}

    def lag() -> dict[int, int]:
        return asyncio.run(offsets.lag(highwater, end_offsets))

    assert lag() == {0: 19}
    assert asked == [], "nothing asked of Kafka while every partition has started"
    offsets.finish(P0, 11)
    offsets.finish(P0, 13)
    assert lag() == {0: 16}
    p2 = TP(SOURCE, 2)
    consumer.committed[p2] = 40
    offsets.assigned([p2])  # recovering its card states: no message admitted yet
    ends[p2] = 100
    assert lag() == {0: 16, 2: 60}, "from the committed offset until it starts"
    assert asked[-1] == [p2]
    ends[P0] = None  # no fetch answer yet
    assert lag() == {2: 60}

    async def down(tps: list[TP]) -> dict[TP, int]:
        raise RuntimeError("Kafka is away")

    def revoked(tp: TP) -> int:
        raise RuntimeError("no longer assigned")

    assert asyncio.run(offsets.lag(revoked, down)) == {}
