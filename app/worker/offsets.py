"""Source-topic offsets owned by the pipeline: what it may process next and what may be committed.

Card states remember the stream position of the last event they folded, and a replayed message at
or below that position is recognised as processed. That is sound only if the pipeline sees each
partition without gaps: processing offset 120 while 117 was never handed to the agent would make
117 a "duplicate" forever. Faust does not promise that. Around a rebalance its fetcher drops the
rest of a fetched batch (flow stopped, new generation), its stream skips and *acknowledges*
messages of an older generation, its commit counts offset ranges it did not see as acknowledged
(``Consumer._gap``), and its head-of-queue check lets one unacknowledged offset through
(``min(acked) - committed > 1``) or is skipped when the committed offset is 0. The fault tests lost
transactions through these paths (tests/integration/test_faults.py).

So the worker keeps its own books for the ``transactions`` topic, per partition:

- ``next``: the next offset the pipeline must receive. It starts at the committed offset (the one
  Faust seeks to after each assignment); a message above it is refused (neither processed nor
  acknowledged) and the consumer is sought back to ``next``. A message below it is a re-read of
  something this process already handled (or committed) and goes through: the card state knows it.
- ``done``: every offset below it is finished (decided, and every output delivered to Kafka); it is
  what Faust commits, replacing its own offset arithmetic for this topic.

Revoked partitions are forgotten; after the next assignment they start again from the committed
offset. A gap that is real (offsets that are not in the log: compaction, transaction markers,
retention) is recognised by reading the partition at ``next`` with a plain consumer, and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mode.utils.futures import notify

from app.errors import first_line

_Answer = TypeVar("_Answer")

log = logging.getLogger("fraudstream.worker")

RESEEK_S = 5.0  # a gap still open after this long is sought back again (a later seek may have won)
STALL_S = 10.0  # an idle worker's partition with messages in Kafka, none admitted this long: sought again
SEEK_TIMEOUT_S = 10.0  # a seek the consumer thread has not run by then fails (the books look again later)


def seek_on_consumer_thread(consumer: Any) -> None:
    """Make Faust's ``Consumer.seek`` run aiokafka's seek on the consumer's own thread.

    Faust (``ThreadDelegateConsumer._seek``) calls aiokafka's ``seek`` from the caller's thread, while
    aiokafka's fetcher runs on the consumer thread's loop. A seek that landed while
    ``fetched_records`` walked its records deleted one under it (``KeyError``) and crashed the
    fetcher, which stopped the worker (clean-clone CI, session 18: a stalled partition sought back
    right after a broker restart). ``call_thread`` runs the seek on that loop, between two steps, as
    Faust's own rebalance seeks (``seek_wait``) and commits already are; ``Consumer.seek`` still
    records the read offset afterwards.
    """

    async def _seek(tp: Any, offset: int) -> None:
        thread = consumer._thread
        await asyncio.wait_for(thread.call_thread(_seek_now, thread, tp, offset), SEEK_TIMEOUT_S)

    consumer._seek = _seek


async def _seek_now(thread: Any, tp: Any, offset: int) -> None:
    thread.seek(tp, offset)


@dataclass
class SourceOffsets:
    """The books for one source topic (see the module docstring).

    ``consumer`` is Faust's consumer (``ack``, ``_new_offset``, ``seek``, ``_committed_offset``,
    ``_acked``, ``_unacked_messages``); ``first_offset(tp, offset)`` says which offset a read of the
    log at ``offset`` starts with (None when nothing is there yet); ``current(message)`` says whether
    a message belongs to the consumer's current generation while it is flowing; ``committed(tps)``
    asks Kafka for the group's committed offsets of several partitions at once (absent: nothing
    committed), for those Faust has not recorded yet.
    """

    consumer: Any
    topic: str
    first_offset: Callable[[Any, int], Awaitable[int | None]]
    current: Callable[[Any], bool]
    committed: Callable[[list[Any]], Awaitable[Mapping[Any, int]]]  # the group's commits, asked of Kafka
    next: dict[Any, int] = field(default_factory=dict)
    done: dict[Any, int] = field(default_factory=dict)
    finished: dict[Any, set[int]] = field(default_factory=dict)
    holes: dict[Any, dict[int, int]] = field(default_factory=dict)  # tp -> {start: stop} not in the log
    sought: dict[Any, tuple[int, float]] = field(default_factory=dict)  # tp -> (offset, when)
    moved: dict[Any, float] = field(default_factory=dict)  # tp -> when it last admitted a message
    silent: dict[Any, float] = field(default_factory=dict)  # assigned, no message yet: tp -> since when
    # assigned, not started: tp -> the lookup of its committed offset, begun at the assignment
    asked: dict[Any, asyncio.Future[Mapping[Any, int] | None]] = field(default_factory=dict)
    waiting: Callable[[], int] = lambda: 0  # fetched messages waiting for the agent (not tracked yet)
    refused: int = 0  # messages refused (after a gap, or fetched before a rebalance)
    given_up: bool = False  # the worker is stopping without finishing what it holds

    def give_up(self) -> None:
        """The worker stops without finishing (a batch failed): every source message Faust still
        tracks is let go of unfinished (acknowledged, never committed: replayed after the restart),
        now and when the shutdown would wait for them. Faust's shutdown otherwise waits, until
        SIGTERM, for messages no agent will ever see: those in its stream queues and take buffer
        once the flow is suspended, and those the pipeline holds."""
        self.given_up = True
        self._let_go()

    def _let_go(self) -> None:
        unacked = self.consumer._unacked_messages
        held = [m for m in unacked if m.topic == self.topic]
        for message in held:
            message.acked = True
            unacked.discard(message)
        notify(self.consumer._waiting_for_ack)
        if held:
            log.warning("worker: stopping; %d messages let go of unfinished (replayed on restart)", len(held))

    def install(self) -> None:
        """Take over acknowledgement and the commit offset of the source topic from Faust."""
        faust_ack, faust_new_offset = self.consumer.ack, self.consumer._new_offset

        def ack(message: Any) -> bool:
            if message.topic != self.topic:
                return bool(faust_ack(message))
            message.acked = True  # its last reference is gone; ``release`` did the bookkeeping
            self.consumer._unacked_messages.discard(message)
            notify(self.consumer._waiting_for_ack)  # a rebalance waiting for in-flight messages
            return False

        def new_offset(tp: Any) -> int | None:
            if tp.topic != self.topic:
                return faust_new_offset(tp)  # type: ignore[no-any-return]
            return self.done.get(tp)

        faust_wait_empty = self.consumer.wait_empty

        async def wait_empty() -> None:  # the shutdown's wait, once the fetcher has stopped
            if not self.given_up:
                await faust_wait_empty()
                return
            # Giving up: let go of what is left, and skip Faust's wait and its final commit. When the
            # app crashes, its consumer thread stops beside this shutdown, and that commit, handed to
            # the stopped thread, never returned (the worker hung until SIGTERM, 1 run in 3). What it
            # would commit is only a later finished prefix: the restart replays it instead.
            self._let_go()

        self.consumer.ack, self.consumer._new_offset = ack, new_offset
        self.consumer.wait_empty = wait_empty

    def forget(self, tps: Any) -> None:
        """Partitions revoked: their books restart from the committed offset when assigned again."""
        for tp in tps:
            for books in (
                self.next, self.done, self.finished, self.holes, self.sought, self.moved, self.silent,
                self.asked,
            ):  # fmt: skip
                books.pop(tp, None)

    def assigned(self, tps: Any, now: float | None = None) -> None:
        """Partitions assigned: those of the source topic not started yet are watched by ``seek_stalled``
        until their first message arrives (a partition that never delivers one has no books yet), and
        their committed offsets are asked of Kafka now, in one lookup, where they start (the assignment
        is when they are final: whoever had the partitions committed before giving them up). Asked at
        the first batch instead, the lookup held a fresh group's first transactions 74-128 ms."""
        now = time.monotonic() if now is None else now
        new = [tp for tp in tps if tp.topic == self.topic and tp not in self.next]
        for tp in new:
            self.silent.setdefault(tp, now)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test): asked when the partitions start
            return
        if new:
            lookup = asyncio.ensure_future(self._ask(self.committed(new), f"the committed offsets of {new}"))
            self.asked.update(dict.fromkeys(new, lookup))

    async def admit(self, messages: Sequence[Any]) -> list[bool]:
        """Which of ``messages`` (in arrival order) the pipeline may process now. The partitions the
        batch starts are looked up together: one lookup each, in a fresh group's first batch, held
        its first transactions ~120 ms (a Kafka admin client per partition, session 20)."""
        new = [tp for tp in dict.fromkeys(m.tp for m in messages) if tp not in self.next]
        starts = await self._committed(new) if new else {}
        return [await self._admit(m, starts) for m in messages]

    async def _admit(self, message: Any, starts: Mapping[Any, int | None]) -> bool:
        tp, offset = message.tp, message.offset
        if tp not in self.next:
            if not self.current(message):  # fetched before the rebalance: re-read from the commit
                self.refused += 1
                return False
            committed = starts.get(tp)
            log.info("worker: %s starts at the committed offset %s", tp, committed)
            self._start(tp, committed or 0)
        expected = self.next[tp]
        if offset > expected:
            await self._gap(tp, expected, offset)
            expected = self.next[tp]
        if offset > expected:
            self.refused += 1
            return False
        self.sought.pop(tp, None)
        self.moved[tp] = time.monotonic()
        if offset == expected:
            self.next[tp] = offset + 1
        return True

    @staticmethod
    async def _ask(question: Awaitable[_Answer], what: str) -> _Answer | None:
        """Kafka's answer, or None (the safe default: read again from further back) if it fails."""
        try:
            return await question
        except Exception as exc:  # a failed lookup must not stop the agent
            log.warning("worker: could not read %s from Kafka (%s); reading again from before it",
                        what, f"{type(exc).__name__}: {exc}"[:200])  # fmt: skip
            return None

    def _start(self, tp: Any, offset: int) -> None:
        self.silent.pop(tp, None)
        self.next[tp] = self.done[tp] = offset
        self.moved[tp] = time.monotonic()
        self.finished[tp], self.holes[tp] = set(), {}
        self.consumer._acked.setdefault(tp, [])  # Faust commits only partitions listed in _acked

    async def _gap(self, tp: Any, expected: int, offset: int) -> None:
        at = self.sought.get(tp)
        now = time.monotonic()
        if at is not None and at[0] == expected and now - at[1] < RESEEK_S:
            return  # sought back already; the messages in between are on their way
        first = await self._ask(self.first_offset(tp, expected), f"offset {expected} of {tp}")
        if first is not None and first > expected:  # not in the log: nothing to wait for
            log.warning("worker: offsets %d-%d of %s are not in the log; going on from %d",
                        expected, first - 1, tp, first)  # fmt: skip
            self._skip(tp, expected, first)
            if offset <= first:
                return
            expected = first
        log.warning("worker: %s skipped offsets %d-%d (got %d); seeking back to %d",
                    tp, expected, offset - 1, offset, expected)  # fmt: skip
        self.sought[tp] = (expected, now)
        await self.consumer.seek(tp, expected)

    async def reseek_stalled(self, now: float | None = None) -> None:
        """Seek again every partition whose gap is still open ``RESEEK_S`` after the last seek.

        Called by a timer, not only when a message arrives: messages Faust had already fetched
        beyond the gap, passing through its drain loop after our seek, move its read offset past
        the gap again, and Faust then drops the re-fetched messages as already read. Once the input
        is quiet no new message arrives to trigger a re-seek, and the partition would wait forever
        (seen in a kill -9 test: a restart, a gap, the traffic already over).
        """
        now = time.monotonic() if now is None else now
        for tp, (offset, at) in list(self.sought.items()):
            if now - at >= RESEEK_S and self.next.get(tp) == offset:
                log.warning("worker: %s still waits for offset %d; seeking back again", tp, offset)
                self.sought[tp] = (offset, now)
                await self.consumer.seek(tp, offset)

    async def seek_stalled(
        self, end_offsets: Callable[[list[Any]], Awaitable[Mapping[Any, int]]], now: float | None = None
    ) -> None:
        """Seek back to ``next`` every partition that has messages in Kafka beyond it, yet has
        admitted none for ``STALL_S`` while the worker holds no message at all and none waits for the
        agent (idle, flowing).

        A safety net with a diagnosis. Every path known to stop a partition (a gap, messages
        fetched before a seek) is handled where it happens; this catches the others. Seen with
        100 ms fetches: a restarted worker, after its first batches, received nothing more from
        two of its partitions (Faust's read offset at the committed offset, partitions not paused,
        flow active), 1 restart in 4; a seek back resumed them. The warning says what Faust's
        consumer thought of the partition when it was found.

        A partition assigned that has delivered no message at all is watched the same way (from its
        assignment, once Faust no longer pauses it for recovery), and sought back to the committed
        offset: seen in clean-clone CI, a worker restarted after its scoring process was killed got
        no message from one of its four partitions for 5 minutes.
        """
        now = time.monotonic() if now is None else now
        c = self.consumer
        for tp in self.silent:
            if tp in c._paused_partitions:  # still recovering: the wait starts once it is resumed
                self.silent[tp] = now
        quiet = [
            tp for tp, at in self.moved.items()
            if now - at >= STALL_S and tp not in self.sought
        ]  # fmt: skip
        silent = [tp for tp, at in self.silent.items() if now - at >= STALL_S]
        if not quiet and not silent:
            return
        if not c.flow_active or self.waiting() or any(m.topic == self.topic for m in c._unacked_messages):
            return  # a rebalance, or the worker is busy (with this partition's messages or others')
        for tp in quiet:
            self.moved[tp] = now  # looked at: again in STALL_S at the earliest
        for tp in silent:
            self.silent[tp] = now
        try:
            ends = await end_offsets([*quiet, *silent])
        except Exception as exc:  # the next look asks again
            log.warning("worker: could not read the end offsets of %s (%s)", quiet + silent, first_line(exc))
            return
        committed = await self._committed(silent)
        starts = {tp: at or 0 for tp, at in committed.items()}  # where _admit starts them
        for tp in [*quiet, *silent]:
            end, at = ends.get(tp), self.next.get(tp, starts.get(tp))
            if end is None or at is None or end <= at:
                continue
            log.warning(
                "worker: %s admitted nothing for %.0f s with %d messages waiting in Kafka while the worker "
                "was idle (read offset %s, paused %s); seeking back to %d",
                tp, STALL_S, end - at, c._read_offset.get(tp), tp in c._paused_partitions, at,
            )  # fmt: skip
            try:
                await c.seek(tp, at)
            except Exception as exc:  # e.g. revoked meanwhile: the next assignment starts afresh
                log.warning("worker: could not seek %s (%s)", tp, first_line(exc))

    async def _committed(self, tps: list[Any]) -> dict[Any, int | None]:
        """The group's committed offset of each of ``tps``: Faust's record, else Kafka's answer (Faust's
        seek may come after the first fetch), one lookup for all; None when there is none, or the
        lookup failed."""
        out: dict[Any, int | None] = {tp: self.consumer._committed_offset.get(tp) for tp in tps}
        unknown = [tp for tp, at in out.items() if at is None]
        answers: dict[Any, Mapping[Any, int] | None] = {}
        for tp in unknown:
            if (lookup := self.asked.pop(tp, None)) is not None:
                answers[tp] = await lookup  # asked when assigned; None: that lookup failed
        again = [tp for tp in unknown if answers.get(tp) is None]
        if again:
            answer = await self._ask(self.committed(again), f"the committed offsets of {again}")
            answers.update(dict.fromkeys(again, answer))
        out.update({tp: (answers[tp] or {}).get(tp) for tp in unknown})
        return out

    def _skip(self, tp: Any, start: int, stop: int) -> None:
        self.next[tp] = stop
        self.holes[tp][start] = stop
        self._advance(tp)

    def finish(self, tp: Any, offset: int) -> None:
        """``offset`` is decided and its outputs delivered; ``done`` moves over every finished prefix."""
        done = self.done.get(tp)
        if done is None:
            return  # revoked meanwhile
        if offset >= done:  # below it: finished before (a re-read)
            self.finished[tp].add(offset)
            self._advance(tp)

    def _advance(self, tp: Any) -> None:
        """Move ``done`` over the finished offsets and the holes that follow it."""
        done, pending, holes = self.done[tp], self.finished[tp], self.holes[tp]
        while True:
            if done in pending:
                pending.discard(done)
                done += 1
            elif done in holes:
                done = holes.pop(done)
            else:
                break
        self.done[tp] = done

    async def lag(
        self, highwater: Callable[[Any], int | None],
        end_offsets: Callable[[list[Any]], Awaitable[Mapping[Any, int]]],
    ) -> dict[int, int]:  # fmt: skip
        """Partition -> messages in Kafka this worker has not finished: the partition's end (the offset
        the next message will get) minus ``done``. For the partitions it has started, the end is the
        fetcher's ``highwater(tp)`` (no request; none before a fetch answered); a partition assigned but
        not started yet (recovering its card states, when a backlog matters most) counts from the
        group's committed offset, once Faust has it, to an end asked of Kafka (``end_offsets``, one
        request for all of them). Run on the event loop (``done`` changes there)."""
        out = {}
        committed = self.consumer._committed_offset
        waiting = {tp: committed[tp] for tp in self.silent if committed.get(tp) is not None}
        if waiting:
            try:
                ends = await end_offsets(list(waiting))
            except Exception:  # no figure for them this time; the next look asks again
                ends = {}
            for tp, at in waiting.items():
                if (end := ends.get(tp)) is not None:
                    out[tp.partition] = max(0, end - at)
        for tp, done in list(self.done.items()):
            try:
                end = highwater(tp)
            except Exception:  # noqa: S112 - revoked meanwhile, or no fetch yet: no figure for now
                continue
            if end is not None:
                out[tp.partition] = max(0, end - done)
        return out

    def track(self, messages: Sequence[Any]) -> None:
        """The pipeline holds these until ``release``: one reference each, and tracked as Faust's
        stream tracked them (its rebalance and shutdown wait until they are acknowledged)."""
        unacked = self.consumer._unacked_messages
        for message in messages:
            message.incref()
            message.tracked = True
            unacked.add(message)

    def release(self, messages: Sequence[Any], finished: bool = True) -> None:
        """Drop the pipeline's reference on these messages; ``finished``: the pipeline finished them
        (their offsets may be committed), else it gave them up (stopping: replayed after the restart)."""
        for message in messages:
            if finished:
                self.finish(message.tp, message.offset)
            message.ack(self.consumer)
