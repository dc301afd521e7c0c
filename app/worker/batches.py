"""Source messages handed from Faust's fetch loop to the card agent in lists, not one by one.

Through Faust, every transaction went one at a time through the topic conductor (flow-control and
producer-buffer waits, an ``Event``, a channel queue), the stream's iterator (a yield to the event
loop, generation checks, sensors, a context variable) and ``take_events``' buffer, then back
through the same path to be acknowledged: ~35 µs of the worker's main thread a message, and the
10 ms batch window closed at ~170 messages at backlog because that path was what filled it
(session 12's stage timer). The fetch loop (app/worker/drain.py) now puts the source messages of
each fetched batch here as one list, and the card agent takes micro-batches of up to ``n``
messages: at once when that many wait, else once the oldest has waited ``within_s``.

What Faust's stream did per message that the worker still needs, the agent does per batch:
``track`` (what Faust's rebalance and shutdown wait for: ``_unacked_messages``) and one reference
on each message, released when its outputs are delivered (app/worker/offsets.py). Messages that
wait here are not tracked: after a rebalance they are refused (an older generation) and read again
from the committed offset, as Faust's cleared stream queues were.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any


class SourceBatches:
    """A FIFO of fetched message lists, bounded by messages: ``put`` waits while ``limit`` wait."""

    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self.limit = limit
        self._lists: deque[tuple[float, list[Any]]] = deque()  # (when put, messages)
        self._count = 0
        self._changed = asyncio.Event()
        self.taken_from = 0.0  # when the oldest of the messages last taken was put (time.monotonic())

    def __len__(self) -> int:
        return self._count

    async def put(self, messages: Sequence[Any]) -> None:
        while self._count >= self.limit:
            self._changed.clear()
            await self._changed.wait()
        self._lists.append((time.monotonic(), list(messages)))
        self._count += len(messages)
        self._changed.set()

    async def take(self, n: int, within_s: float) -> list[Any]:
        """Up to ``n`` messages in order: at once if ``n`` wait, else when the oldest has waited
        ``within_s`` (or ``n`` have come meanwhile)."""
        while True:
            if self._count >= n:
                return self._pop(n)
            if self._count:  # some wait: until the oldest has waited within_s
                left = self._lists[0][0] + within_s - time.monotonic()
                if left <= 0:
                    return self._pop(n)
            else:  # none (or dropped by ``clear`` meanwhile): until one comes
                left = None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # the window is over: looked at again above
                await asyncio.wait_for(self._changed.wait(), left)

    def _pop(self, n: int) -> list[Any]:
        out: list[Any] = []
        if self._lists:
            self.taken_from = self._lists[0][0]
        while self._lists and len(out) < n:
            put_at, messages = self._lists[0]
            room = n - len(out)
            if len(messages) <= room:
                out += messages
                self._lists.popleft()
            else:
                out += messages[:room]
                self._lists[0] = (put_at, messages[room:])
        self._count -= len(out)
        self._changed.set()  # room for a waiting put
        return out

    def clear(self) -> int:
        """Drop every waiting message (a rebalance: they are read again); how many."""
        dropped = self._count
        self._lists.clear()
        self._count = 0
        self._changed.set()
        return dropped
