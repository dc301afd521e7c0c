"""The training schedule: a cron expression plus retrain requests, one run at a time.

``run_schedule`` waits for whichever comes first, the next cron time or a retrain request (from
the ``retrain-requests`` topic: drift or confirmed-fraud triggers), runs one training job, then
drains the requests that arrived meanwhile (they are satisfied by the run that just finished).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from croniter import croniter

from app.errors import FraudstreamError

log = logging.getLogger("fraudstream.trainer")


class Requests(Protocol):
    def poll(self, timeout_s: float) -> list[dict[str, Any]]: ...


def next_run(cron: str, after: datetime) -> datetime:
    if not croniter.is_valid(cron):
        raise FraudstreamError(f"invalid cron expression {cron!r}")
    nxt: datetime = croniter(cron, after).get_next(datetime)
    return nxt


def run_schedule(
    cron: str,
    run: Callable[[str], str],
    requests: Requests,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_runs: int | None = None,
    poll_s: float = 5.0,
    drain_s: float = 1.0,
    on_idle: Callable[[], None] | None = None,
) -> int:
    """Run ``run(reason)`` at each cron time and on each retrain request; return the number of runs.

    ``on_idle`` is called between polls (the trainer runs its hourly drift check there).
    """
    runs = 0
    due = next_run(cron, now())
    log.info("trainer: next scheduled run at %s", due.isoformat())
    while max_runs is None or runs < max_runs:
        wait = max(0.0, min(poll_s, (due - now()).total_seconds()))
        received = requests.poll(wait)
        if on_idle is not None and not received:
            on_idle()
        if received:
            reason = "retrain request: " + "; ".join(str(r.get("reason", "unspecified")) for r in received)
        elif now() >= due:
            reason = f"schedule {cron!r}"
        else:
            continue
        started = time.monotonic()
        try:
            log.info("trainer: %s -> %s (%.0fs)", reason, run(reason), time.monotonic() - started)
        except FraudstreamError as exc:  # a failed run (bad data) must not stop the schedule
            log.error("trainer: run failed: %s", exc)
        runs += 1
        requests.poll(drain_s)  # requests that arrived during the run were served by it
        due = next_run(cron, now())
    return runs


class KafkaRequests:
    """Retrain requests from the ``retrain-requests`` topic (JSON objects with a ``reason``).

    A trainer's first start reads the topic from the beginning (nothing filed before it joined is
    lost; the first run drains whatever was waiting); later starts continue from its commits.
    """

    def __init__(self, bootstrap: list[str], topic: str, group: str, **security: Any) -> None:
        from kafka import KafkaConsumer  # noqa: PLC0415

        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=True, **security,
        )  # fmt: skip

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        import orjson  # noqa: PLC0415

        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        out = []
        for records in batches.values():
            for record in records:
                try:
                    out.append(orjson.loads(record.value))
                except orjson.JSONDecodeError:
                    log.warning("trainer: ignoring an unreadable retrain request at offset %d", record.offset)
        return out
