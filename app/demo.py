"""``fraudstream demo``: the whole system, locally, with live simulated traffic.

What runs today (later issues add scoring, UI and trainer): simulate a month of history ->
validate it with Great Expectations -> build the merchant features into Feast -> start the stream
worker -> stream live transactions and chargebacks into Kafka with a one-line live status
(txn/s sent, features computed, dead letters), until --duration or Ctrl-C; then stop the worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.errors import FraudstreamError
from app.settings import Settings
from app.simulator.jobs import produce_transactions, simulate_history
from app.simulator.model import SimConfig
from app.simulator.producer import ProduceSummary
from app.worker.process import running_worker
from features.store import CARD_VIEW


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
    from features.jobs import build_merchant_features  # noqa: PLC0415 - Feast import is slow

    workdir = settings.data_dir / "demo"
    history = workdir / "history"
    start = (datetime.now(UTC) - timedelta(days=history_days)).date()
    config = SimConfig(customers=customers, merchants=2 * customers, days=history_days, start=start, seed=42)
    echo(f"demo: 1/5 simulating {history_days} days of history for {customers} cards -> {history}")
    echo(simulate_history(config, history, show_progress=False))

    report = settings.reports_dir / "demo" / "validation"
    echo(f"demo: 2/5 validating it with Great Expectations -> {report}")
    result = validate_history(history, report)
    echo(result.one_line())
    if not result.success:
        raise FraudstreamError(f"simulated history failed validation; see {report}")

    echo("demo: 3/5 building merchant features and materialising them to the Feast online store")
    echo(build_merchant_features(settings, history))

    log = workdir / "worker.log"
    echo(f"demo: 4/5 starting the stream worker (log: {log})")
    with running_worker(log):
        until = f"for {duration_s:.0f}s" if duration_s else "until Ctrl-C"
        echo(
            f"demo: 5/5 streaming live transactions at {rate:.0f} txn/s "
            f"to {settings.topic_transactions} {until}"
        )
        status = StatusLine(settings.feature_log_dir / CARD_VIEW, log)
        summary = produce_transactions(
            settings, source=None, live=True, rate=rate, duration_s=duration_s, customers=customers, seed=42,
            on_status=status,
        )  # fmt: skip
        sys.stderr.write("\n")
    echo(summary.one_line(settings.topic_transactions, settings.topic_feedback))
    echo(f"demo: worker stopped; card features logged under {settings.feature_log_dir / CARD_VIEW}")
    return summary


class StatusLine:
    """The live one-line status: what was sent, what the worker computed, what it rejected."""

    def __init__(self, feature_log: Path, worker_log: Path) -> None:
        self.feature_log, self.worker_log = feature_log, worker_log
        self.baseline = self.features_logged()  # the log keeps earlier runs' rows

    def features_logged(self) -> int:
        import pyarrow.dataset as ds  # noqa: PLC0415

        if not self.feature_log.exists():
            return 0
        return int(ds.dataset(self.feature_log, format="parquet").count_rows())

    def dead_letters(self) -> int:
        return self.worker_log.read_bytes().count(b"dead letter:")

    def __call__(self, summary: ProduceSummary, elapsed: float) -> None:
        rate = summary.transactions / elapsed if elapsed else 0.0
        sys.stderr.write(
            f"\rdemo: {elapsed:5.0f}s {rate:6,.0f} txn/s {summary.transactions:8,} sent "
            f"{summary.frauds:5,} fraudulent {summary.chargebacks_on_time:5,} chargebacks | worker: "
            f"{self.features_logged() - self.baseline:8,} featurised {self.dead_letters():4,} dead letters"
        )
        sys.stderr.flush()
