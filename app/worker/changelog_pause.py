"""The changelog partitions Faust pauses are paused in aiokafka too, so their records do not hold
up the fetch of the source topic.

Faust (faust-streaming 0.15.3) pauses a partition only in its own books: ``pause_partitions``
takes it out of the active partitions that ``getmany`` asks aiokafka for, and aiokafka goes on
fetching it. Once a recovery is done, Faust pauses the changelog partitions of the tables it holds
(the card states). The worker writes card states to them from its first batch on, and aiokafka's
next fetch brought those records back. Nothing ever takes them, and aiokafka sends a broker no new
fetch while one of its partitions holds records not yet taken, until ``prefetch_backoff`` (100 ms)
has passed. Every paced bench run had that stall: no fetch for ~100 ms after the first batch's card
states, so that the transactions of the first ~0.15 s waited 108-127 ms in the fetch step, and a
new one came after every rebalance (session 21, docs/performance.md).

``install`` makes Faust's pause and resume of a changelog partition pause and resume it in aiokafka
as well. Both run on the consumer thread, where aiokafka's fetcher runs, as Faust's own calls into
aiokafka do. A pause also drops the partition's records fetched and not taken. They are read again
after a resume: aiokafka moves a partition's position only when its records are taken. Only
changelog partitions are mirrored; Faust's pauses of source partitions are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition


def install(consumer: Any) -> None:
    """Wrap this Faust consumer's ``pause_partitions`` and ``resume_partitions``."""
    pause, resume = consumer.pause_partitions, consumer.resume_partitions

    def pause_partitions(tps: Iterable[Any]) -> None:
        tps = list(tps)
        pause(tps)
        _mirror(consumer, tps, paused=True)

    def resume_partitions(tps: Iterable[Any]) -> None:
        tps = list(tps)
        resume(tps)
        _mirror(consumer, tps, paused=False)

    consumer.pause_partitions = pause_partitions
    consumer.resume_partitions = resume_partitions


def _mirror(consumer: Any, tps: list[Any], *, paused: bool) -> None:
    changelogs = [TopicPartition(tp.topic, tp.partition) for tp in tps if consumer._is_changelog_tp(tp)]
    thread = consumer._thread
    client = thread._consumer  # aiokafka's consumer; None until the thread has started it
    if changelogs and client is not None:
        thread.thread_loop.call_soon_threadsafe(apply, consumer, client, changelogs, paused)


def apply(consumer: Any, client: Any, tps: list[TopicPartition], paused: bool) -> None:
    """On the consumer thread: pause (or resume) in aiokafka those of ``tps`` still assigned, and
    still paused (or resumed) in Faust's books: a pause and a resume queued close together, or a
    rebalance between the call and now, must not leave aiokafka out of step with Faust."""
    assigned = client.assignment()
    for tp in tps:
        if tp not in assigned or (tp in consumer._paused_partitions) != paused:
            continue
        if paused:
            client.pause(tp)
            client._fetcher._records.pop(tp, None)  # fetched, never to be taken while paused
        else:
            client.resume(tp)
