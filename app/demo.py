"""``fraudstream demo``: the whole system, locally, with live simulated traffic.

simulate three months of history -> validate it (Great Expectations) -> build merchant features
into Feast -> train the first champion if the registry has none -> seed the card states from the
history (``app/seed.py``: the worker starts knowing every card's past, as the model was trained)
-> start the stream worker, the analyst UI (FRAUDSTREAM_UI_PORT) and the scheduled trainer -> stream
live transactions and chargebacks with a one-line live status (txn/s sent, the simulated clock,
decisions, open alerts, model version) until --duration or Ctrl-C; then stop them and list the
trainer's runs.

The trainer is compose's (``train --schedule``): when FRAUDSTREAM_RETRAIN_FRAUD_COUNT confirmed
frauds have come back the worker requests a retrain, and the trainer exports the audit's settled
days with their labels into the history, refreshes the merchant features and trains; a better
candidate becomes the champion, and the worker switches to it between batches. Between runs it builds
the merchant features for each new simulated day (``on_the_demo_clock``).

Live traffic goes on from where the history ends (or from the day after the latest transaction
scored, when the demo runs again) with its simulated event times, sent at --rate: the simulated
clock runs fast (1,000 cards at 200 txn/s: a day every ~10 s) so that each card keeps its
history's pace and its features look like those the champion learned from.

Three months, not one: the champion learns from what comes after the first 30-day windows fill.
On one month (1,000 cards) its test holdout gave ROC AUC 0.65 and recall 0.16 at 1 % FPR; on two,
0.86 and 0.63; on three, 0.91 and 0.77 (session 28). Training takes ~50 s instead of ~11.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from app.errors import FraudstreamError
from app.seed import seed_card_states
from app.settings import Settings
from app.simulator.jobs import produce_transactions, simulate_history
from app.simulator.model import SimConfig
from app.simulator.producer import ProduceSummary
from app.worker.process import running_trainer, running_ui, running_worker
from training.feature_refresh import REFRESHED

STEPS = 6
DEMO_EXPLORE_RATE = "0.05"


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None,
    rate: float,
    customers: int,
    history_days: int = 90,
    echo: Callable[[str], None] = print,
) -> ProduceSummary:
    from expectations.validate import validate_history  # noqa: PLC0415 - GX import is slow
    from features.jobs import build_merchant_features  # noqa: PLC0415 - Feast import is slow
    from training.jobs import train_job  # noqa: PLC0415 - xgboost/Feast imports are slow
    from training.registry import Registry  # noqa: PLC0415

    workdir = settings.data_dir / "demo"
    history = workdir / "history"
    start = (datetime.now(UTC) - timedelta(days=history_days)).date()
    config = SimConfig(customers=customers, merchants=2 * customers, days=history_days, start=start, seed=42)
    echo(f"demo: 1/{STEPS} simulating {history_days} days of history for {customers} cards -> {history}")
    # a new world each run: an earlier run's days (another start) and exported live days would linger
    shutil.rmtree(history, ignore_errors=True)
    echo(simulate_history(config, history, show_progress=False))

    report = settings.reports_dir / "demo" / "validation"
    echo(f"demo: 2/{STEPS} validating it with Great Expectations -> {report}")
    result = validate_history(history, report)
    echo(result.one_line())
    if not result.success:
        raise FraudstreamError(f"simulated history failed validation; see {report}")

    echo(f"demo: 3/{STEPS} building merchant features and materialising them to the Feast online store")
    echo(build_merchant_features(settings, history))

    registry = Registry(settings.pg_conninfo(reveal=True))
    registry.migrate()
    champion = registry.champion()
    if champion is None:
        echo(f"demo: 4/{STEPS} training the first champion model (no champion in the registry yet)")
        echo(train_job(settings, history, report=settings.reports_dir / "demo" / "training"))
    else:
        echo(f"demo: 4/{STEPS} champion {champion.version} found in the registry; not retraining")

    login = demo_login(settings)
    log = workdir / "worker.log"
    echo(
        f"demo: 5/{STEPS} seeding the card states from the history; starting the stream worker, the UI and"
        " the trainer"
    )
    echo(seed_card_states(settings, history))
    trainer_log = workdir / "trainer.log"
    # the demo measures its declines (README, "Measuring the declines"); production's default is 0
    explore = os.environ.get("FRAUDSTREAM_EXPLORE_RATE", DEMO_EXPLORE_RATE)
    daily = on_the_demo_clock(customers, rate)
    with (
        running_worker(log, {"FRAUDSTREAM_EXPLORE_RATE": explore, **daily["worker"]}),
        running_ui(workdir / "ui.log", settings.ui_port) as url,
        running_trainer(trainer_log, history, daily["trainer"]),
    ):
        echo(f"demo: stream worker running (log: {log}); analyst UI at {url}/ ({login})")
        echo(
            f"demo: a share of {explore} of the model's would-be declines is let through to measure them"
            " (FRAUDSTREAM_EXPLORE_RATE; the UI's Models > Live performance shows what they say)"
        )
        echo(
            f"demo: trainer running (log: {trainer_log}): when {settings.retrain_fraud_count} confirmed"
            " frauds have come back it retrains on the history plus the settled live days and their labels"
        )
        until = f"for {duration_s:.0f}s" if duration_s else "until Ctrl-C"
        echo(
            f"demo: 6/{STEPS} streaming live transactions at {rate:.0f} txn/s "
            f"to {settings.topic_transactions} {until}; the simulated clock runs at the cards' pace "
            f"(~{customers * 2 / rate:.0f} s a simulated day: a card transacts ~2 times a day)"
        )
        status = StatusLine(settings.pg_conninfo(reveal=True), log)
        summary = produce_transactions(
            settings, source=None, live=True, rate=rate, duration_s=duration_s, customers=customers, seed=42,
            live_from=start + timedelta(days=history_days), on_status=status,
        )  # fmt: skip
        sys.stderr.write("\n")
    echo(summary.one_line(settings.topic_transactions, settings.topic_feedback))
    echo(f"demo: worker stopped; {status.line()}")
    for run in trainer_runs(trainer_log):
        echo(f"demo: {run}")
    return summary


def demo_login(settings: Settings) -> str:
    """A local admin for the demo's UI; its password is made here and shown once."""
    import secrets  # noqa: PLC0415

    from app.ui.store import UiStore  # noqa: PLC0415

    store = UiStore(settings.pg_conninfo(reveal=True))
    store.migrate()
    if any(u["username"] == "demo" for u in store.users()):
        return "log in as 'demo' with the password printed by the first demo run"
    password = secrets.token_urlsafe(12)
    store.add_user("demo", password, "admin")
    return f"log in as 'demo', password {password}"


