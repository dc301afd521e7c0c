"""The table-recovery watch: a recovery that receives nothing is restarted, then the worker stops."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest

from app.worker.recovery_watch import RecoveryStalledError, RecoveryWatch, awaiting

CHANGELOG = "app-card-state-changelog"


class TP(NamedTuple):
    topic: str
    partition: int


P0, P1 = TP(CHANGELOG, 0), TP(CHANGELOG, 1)


@dataclass
class Recovery:
    """The parts of Faust's ``Recovery`` the watch reads (faust-streaming 0.15.3)."""

    highwaters: dict[TP, int]
    offsets: dict[TP, int]
    in_recovery: bool = True
    _recovery_started_at: float | None = 100.0
    _active_events_received_at: dict[TP, float] = field(default_factory=dict)
    signal_recovery_start: asyncio.Event = field(default_factory=asyncio.Event)

    def active_remaining(self) -> dict[TP, int]:
        return {tp: hw - self.offsets[tp] for tp, hw in self.highwaters.items()}

    def receive(self, tp: TP, offset: int, now: float) -> None:
        self.offsets[tp] = offset
        self._active_events_received_at[tp] = now

    def restart(self, now: float) -> None:  # what Faust does once signalled
        self.signal_recovery_start.clear()
        self._recovery_started_at = now
        self._active_events_received_at.clear()


@dataclass
class Crashes:
    errors: list[BaseException] = field(default_factory=list)

    async def __call__(self, exc: BaseException) -> None:
        self.errors.append(exc)


def watch_of(recovery: Recovery, crashes: Crashes) -> RecoveryWatch:
    return RecoveryWatch(recovery, lambda tps: f"described {sorted(tp.partition for tp in tps)}", crashes,
                         stall_s=30, max_restarts=2)  # fmt: skip


def test_a_recovery_that_receives_messages_is_left_alone() -> None:
    r, crashes = Recovery({P0: 500, P1: 40}, {P0: -1, P1: -1}), Crashes()
    watch = watch_of(r, crashes)
    for t in range(100, 400, 5):  # P0 gets a message every 5 s; P1 got everything at the start
        r.receive(P0, min(t, 499), float(t))
        if t == 100:
            r.receive(P1, 40, float(t))
        asyncio.run(watch.check(now=float(t)))
    assert not r.signal_recovery_start.is_set()
    assert watch.restarts == 0
    assert not crashes.errors


def test_a_partition_that_gets_nothing_restarts_the_recovery_with_a_diagnosis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r, crashes = Recovery({P0: 500, P1: 40}, {P0: -1, P1: -1}), Crashes()
    watch = watch_of(r, crashes)
    r.receive(P0, 10, 105.0)  # P0 moves, then stops; P1 never gets a message
    asyncio.run(watch.check(now=129.0))
    assert not r.signal_recovery_start.is_set(), "P1 waited 29 s: not yet"
    with caplog.at_level(logging.WARNING, "fraudstream.worker"):
        asyncio.run(watch.check(now=130.0))
    assert r.signal_recovery_start.is_set()
    said = "1 changelog partitions got no message for 30 s; restarting it (1 of 2). described [1]"
    assert said in caplog.text
    asyncio.run(watch.check(now=135.0))
    assert watch.restarts == 1, "the next look measures from the restart"


def test_restarts_without_progress_stop_the_worker_once() -> None:
    r, crashes = Recovery({P0: 500}, {P0: -1}), Crashes()
    watch = watch_of(r, crashes)
    now = 130.0
    for _ in range(2):  # two restarts, nothing received after either
        asyncio.run(watch.check(now=now))
        assert r.signal_recovery_start.is_set()
        r.restart(now + 1)
        now += 31
    asyncio.run(watch.check(now=now))
    assert [type(e) for e in crashes.errors] == [RecoveryStalledError]
    assert "table recovery stalled: 1 changelog partitions got no message for 30 s (2 restarts)" in str(
        crashes.errors[0]
    )
    asyncio.run(watch.check(now=now + 60))
    assert len(crashes.errors) == 1, "stopping once"


def test_progress_after_a_restart_resets_the_count_and_the_end_of_recovery_resets_all() -> None:
    r, crashes = Recovery({P0: 500}, {P0: -1}), Crashes()
    watch = watch_of(r, crashes)
    asyncio.run(watch.check(now=130.0))
    r.restart(131.0)
    r.receive(P0, 200, 140.0)  # the restart helped
    asyncio.run(watch.check(now=171.0))  # then it stalls again: a first restart, not a stop
    assert watch.restarts == 1
    assert not crashes.errors
    r.receive(P0, 500, 175.0)
    r.in_recovery = False
    asyncio.run(watch.check(now=180.0))
    assert (watch.restarts, watch.restarted_at) == (0, None)


def test_nothing_left_to_read_is_not_a_stall() -> None:
    """Faust lists partitions whose remaining count is negative (its offsets are one apart from the
    highwater's); only a partition that still needs messages can stall."""
    r, crashes = Recovery({P0: 10, P1: 20}, {P0: 10, P1: 21}), Crashes()
    asyncio.run(watch_of(r, crashes).check(now=500.0))
    assert not r.signal_recovery_start.is_set()


def test_awaiting_names_the_chain_of_awaits() -> None:
    async def inner(gate: asyncio.Event) -> None:
        await gate.wait()

    async def outer(gate: asyncio.Event) -> None:
        await inner(gate)

    async def main() -> str:
        gate = asyncio.Event()
        task = asyncio.ensure_future(outer(gate))
        await asyncio.sleep(0)
        chain = awaiting(task.get_coro())
        gate.set()
        await task
        return chain

    chain = asyncio.run(main())
    assert chain.startswith("outer (")
    assert " > inner (" in chain
    assert " > wait (" in chain


def test_the_watch_runs_in_a_task_of_its_own_until_stopped() -> None:
    async def main() -> tuple[bool, bool]:
        r = Recovery({P0: 500}, {P0: -1}, _recovery_started_at=time.monotonic())
        watch = RecoveryWatch(r, str, Crashes(), stall_s=0.02, max_restarts=100)
        watch.start(interval_s=0.01)
        task = watch.task
        watch.start(interval_s=0.01)  # once
        assert task is not None
        assert watch.task is task
        await asyncio.sleep(0.2)
        restarted = r.signal_recovery_start.is_set()
        watch.stop()
        await asyncio.gather(task, return_exceptions=True)
        return restarted, task.cancelled()

    assert asyncio.run(main()) == (True, True)
