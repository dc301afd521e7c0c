"""Fetched source messages handed to the card agent in micro-batches: order, size, window, bound."""

from __future__ import annotations

import asyncio
import time

from app.worker.batches import SourceBatches


def test_a_full_batch_is_taken_at_once_in_order_across_lists() -> None:
    async def main() -> list[list[int]]:
        q = SourceBatches("tx", limit=100)
        await q.put([1, 2, 3])
        await q.put([4, 5, 6, 7])
        await q.put([8])
        return [await q.take(5, within_s=60), await q.take(5, within_s=0)]

    assert asyncio.run(main()) == [[1, 2, 3, 4, 5], [6, 7, 8]]


def test_the_agent_knows_when_the_oldest_message_it_took_was_put() -> None:
    async def main() -> list[float]:
        q = SourceBatches("tx", limit=100)
        await q.put([1, 2])
        first = time.monotonic()
        await asyncio.sleep(0.02)
        await q.put([3])
        await q.take(1, within_s=0)  # 1: from the first list
        taken = [q.taken_from - first]
        await q.take(5, within_s=0)  # 2 (rest of the first list) and 3
        return [*taken, q.taken_from - first]

    assert [round(t, 2) for t in asyncio.run(main())] == [0.0, 0.0]


def test_a_short_batch_waits_for_the_oldest_message_to_be_within_old() -> None:
    async def main() -> tuple[list[int], float]:
        q = SourceBatches("tx", limit=100)
        await q.put([1])
        start = time.monotonic()
        taken = await q.take(10, within_s=0.05)
        return taken, time.monotonic() - start

    taken, waited = asyncio.run(main())
    assert taken == [1]
    assert 0.04 <= waited < 1.0


def test_the_window_counts_from_the_oldest_put_not_from_the_take() -> None:
    async def main() -> float:
        q = SourceBatches("tx", limit=100)
        await q.put([1])
        await asyncio.sleep(0.1)  # the agent was busy: the message has waited its window already
        start = time.monotonic()
        await q.take(10, within_s=0.05)
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.03


def test_messages_that_arrive_in_the_window_join_the_batch() -> None:
    async def main() -> list[int]:
        q = SourceBatches("tx", limit=100)

        async def later() -> None:
            await asyncio.sleep(0.02)
            await q.put([2, 3])

        await q.put([1])
        feeder = asyncio.ensure_future(later())
        taken = await q.take(3, within_s=5)  # three come before the window ends: no 5 s wait
        await feeder
        return taken

    start = time.monotonic()
    assert asyncio.run(main()) == [1, 2, 3]
    assert time.monotonic() - start < 2


def test_put_waits_while_the_limit_waits_and_take_makes_room() -> None:
    async def main() -> tuple[bool, list[int], int]:
        q = SourceBatches("tx", limit=4)
        await q.put([1, 2, 3, 4])
        blocked = asyncio.ensure_future(q.put([5]))
        await asyncio.sleep(0.02)
        was_blocked = not blocked.done()
        first = await q.take(2, within_s=0)
        await asyncio.wait_for(blocked, 1)
        return was_blocked, first, len(q)

    assert asyncio.run(main()) == (True, [1, 2], 3)


def test_take_waits_for_a_first_message_and_clear_drops_the_rest() -> None:
    async def main() -> tuple[list[int], int, int]:
        q = SourceBatches("tx", limit=100)
        waiting = asyncio.ensure_future(q.take(2, within_s=0))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await q.put([7, 8])
        taken = await asyncio.wait_for(waiting, 1)
        await q.put([9, 10, 11])
        return taken, q.clear(), len(q)

    assert asyncio.run(main()) == ([7, 8], 3, 0)


def test_a_clear_during_the_window_leaves_the_take_waiting_for_new_messages() -> None:
    """A rebalance drops the waiting messages while the agent waits for its window to fill."""

    async def main() -> list[int]:
        q = SourceBatches("tx", limit=100)
        await q.put([1])
        waiting = asyncio.ensure_future(q.take(5, within_s=0.2))
        await asyncio.sleep(0.01)
        q.clear()
        await asyncio.sleep(0.3)  # past the dropped message's window: nothing to return yet
        assert not waiting.done()
        await q.put([2])
        return await asyncio.wait_for(waiting, 2)

    assert asyncio.run(main()) == [2]
