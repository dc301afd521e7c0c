"""Faust's fetch loop with one flow-control wait per fetched batch instead of one per message.

Faust's ``Consumer._drain_messages`` hands each message to the topic conductor inside
``Service.wait_first(callback(message), suspend_flow.wait())``, so that a delivery blocked on a full
stream buffer gives way when a rebalance suspends the flow. ``wait_first`` wraps four awaitables in
tasks (the delivery, the flow, the service's stopped and crashed events), waits for the first and
cancels the rest: for every message. Measured on an agent that does nothing with its batches
(``take_events(500, within=0.02)``, 100,000 transactions from a backlog, 4 partitions, this 2-core
machine): 124-161 µs of CPU a message with Faust's loop, 67-71 µs with this one.

``drain_messages`` does the same work per fetched batch: ``getmany`` (Faust's: it stops at a new
generation or a suspended flow) is read to the end in one pass, without yielding to the loop, then
the batch is delivered message by message under one ``wait_first``. What each message goes through
is Faust's: the read-offset check, the gap bookkeeping of acknowledging topics, the commit every
``broker_commit_every`` acknowledgements, the yield to the loop every 100 messages. A flow
suspended (or a generation changed) during the delivery stops it before the next message, as
Faust's lazy ``getmany`` did, and the rest is not delivered; the read offset moves only for
delivered messages (Faust's loop also moved it for a message whose delivery gave way). After a
rebalance Faust seeks every partition to its committed offset, and the worker's own books
(app/worker/offsets.py) refuse whatever does not follow what it has processed, so an undelivered
rest is read again.

The source topic's messages skip Faust's topic conductor and streams altogether: those of a fetched
batch go to the card agent as one list (``SourceBatches``, app/worker/batches.py). Backlog of 2,000
cards on this machine, same hour: 3,775 -> 6,915-7,848 txn/s, 397 -> 201-232 µs of CPU a
transaction (session 13, docs/performance.md).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

from app.worker.batches import SourceBatches


def install(consumer: Any, source: SourceBatches | None = None) -> None:
    """Replace ``_drain_messages`` on this consumer (Faust's Fetcher calls it once it starts);
    ``source``: where the messages of its topic go, in lists, instead of Faust's streams."""
    consumer._drain_messages = partial(drain_messages, consumer, source=source)


async def drain_messages(consumer: Any, fetcher: Any, source: SourceBatches | None = None) -> None:
    """Faust's ``Consumer._drain_messages`` (faust-streaming 0.15.3), one ``wait_first`` a batch."""
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    deliver = partial(_deliver, consumer, source)
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(CONSUMER_FETCHING)
            batch = [pair async for pair in getmany(timeout=1.0)]
            await consumer.sleep(0)  # Faust's: getmany may return at once, in a loop
            if batch and not consumer.should_stop:
                await consumer.wait_first(deliver(batch), consumer.suspend_flow.wait())
            consumer.diag.unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            consumer.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        consumer.diag.unset_flag(CONSUMER_FETCHING)


async def _deliver(consumer: Any, source: SourceBatches | None, batch: list[tuple[Any, Any]]) -> None:
    callback = consumer.callback
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    app = consumer.app
    generation = app.consumer_generation_id
    topic = None if source is None else source.topic
    taken: list[Any] = []  # source messages, handed over together
    for n, (tp, message) in enumerate(batch, 1):
        if n % 100 == 0:
            await asyncio.sleep(0)  # let the rest of the worker run, as Faust's loop does
        if not consumer.flow_active or app.consumer_generation_id != generation:
            return  # a rebalance began: the rest is read again from the committed offsets
        offset = message.offset
        r_offset = read_offset[tp]
        if r_offset is not None and offset < r_offset:
            continue  # Faust's: already read
        if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
            await consumer._add_gap(tp, r_offset + 1, offset)
        if commit_every is not None and consumer._n_acked >= commit_every:
            consumer._n_acked = 0
            await consumer.commit()
        if message.topic == topic:
            taken.append(message)
        else:
            await callback(message)
        read_offset[tp] = offset
    if taken:
        await source.put(taken)  # type: ignore[union-attr]  # taken only with a source