def on_the_demo_clock(customers: int, rate: float) -> dict[str, dict[str, str]]:
    """Settings that keep the merchant features on the simulated clock, a day every ~2 * customers / rate
    seconds: the trainer builds them for each new day of the audit (``training.feature_refresh``) and
    the worker re-reads them at each poll of its model (5 s), where production's once a minute and every
    5 minutes are nothing against a day. Left as the last retrain built them, a 12-minute demo flagged 55
    of 827 frauds at compromised terminals, against 320 (session 37,
    ``docs/bench/merchant-refresh-s37.json``). A setting already in the environment wins."""
    day_s = customers * 2 / rate
    wanted = {
        "trainer": {"FRAUDSTREAM_FEATURES_REFRESH_S": f"{max(1.0, day_s / 5):g}"},
        "worker": {"FRAUDSTREAM_MERCHANT_CACHE_S": "0"},
    }
    return {who: {k: os.environ.get(k, v) for k, v in env.items()} for who, env in wanted.items()}


def trainer_runs(log: Path) -> list[str]:
    """The trainer's finished and failed runs, from its log (``training.schedule``'s lines), and how many
    days of the audit it built the merchant features for between them (``training.feature_refresh``)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    said = [ln[ln.index("trainer: ") :] for ln in lines if "trainer: " in ln]
    days = [r[len(REFRESHED) :].split(":")[0] for r in said if r.startswith(REFRESHED)]
    runs = [
        r
        for r in said
        if not r.startswith(REFRESHED) and (" -> " in r or r.startswith("trainer: run failed"))
    ]
    if days:
        runs.append(
            f"trainer: merchant features built for {len(days)} new day(s) of the audit, {days[0]}..{days[-1]}"
        )
    return runs


class StatusLine:
    """The live one-line status: what was sent, what the worker decided, what it rejected."""

    def __init__(self, conninfo: str, worker_log: Path) -> None:
        self.conninfo, self.worker_log = conninfo, worker_log
        self.started = datetime.now(UTC)

    def line(self) -> str:
        try:
            with psycopg.connect(self.conninfo, connect_timeout=2) as conn:
                decided, flagged, version = conn.execute(
                    "select count(*), count(*) filter (where decision <> 'approve'),"
                    " (select version from model_registry where status = 'champion')"
                    " from decisions where recorded_at >= %s",
                    (self.started,),
                ).fetchone() or (0, 0, None)
                (open_alerts,) = conn.execute(
                    "select count(*) from alerts where status = 'open'"
                ).fetchone() or (0,)
        except psycopg.Error:
            return "decisions: (PostgreSQL not answering)"
        dead = self.worker_log.read_bytes().count(b"dead letter:")
        return (
            f"{decided:,} decisions ({flagged:,} flagged), {open_alerts:,} open alerts, model {version}, "
            f"{dead:,} dead letters"
        )

    def __call__(self, summary: ProduceSummary, elapsed: float) -> None:
        rate = summary.transactions / elapsed if elapsed else 0.0
        sys.stderr.write(
            f"\rdemo: {elapsed:5.0f}s {rate:6,.0f} txn/s {summary.transactions:8,} sent "
            f"{f'{summary.clock:%Y-%m-%d %H:%M}' if summary.clock else '':16} "
            f"{summary.chargebacks_on_time:5,} chargebacks | worker: {self.line()}   "
        )
        sys.stderr.flush()
