"""``fraudstream demo``: the whole system, locally, with live simulated traffic.

What runs today (each later issue adds its part: worker, scoring, UI, trainer):
simulate a month of history -> validate it with Great Expectations -> stream live transactions
and chargebacks into Kafka with a one-line live status, until --duration or Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from app.errors import FraudstreamError
from app.settings import Settings
from app.simulator.jobs import produce_transactions, simulate_history
from app.simulator.model import SimConfig
from app.simulator.producer import ProduceSummary


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None,
    rate: float,
    customers: int,
    history_days: int = 30,
    echo: Callable[[str], None] = print,
) -> ProduceSummary:
    from expectations.validate import validate_history  # noqa: PLC0415 - GX import is slow

    workdir = settings.data_dir / "demo"
    history = workdir / "history"
    start = (datetime.now(UTC) - timedelta(days=history_days)).date()
    config = SimConfig(customers=customers, merchants=2 * customers, days=history_days, start=start, seed=42)
    echo(f"demo: 1/3 simulating {history_days} days of history for {customers} cards -> {history}")
    echo(simulate_history(config, history, show_progress=False))

    report = settings.reports_dir / "demo" / "validation"
    echo(f"demo: 2/3 validating it with Great Expectations -> {report}")
    result = validate_history(history, report)
    echo(result.one_line())
    if not result.success:
        raise FraudstreamError(f"simulated history failed validation; see {report}")

    until = f"for {duration_s:.0f}s" if duration_s else "until Ctrl-C"
    echo(
        f"demo: 3/3 streaming live transactions at {rate:.0f} txn/s to {settings.topic_transactions} {until}"
    )
    summary = produce_transactions(
        settings, source=None, live=True, rate=rate, duration_s=duration_s, customers=customers, seed=42,
        on_status=_status_line,
    )  # fmt: skip
    sys.stderr.write("\n")
    echo(summary.one_line(settings.topic_transactions, settings.topic_feedback))
    return summary


def _status_line(summary: ProduceSummary, elapsed: float) -> None:
    rate = summary.transactions / elapsed if elapsed else 0.0
    sys.stderr.write(
        f"\rdemo: {elapsed:6.0f}s  {rate:7,.0f} txn/s  {summary.transactions:9,} sent  "
        f"{summary.frauds:6,} fraudulent  {summary.chargebacks_on_time:6,} chargebacks"
    )
    sys.stderr.flush()
