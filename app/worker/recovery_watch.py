"""A watch on Faust's table recovery: a recovery that stops receiving changelog messages is restarted.

After a rebalance Faust rebuilds the card-state table from its changelog before any transaction is
processed (``faust.tables.recovery.Recovery``): it seeks the changelog partitions, resumes them and
waits until every one has been read up to the offset it noted at the start. Seen once in ~20
clean-clone CI runs (a slow host; the kill -9 takeover test in tests/integration/test_faults.py):
the survivor's recovery received no changelog message on any of its four partitions for 4
minutes, with messages waiting in Kafka, and processed nothing meanwhile; Faust only logged "No
event received for active tp ... since recovery start" every 5 s. Stalls of this shape are
reported against faust-streaming (issues #74, #155).

``RecoveryWatch`` (a task of its own, checking every 5 s) finds a recovery that still needs
messages from a partition yet has received none from it for ``FRAUDSTREAM_RECOVERY_STALL_S``
(30 s). It logs what Faust's consumer thought of each such partition and what the fetch loop is
waiting on, then restarts the recovery the way a new rebalance would: Faust seeks every changelog
partition again (forgetting its read offsets), resumes them and the flow, and makes sure the
fetcher runs. What was read is
kept (Faust goes on from the offsets it reached). Restarting is safe: nothing is processed until
the recovery ends. After ``MAX_RESTARTS`` restarts without progress the worker stops with a
one-line error, so that its supervisor (Docker's ``restart: unless-stopped``) starts it afresh
rather than leaving it stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.errors import FraudstreamError

log = logging.getLogger("fraudstream.worker")

STALL_S = 30.0  # a recovery that needs a partition's messages and got none this long is stalled
MAX_RESTARTS = 3  # restarts of one recovery without progress, before the worker stops


class RecoveryStalledError(FraudstreamError):
    """The table recovery received nothing for too long, restarts included."""


@dataclass
class RecoveryWatch:
    """Watches one app's ``Recovery`` (Faust's: ``in_recovery``, ``active_remaining()``,
    ``_recovery_started_at``, ``_active_events_received_at``, ``signal_recovery_start``);
    ``describe(tps)`` says what the consumer thinks of them; ``crash(exc)`` stops the worker."""

    recovery: Any
    describe: Callable[[list[Any]], str]
    crash: Callable[[BaseException], Awaitable[None]]
    stall_s: float = STALL_S
    max_restarts: int = MAX_RESTARTS
    restarted_at: float | None = None  # this watch's last restart of the recovery
    restarts: int = 0  # restarts since the recovery last received a message
    stopping: bool = False
    task: asyncio.Task[None] | None = None

    def start(self, interval_s: float = 5.0) -> None:
        """Run the watch in a task of its own (once), not an app timer: Faust starts those only
        once the first recovery is over."""
        if self.task is None:
            self.task = asyncio.ensure_future(self.run(interval_s))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def run(self, interval_s: float = 5.0) -> None:
        """Check every ``interval_s`` until stopped."""
        while not self.stopping:
            await asyncio.sleep(interval_s)
            try:
                await self.check()
            except Exception as exc:  # a diagnosis or a restart that failed: look again next time
                log.warning("worker: table recovery watch: %s: %s", type(exc).__name__, str(exc)[:200])

    async def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        r = self.recovery
        if self.stopping:
            return
        if not r.in_recovery:
            self.restarted_at, self.restarts = None, 0
            return
        received = r._active_events_received_at  # Faust clears it when a recovery (re)starts
        if self.restarted_at is not None and received and max(received.values()) > self.restarted_at:
            self.restarts = 0  # messages came in after the last restart
        stalled = self.stalled(now)
        if not stalled:
            return
        what = f"{len(stalled)} changelog partitions got no message for {self.stall_s:.0f} s"
        if self.restarts >= self.max_restarts:
            log.error("worker: table recovery: %s after %d restarts; stopping", what, self.restarts)
            self.stopping = True
            error = RecoveryStalledError(f"table recovery stalled: {what} ({self.restarts} restarts)")
            await self.crash(error)
            return
        self.restarts += 1
        self.restarted_at = now
        log.warning("worker: table recovery: %s; restarting it (%d of %d). %s",
                    what, self.restarts, self.max_restarts, self.describe(stalled))  # fmt: skip
        r.signal_recovery_start.set()  # Faust's recovery loop starts over, as after a rebalance

    def stalled(self, now: float) -> list[Any]:
        """The partitions the recovery still needs whose last message (or the recovery's start, or
        the last restart) is ``stall_s`` old."""
        r = self.recovery
        received = r._active_events_received_at
        since = now if r._recovery_started_at is None else r._recovery_started_at
        if self.restarted_at is not None:
            since = max(since, self.restarted_at)
        return [
            tp for tp, remaining in r.active_remaining().items()
            if remaining > 0 and now - max(received.get(tp, since), since) >= self.stall_s
        ]  # fmt: skip


def describe_consumer(app: Any, tps: list[Any]) -> str:
    """One line on what Faust's consumer thinks of ``tps`` and what its fetch loop is waiting on.
    Private attributes of faust-streaming 0.15.3 and aiokafka 0.14: a diagnosis, so any failure to
    read one is reported, never raised."""
    c, r = app.consumer, app.tables.recovery
    parts = []
    for tp in sorted(tps):
        try:
            assignment = c._thread._ensure_consumer()._fetcher._subscriptions.subscription.assignment
            state = assignment.state_value(tp)
            position = None if state is None else state.position
        except Exception as exc:  # a diagnosis: never raise
            position = f"? ({type(exc).__name__})"
        parts.append(
            f"{tp.topic}[{tp.partition}]: at {r.active_offsets.get(tp)} of {r.active_highwaters.get(tp)}, "
            f"read offset {c._read_offset.get(tp)}, fetch position {position}, "
            f"paused {tp in c._paused_partitions}, fetched {tp in (c._active_partitions or ())}"
        )
    try:
        queued = app.tables.changelog_queue.qsize()
    except Exception as exc:  # a diagnosis: never raise
        queued = f"? ({type(exc).__name__})"
    return (
        f"{'; '.join(parts)}. Consumer flow active {c.flow_active}, app flow active "
        f"{app.flow_control.is_active()}, changelog queue {queued}, fetch loop: {fetch_loop()}"
    )


def fetch_loop() -> str:
    """Where Faust's fetch loop (``drain_messages``, app/worker/drain.py) is waiting: its task's
    chain of awaits, or that no task runs it."""
    for task in asyncio.all_tasks():
        chain = awaiting(task.get_coro())
        if "drain_messages" in chain:
            return chain
    return "no task runs it"


def awaiting(coro: Any) -> str:
    """``f (line) > g (line) > ...`` down the coroutine's chain of awaits."""
    frames: list[str] = []
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            frames.append(type(coro).__name__)
            break
        frames.append(f"{frame.f_code.co_name} ({frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames)
