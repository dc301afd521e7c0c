"""Faust's pauses of changelog partitions reach aiokafka, on the consumer thread, in step with Faust."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import TopicPartition

from app.worker import changelog_pause

CHANGELOG = [TopicPartition("app-card-state-changelog", p) for p in range(2)]
SOURCE = TopicPartition("app-tx", 0)


class FakeClient:
    """aiokafka's consumer, as far as the mirror uses it."""

    def __init__(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.paused: set[TopicPartition] = set()
        self._fetcher = type("Fetcher", (), {})()
        self._fetcher._records = {tp: f"records of {tp.partition}" for tp in self.assigned}

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, *tps: TopicPartition) -> None:
        assert all(isinstance(tp, TopicPartition) for tp in tps)  # aiokafka refuses anything else
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)


class FakeLoop:
    """The consumer thread's loop: callbacks wait until ``run`` (the thread's next turn)."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        self.queued.append((fn, args))

    def run(self) -> None:
        queued, self.queued = self.queued, []
        for fn, args in queued:
            fn(*args)


class FakeConsumer:
    """Faust's consumer: pauses in its own books only, as faust-streaming 0.15.3 does."""

    def __init__(self, client: FakeClient | None) -> None:
        self._paused_partitions: set[Any] = set()
        self._thread = type("Thread", (), {})()
        self._thread._consumer = client
        self._thread.thread_loop = FakeLoop()

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        self._paused_partitions.update(tps)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        self._paused_partitions.difference_update(tps)

    def _is_changelog_tp(self, tp: Any) -> bool:
        return bool(tp.topic.endswith("-changelog"))


def installed(assigned: Iterable[TopicPartition] = (*CHANGELOG, SOURCE)) -> tuple[FakeConsumer, FakeClient]:
    client = FakeClient(assigned)
    consumer = FakeConsumer(client)
    changelog_pause.install(consumer)
    return consumer, client


def test_a_changelog_partition_paused_by_faust_is_paused_in_aiokafka_and_its_records_dropped() -> None:
    consumer, client = installed()
    consumer.pause_partitions([*CHANGELOG, SOURCE])
    assert consumer._paused_partitions == {*CHANGELOG, SOURCE}  # Faust's own books, at once
    assert client.paused == set()  # not yet: on the consumer thread
    consumer._thread.thread_loop.run()
    assert client.paused == set(CHANGELOG)  # the source partition is left to Faust
    assert set(client._fetcher._records) == {SOURCE}


def test_a_resume_reaches_aiokafka_too() -> None:
    consumer, client = installed()
    consumer.pause_partitions(CHANGELOG)
    consumer._thread.thread_loop.run()
    consumer.resume_partitions(CHANGELOG[:1])
    consumer._thread.thread_loop.run()
    assert client.paused == set(CHANGELOG[1:])


def test_a_pause_resumed_before_the_thread_ran_it_leaves_the_partition_fetched() -> None:
    consumer, client = installed()
    consumer.pause_partitions(CHANGELOG)
    consumer.resume_partitions(CHANGELOG)  # e.g. a recovery resuming what the assignment paused
    consumer._thread.thread_loop.run()
    assert client.paused == set()
    assert set(client._fetcher._records) == {*CHANGELOG, SOURCE}


def test_partitions_no_longer_assigned_are_left_alone() -> None:
    consumer, client = installed(assigned=[CHANGELOG[0], SOURCE])
    consumer.pause_partitions(CHANGELOG)  # CHANGELOG[1] went to another worker meanwhile
    consumer._thread.thread_loop.run()
    assert client.paused == {CHANGELOG[0]}


def test_before_the_consumer_thread_started_only_faust_books_change() -> None:
    consumer = FakeConsumer(client=None)
    changelog_pause.install(consumer)
    consumer.pause_partitions(CHANGELOG)
    assert consumer._paused_partitions == set(CHANGELOG)
    assert consumer._thread.thread_loop.queued == []
