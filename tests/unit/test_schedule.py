from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.errors import FraudstreamError
from training.schedule import next_run, run_schedule


def test_next_run_follows_the_cron_expression() -> None:
    assert next_run("0 2 * * *", datetime(2026, 11, 22, 1, 0, tzinfo=UTC)) == datetime(
        2026, 11, 22, 2, 0, tzinfo=UTC
    )
    assert next_run("0 2 * * *", datetime(2026, 11, 22, 2, 0, tzinfo=UTC)) == datetime(
        2026, 11, 23, 2, 0, tzinfo=UTC
    )
    with pytest.raises(FraudstreamError, match="invalid cron"):
        next_run("every day", datetime(2026, 1, 1, tzinfo=UTC))


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 22, 1, 59, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


class FakeRequests:
    def __init__(self, clock: Clock, script: dict[int, list[dict[str, Any]]]) -> None:
        self.clock, self.script, self.calls = clock, script, 0

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        self.calls += 1
        self.clock.t += timedelta(seconds=timeout_s)
        return self.script.pop(self.calls, [])


def test_requests_and_the_schedule_each_start_one_run() -> None:
    clock = Clock()
    # poll 2 brings two requests at once (one run); the cron time 02:00 then triggers another
    requests = FakeRequests(clock, {2: [{"reason": "drift"}, {"reason": "50 confirmed frauds"}]})
    reasons: list[str] = []
    runs = run_schedule(
        "0 2 * * *", lambda r: reasons.append(r) or "ok", requests, now=clock, max_runs=2, poll_s=5
    )
    assert runs == 2
    assert reasons[0] == "retrain request: drift; 50 confirmed frauds"
    assert reasons[1] == "schedule '0 2 * * *'"
    assert clock.t >= datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def test_a_failed_run_does_not_stop_the_schedule() -> None:
    clock = Clock()
    requests = FakeRequests(clock, {1: [{"reason": "a"}], 3: [{"reason": "b"}]})
    calls: list[str] = []

    def run(reason: str) -> str:
        calls.append(reason)
        raise FraudstreamError("history failed validation")

    assert run_schedule("0 2 * * *", run, requests, now=clock, max_runs=2, poll_s=1) == 2
    assert calls == ["retrain request: a", "retrain request: b"]
