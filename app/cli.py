"""The ``fraudstream`` command line: a thin layer over typed job functions.

Every sub-command exits 0 on success and non-zero with a one-line cause on failure.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from app.errors import FraudstreamError, first_line
from app.schema import SCENARIOS
from app.settings import LIVE_REPORT_DAYS

if TYPE_CHECKING:
    from app.simulator.model import SimConfig
    from app.ui.store import UiStore

cli = typer.Typer(
    name="fraudstream",
    help="Real-time card-fraud detection: Kafka + Faust features, Feast, XGBoost scores with SHAP reasons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@cli.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Folder for date=YYYY-MM-DD/part-0.parquet partitions."),
    customers: int = typer.Option(5_000, min=1, help="Cards (Handbook customers)."),
    merchants: int = typer.Option(10_000, min=1, help="Home merchants (Handbook terminals)."),
    days: int = typer.Option(183, min=1, help="Days of history."),
    start: datetime = typer.Option("2018-04-01", formats=["%Y-%m-%d"], help="First day (UTC)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same history."),
    fraud_scale: float = typer.Option(1.0, min=0.0, help="Multiplies every fraud scenario's intensity."),
    disable: list[str] = typer.Option(
        [], "--disable", help=f"Turn a scenario off (repeatable): {', '.join(SCENARIOS)}."
    ),
) -> None:
    """Simulate card-transaction history as date-partitioned Parquet."""
    from app.simulator.jobs import simulate_history

    config = _sim_config(customers, merchants, days, start, seed, fraud_scale, disable)
    summary = simulate_history(config, out)
    typer.echo(summary)


@cli.command()
def produce(
    source: Path | None = typer.Option(None, "--from", help="History folder to replay (date partitions)."),
    live: bool = typer.Option(
        False, "--live", help="Simulate live traffic instead: the world goes on from today, at --rate."
    ),
    rate: float = typer.Option(
        1_000.0, min=0.0, help="Target transactions per second (0 = as fast as possible)."
    ),
    limit: int | None = typer.Option(None, min=1, help="Stop after this many transactions."),
    duration: float | None = typer.Option(None, min=0.0, help="Stop after this many seconds."),
    customers: int = typer.Option(1_000, min=1, help="Live mode: simulated cards."),
    seed: int = typer.Option(0, help="Live mode: random seed."),
    labels: bool = typer.Option(True, help="Also send chargebacks to the feedback topic when due."),
) -> None:
    """Replay history (or live simulated traffic) into the transactions topic, keyed by card_id."""
    from app.settings import get_settings
    from app.simulator.jobs import produce_transactions

    settings = get_settings()
    summary = produce_transactions(
        settings, source=source, rate=rate, limit=limit, live=live, duration_s=duration,
        customers=customers, seed=seed, labels=labels,
    )  # fmt: skip
    typer.echo(summary.one_line(settings.topic_transactions, settings.topic_feedback))
    if summary.failed:
        raise FraudstreamError(f"{summary.failed} records could not be delivered to Kafka")


@cli.command()
def worker(
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="Faust log level."),
) -> None:
    """Run the Faust stream worker: card features, champion scores with SHAP reasons, decisions."""
    from app.kafka_admin import ensure_topics
    from app.scoring import pin_threads
    from app.settings import get_settings

    settings = get_settings()
    pin_threads(settings.worker_threads)

    from app.worker.faust_app import create_app, run_worker

    ensure_topics(settings)
    import psycopg

    try:
        app = create_app(settings)  # opens the sinks before joining the consumer group
    except psycopg.Error as exc:
        raise FraudstreamError(f"the worker cannot open its PostgreSQL sinks: {first_line(exc)}") from exc
    run_worker(app, loglevel)


@cli.command()
def features(
    history: Path = typer.Option(..., "--history", help="History folder (date partitions) with labels."),
    until: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="Cut-off day (UTC, exclusive)."),
    through: datetime | None = typer.Option(
        None,
        formats=["%Y-%m-%d"],
        help="Last feature day, when later than the day after the history (at most the label delay"
        " later: a history exported from the audit ends that long before it is exported).",
    ),
) -> None:
    """Build the daily merchant features from history and materialise them to the online store."""
    from app.settings import get_settings
    from features.jobs import build_merchant_features

    typer.echo(build_merchant_features(get_settings(), history, until, through))


@cli.command()
def export(
    history: Path = typer.Option(..., "--history", help="History folder (date partitions) to add to."),
) -> None:
    """Add the decision audit's settled days, with the labels that came back, to the history.

    A day is settled FRAUDSTREAM_LABEL_DELAY_DAYS after it ended (by the audit's latest event time);
    a day whose labels changed since the last export is written again. The scheduled trainer runs
    this before each training run.
    """
    from app.audit_export import export_audit
    from app.settings import get_settings

    settings = get_settings()
    typer.echo(export_audit(settings.pg_conninfo(reveal=True), history, settings.label_delay_days).line())


@cli.command()
def archive(
    history: Path | None = typer.Option(
        None, "--history", help="History folder the export writes (its mark)."
    ),
    to: Path | None = typer.Option(
        None, "--to", help="Archive folder (default: FRAUDSTREAM_AUDIT_ARCHIVE_DIR)."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Check every archived file's SHA-256 and row count instead; non-zero if any fails.",
    ),
) -> None:
    """Move the decisions scored more than FRAUDSTREAM_AUDIT_KEEP_DAYS ago to Parquet files.

    Only decisions whose day the history holds (export) and whose alert is not open leave the
    database; each file is recorded in audit_archives with its rows and SHA-256. The scheduled trainer
    runs this after each export.
    """
    from app.audit_archive import archive_audit, verify_archive
    from app.settings import get_settings

    settings = get_settings()
    folder = settings.audit_archive_dir if to is None else to
    conninfo = settings.pg_conninfo(reveal=True)
    if verify:
        checked = verify_archive(conninfo, folder)
        if checked.problems:
            raise FraudstreamError(checked.line())
        typer.echo(checked.line())
        return
    if history is None:
        raise FraudstreamError(
            "archive: --history DIR is needed (the export's mark says what the history holds)"
        )
    typer.echo(archive_audit(conninfo, history, folder, settings.audit_keep_days).line())


@cli.command("feature-log")
def feature_log() -> None:
    """Merge the workers' offline feature log into one file a day (but the newest), and remove the days
    more than FRAUDSTREAM_FEATURE_LOG_KEEP_DAYS before the newest. The scheduled trainer runs this."""
    from app.settings import get_settings
    from features.log_compaction import compact_feature_log
    from features.store import CARD_VIEW

    settings = get_settings()
    done = compact_feature_log(settings.feature_log_dir / CARD_VIEW, settings.feature_log_keep_days)
    if done.failed:
        raise FraudstreamError(done.line())
    typer.echo(done.line())


@cli.command()
def decision(
    txn_id: str = typer.Argument(..., help="The transaction's txn_id."),
    scored_on: datetime | None = typer.Option(
        None,
        formats=["%Y-%m-%d"],
        help="Its scored day (UTC), if known: only that day's archive files are read.",
    ),
    archive: Path | None = typer.Option(
        None, "--archive", help="Archive folder (default: FRAUDSTREAM_AUDIT_ARCHIVE_DIR)."
    ),
) -> None:
    """Print a transaction's decision record (score, reasons, SHAP, model, alert) as JSON, from the
    database or, once archived, from the audit archive."""
    import orjson

    from app.audit_archive import find_decision
    from app.settings import get_settings

    settings = get_settings()
    folder = settings.audit_archive_dir if archive is None else archive
    day = None if scored_on is None else scored_on.date()
    found = find_decision(settings.pg_conninfo(reveal=True), folder, txn_id, scored_on=day)
    if found is None:
        where = f"the archive's {day} files" if day else f"the archive ({folder})"
        raise FraudstreamError(f"decision: no decision for {txn_id!r} in the database nor in {where}")
    record, source = found
    typer.echo(orjson.dumps({"found_in": source, **record}, option=orjson.OPT_INDENT_2).decode())


@cli.command()
def train(
    history: Path = typer.Option(..., "--history", help="History folder (date partitions) with labels."),
    until: datetime | None = typer.Option(
        None, formats=["%Y-%m-%d"], help="Cut-off (UTC day, exclusive); default: the end of the history."
    ),
    report: Path | None = typer.Option(
        None, help="Folder for the validation data docs (default reports/training)."
    ),
    seed: int = typer.Option(0, help="Random seed (training is deterministic for a seed)."),
    schedule: str | None = typer.Option(
        None,
        help='Cron expression, e.g. "0 2 * * *": run on schedule and on retrain requests, forever; each'
        " run first adds the decision audit's settled days and their labels to the history (export).",
    ),
) -> None:
    """Validate history, build the point-in-time training set, train, evaluate, register, maybe promote."""
    from app.settings import get_settings
    from training.jobs import train_job

    settings = get_settings()
    if schedule is None:
        typer.echo(train_job(settings, history, until=until, seed=seed, report=report))
        return
    import logging

    from training.jobs import scheduled_train
    from training.schedule import KafkaRequests, next_run, run_schedule

    next_run(schedule, datetime.now(UTC))  # an invalid expression fails here, in one line
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    requests = KafkaRequests(
        settings.kafka_servers,
        settings.topic_retrain,
        f"{settings.app_id}-trainer",
        **settings.kafka_security(),
    )
    from app.drift import DriftCheck
    from training.feature_refresh import FeatureRefresh

    drift = DriftCheck(settings, settings.reports_dir / "drift")
    features = FeatureRefresh(settings, history)

    def idle() -> None:
        features.maybe_run()
        drift.maybe_run()

    run_schedule(
        schedule, lambda _reason: scheduled_train(settings, history, seed=seed, report=report), requests,
        on_idle=idle,
    )  # fmt: skip


models_cli = typer.Typer(
    help="The model registry: list, promote, roll back; live performance.", no_args_is_help=True
)
cli.add_typer(models_cli, name="models")


@models_cli.command("list")
def models_list() -> None:
    """List registered model versions, newest first."""
    from app.settings import get_settings
    from training.registry import Registry

    for m in Registry(get_settings().pg_conninfo(reveal=True)).list():
        typer.echo(
            f"{m.version}  {m.status:9}  AP {m.metrics.get('average_precision')}  "
            f"AUC {m.metrics.get('roc_auc')}  data {m.data()}  "
            f"parent {m.parent or '-'}  "
            f"{m.artefact_dir}"
        )


@models_cli.command("promote")
def models_promote(version: str = typer.Argument(..., help="Version to make champion.")) -> None:
    """Make a version the champion (the current champion is retired)."""
    from app.settings import get_settings
    from training.registry import Registry

    Registry(get_settings().pg_conninfo(reveal=True)).promote(version)
    typer.echo(f"models: {version} is champion")


@models_cli.command("rollback")
def models_rollback() -> None:
    """Re-promote the previous champion."""
    from app.settings import get_settings
    from training.registry import Registry

    typer.echo(f"models: rolled back to {Registry(get_settings().pg_conninfo(reveal=True)).rollback()}")


@models_cli.command("live")
def models_live(
    window: str = typer.Option(
        f"{LIVE_REPORT_DAYS}d", help="Decisions scored in this window (s, m, h, d) ..."
    ),
    settle: str = typer.Option("0s", help="... ending this long ago (chargebacks still to come)."),
    out: Path | None = typer.Option(None, help="Also write the report as JSON here."),
    at_most: int = typer.Option(
        1_000_000, min=0, help="A window holding more decisions is sampled evenly to ~this many (0: all)."
    ),
) -> None:
    """The champion's (and a shadow's) live performance, from the labels that came back."""
    from app.drift import parse_window
    from app.live_performance import live_job
    from app.settings import get_settings

    settings = get_settings()
    conninfo = settings.pg_conninfo(reveal=True)
    delay = timedelta(days=settings.label_delay_days)
    for line in live_job(
        conninfo, parse_window(window), parse_window(settle), out, at_most=at_most or None, label_delay=delay
    ):
        typer.echo(line)


def _bench_repeated(
    out: Path, repeat: int, warmup: int, target_p99_ms: float, *, model_dir: Path | None, **bench: Any
) -> None:
    from app.bench_repeat import run_repeated
    from app.settings import get_settings

    r = run_repeated(
        get_settings(), out, repeat=repeat, warmup=warmup, target_p99_ms=target_p99_ms, model_dir=model_dir,
        **bench,
    )  # fmt: skip
    for row in r["runs"]:
        typer.echo(
            f"bench: {row['file']}: event->score p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms; "
            f"{row['scored_per_s']} txn/s; {row['steal_percent']} % stolen; {row['lost']} lost"
        )
    p99 = r["p99_ms"]
    typer.echo(
        f"bench: {repeat} runs: p99 median {p99['median']} ms (min {p99['min']}, max {p99['max']}); "
        f"{r['runs_within_target']} within {target_p99_ms:g} ms -> {out}"
    )
    if r["lost"]:
        raise FraudstreamError(f"{r['lost']} transactions were not scored")


@cli.command()
def bench(
    suite: str = typer.Option(
        "pipeline", help="pipeline (Kafka -> worker -> score + SHAP -> sinks) or features."
    ),
    out: Path | None = typer.Option(None, help="JSON results (default reports/bench/<suite>.json)."),
    rate: float = typer.Option(1_000.0, min=0.0, help="pipeline: input txn/s (0 = as fast as possible)."),
    duration: float = typer.Option(30.0, min=1.0, help="pipeline: seconds of input traffic."),
    workers: int = typer.Option(1, min=1, help="pipeline: worker processes in one consumer group."),
    model: Path | None = typer.Option(None, help="pipeline: a trained model folder (default: train one)."),
    customers: int = typer.Option(2_000, min=10, help="Simulated cards."),
    days: int = typer.Option(14, min=1, help="features: simulated days of traffic."),
    repeat: int = typer.Option(1, min=1, help="pipeline: measured runs; over 1, OUT gets their summary."),
    warmup: int = typer.Option(0, min=0, help="pipeline: runs before the measured ones (not summarized)."),
    target_p99_ms: float = typer.Option(50.0, min=0.0, help="pipeline: count the runs with p99 within it."),
) -> None:
    """Benchmark throughput and latency; writes JSON (needs scripts/services up)."""
    from app.settings import get_settings

    target = out or Path(f"reports/bench/{suite}.json")
    if suite == "features":
        if repeat > 1 or warmup:
            raise FraudstreamError("--repeat and --warmup are for the pipeline suite")
        from app.bench import run_features_bench

        result = run_features_bench(get_settings(), target, customers, days)
        read = result["feast"]["read_one_card_ms"]
        writer = result["feast"]["worker_online_writer_100_cards_cpu_ms"]
        folds = "; ".join(f"{k} {v['total_us']} µs" for k, v in result["card_fold"]["per_event"].items())
        typer.echo(
            f"bench: feature service {result['feature_service']['events_per_s']:,} ev/s; "
            f"card fold an event: {folds}; "
            f"Feast online read p50 {read['p50']} ms p99 {read['p99']} ms; "
            f"the worker's online write of 100 cards p50 {writer['p50']} ms CPU "
            f"-> {target}"
        )
        return
    if suite != "pipeline":
        raise FraudstreamError(f"unknown bench suite {suite!r} (pipeline or features)")
    if repeat > 1 or warmup:
        _bench_repeated(target, repeat, warmup, target_p99_ms, rate=rate, duration_s=duration,
                        workers=workers, model_dir=model, customers=customers)  # fmt: skip
        return
    from app.bench_pipeline import run_pipeline_bench

    r = run_pipeline_bench(
        get_settings(), target, rate=rate, duration_s=duration, workers=workers, model_dir=model,
        customers=customers,
    )  # fmt: skip
    e2e = r["event_to_score_ms"]
    typer.echo(
        f"bench: {r['scored']:,}/{r['sent']:,} scored at {r['scored_per_s']} txn/s "
        f"(steady {r['steady_scored_per_s']}; input {rate:g}/s); "
        f"event->score p50 {e2e['p50']} ms p99 {e2e['p99']} ms max {e2e['max']} ms; "
        f"model {r['model']['trees']} trees depth {r['model']['max_depth']} -> {target}"
    )
    if (stages := r["batch_stages_ms"]).get("batches"):
        from app.worker.batch_trace import STEPS

        typer.echo(  # from the fetch to the send: what event -> score is made of
            "bench: per batch, ms p50/p99 before each step: "
            + ", ".join(f"{k} {stages[k]['p50']}/{stages[k]['p99']}" for k in STEPS[1:-1])
        )
    if roles := r["cpu_by_process_percent"]:
        typer.echo("bench: CPU, % of one core: " + ", ".join(f"{k} {v}" for k, v in roles.items()))
    if jumps := r["wall_clock_jumps"]:
        typer.echo(
            f"bench: warning: the machine was paused {len(jumps)} time(s) during the run "
            f"({sum(j['seconds'] for j in jumps):.2f} s in all): the latencies include it, rerun",
            err=True,
        )
    if r["lost"]:
        raise FraudstreamError(f"{r['lost']} transactions were not scored")


@cli.command()
def drift(
    window: str = typer.Option("24h", help="Current data: decisions of this last window (s, m, h, d)."),
    out: Path = typer.Option(Path("reports/drift"), help="Folder for drift-<time>/drift.html + drift.json."),
    threshold: float = typer.Option(
        0.3, min=0.0, max=1.0, help="Share of drifted columns that requests a retrain."
    ),
) -> None:
    """Evidently drift: recent decisions vs the champion's training features (retrain request above it)."""
    from app.drift import drift_job, parse_window
    from app.settings import get_settings

    result, retrain = drift_job(get_settings(), parse_window(window), out, threshold)
    typer.echo(result.one_line(threshold) + ("; retrain requested" if retrain else ""))


@cli.command()
def dlq(
    since: str = typer.Option("24h", help="Dead letters written within this last window (s, m, h, d)."),
    samples: int = typer.Option(1, min=0, help="Newest examples shown per kind."),
) -> None:
    """What went to the dead-letter topic: counts by kind (the reason up to its first colon), when,
    from which topic, and the newest examples (card numbers masked)."""
    from datetime import UTC, datetime

    from app.dlq import describe, read_dead_letters, summarize
    from app.drift import parse_window
    from app.settings import get_settings

    settings = get_settings()
    start = datetime.now(UTC) - parse_window(since)
    summary = summarize(read_dead_letters(settings, start), samples)
    typer.echo("\n".join(describe(summary, settings.topic_dlq, start)))


@cli.command()
def quality(
    out: Path = typer.Option(Path("reports/quality"), help="Folder for the data docs and drift reports."),
) -> None:
    """Data-quality reports (GX data docs for a simulated history and its training set, Evidently drift)."""
    from app.quality import quality_reports
    from app.settings import get_settings

    quality_reports(get_settings(), out, echo=typer.echo)


@cli.command()
def init(
    history: Path = typer.Option(Path("data/history"), help="History folder (simulated here if empty)."),
    customers: int = typer.Option(2_000, min=10, help="Cards to simulate when there is no history."),
    days: int = typer.Option(90, min=22, help="Days to simulate when there is no history."),
) -> None:
    """Prepare a deployment: topics, tables, Feast, a first champion, the first admin (idempotent)."""
    from app.init_job import init_job
    from app.settings import get_settings

    init_job(get_settings(), history=history, customers=customers, days=days, echo=typer.echo)


@cli.command()
def ui(
    host: str | None = typer.Option(None, help="Bind address (default FRAUDSTREAM_UI_HOST)."),
    port: int | None = typer.Option(None, help="Port (default FRAUDSTREAM_UI_PORT, 8080)."),
) -> None:
    """Serve the analyst review UI (alert queue, transaction and card search, SHAP explanations, verdicts
    and fraud reports -> labels)."""
    import uvicorn

    from app.kafka_admin import ensure_topics
    from app.settings import get_settings
    from app.ui.feedback import kafka_feedback
    from app.ui.store import UiStore
    from app.ui.web import create_app

    settings = get_settings()
    ensure_topics(settings, [settings.topic_feedback])
    store = UiStore(settings.pg_conninfo(reveal=True), assignment_s=settings.ui_assignment_s)
    store.migrate()
    target = timedelta(seconds=settings.ui_alert_target_s)  # the alerts' verdict target: queue and /metrics
    app = create_app(
        store, kafka_feedback(settings), settings.reports_dir, secure_cookies=settings.ui_secure_cookies,
        live_window=timedelta(seconds=settings.ui_live_window_s), live_at_most=settings.ui_live_max_decisions,
        label_delay=timedelta(days=settings.label_delay_days),
        archive_dir=settings.audit_archive_dir,
        login_lockout=(settings.ui_login_max_failures, timedelta(seconds=settings.ui_login_lockout_s)),
        address_max_failures=settings.ui_login_max_failures_per_address,
        alert_target=target,
    )  # fmt: skip
    if settings.ui_metrics_port:
        from app.prometheus import serve
        from app.ui.metrics import QueueCollector

        serve(QueueCollector(store, target), settings.metrics_host, settings.ui_metrics_port, "ui")
    typer.echo(f"ui: http://{host or settings.ui_host}:{port or settings.ui_port}/", err=True)
    uvicorn.run(
        app, host=host or settings.ui_host, port=port or settings.ui_port, log_level="warning",
        proxy_headers=True, forwarded_allow_ips=settings.ui_forwarded_allow_ips,
    )  # fmt: skip


def _ui_store() -> UiStore:
    from app.settings import get_settings
    from app.ui.store import UiStore

    store = UiStore(get_settings().pg_conninfo(reveal=True))
    store.migrate()
    return store


NEW_PASSWORD = typer.Option(
    ...,
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="FRAUDSTREAM_NEW_USER_PASSWORD",
    help="Prompted for (or FRAUDSTREAM_NEW_USER_PASSWORD); at least 10 characters.",
)
users_cli = typer.Typer(help="Analyst UI users.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")


@users_cli.command("add")
def users_add(
    username: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option("analyst", help="analyst or admin."),
    password: str = NEW_PASSWORD,
) -> None:
    """Create a UI user (the first admin comes from here)."""
    store = _ui_store()
    store.add_user(username, password, role)
    store.log("cli", "add_user", username, {"role": role})
    typer.echo(f"users: {username} ({role}) created")


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@users_cli.command("list")
def users_list() -> None:
    """Print the users: name, role, created, and disabled since (tab-separated)."""
    for u in _ui_store().users():
        disabled = f"disabled {u['disabled_at']:%Y-%m-%d %H:%M}" if u["disabled_at"] else "active"
        typer.echo(f"{u['username']}\t{u['role']}\t{u['created_at']:%Y-%m-%d}\t{disabled}")


@users_cli.command("disable")
def users_disable(username: str = typer.Argument(..., help="Login name.")) -> None:
    """Disable a user: their sessions end at once and they cannot log in (``enable`` undoes it)."""
    _ui_store().set_disabled(username, True, _cli_actor())
    typer.echo(f"users: {username} disabled")


@users_cli.command("enable")
def users_enable(username: str = typer.Argument(..., help="Login name.")) -> None:
    """Enable a disabled user again."""
    _ui_store().set_disabled(username, False, _cli_actor())
    typer.echo(f"users: {username} enabled")


@users_cli.command("password")
def users_password(
    username: str = typer.Argument(..., help="Login name."),
    password: str = NEW_PASSWORD,
) -> None:
    """Set a user's password (a reset): their sessions end."""
    _ui_store().set_password(username, password, _cli_actor())
    typer.echo(f"users: {username}'s password set; their sessions ended")


block_cli = typer.Typer(
    help="The block list: cards and merchants whose transactions are declined whatever their score.",
    no_args_is_help=True,
)
cli.add_typer(block_cli, name="block")
KIND = typer.Argument(..., help="card or merchant.")


@block_cli.command("add")
def block_add(
    kind: str = KIND,
    value: str = typer.Argument(..., help="The card id or merchant id."),
    reason: str = typer.Option("", help="Why (shown to analysts and in the action log)."),
) -> None:
    """Block a card or merchant; workers decline its transactions within FRAUDSTREAM_MODEL_POLL_S."""
    if _ui_store().block(kind, value, _cli_actor(), reason):
        typer.echo(f"block: {kind} {value.strip()} blocked")
    else:
        typer.echo(f"block: {kind} {value.strip()} is on the block list already")


@block_cli.command("remove")
def block_remove(
    kind: str = KIND, value: str = typer.Argument(..., help="The card id or merchant id.")
) -> None:
    """Take a card or merchant off the block list."""
    if not _ui_store().unblock(kind, value, _cli_actor()):
        raise FraudstreamError(f"block: {kind} {value} is not on the block list")
    typer.echo(f"block: {kind} {value} unblocked")


@block_cli.command("list")
def block_list() -> None:
    """Print the block list, newest first: kind, id, since, by, reason (tab-separated)."""
    for e in _ui_store().block_list():
        by = e["created_by"] or ""
        typer.echo(f"{e['kind']}\t{e['value']}\t{e['created_at']:%Y-%m-%d %H:%M}\t{by}\t{e['reason']}")


@cli.command()
def demo(
    duration: float | None = typer.Option(
        None, min=1.0, help="Stop after this many seconds (default: Ctrl-C)."
    ),
    rate: float = typer.Option(200.0, min=1.0, help="Live transactions per second."),
    customers: int = typer.Option(1_000, min=10, help="Simulated cards."),
) -> None:
    """Run the system locally with live simulated traffic (needs scripts/services up)."""
    from app.demo import run_demo
    from app.settings import get_settings

    summary = run_demo(get_settings(), duration_s=duration, rate=rate, customers=customers, echo=typer.echo)
    if summary.failed:
        raise FraudstreamError(f"{summary.failed} records could not be delivered to Kafka")


@cli.command()
def validate(
    history: Path = typer.Argument(..., help="History folder (date=YYYY-MM-DD partitions)."),
    suite: str = typer.Option("transactions", help="Suite name in expectations/suites."),
    report: Path = typer.Option(
        Path("reports/validation"), help="Folder for data docs, summary, quarantine."
    ),
) -> None:
    """Validate Parquet history with a Great Expectations suite; non-zero exit if it fails."""
    from expectations.validate import validate_history

    result = validate_history(history, report, suite)
    typer.echo(result.one_line(), err=not result.success)
    typer.echo(
        f"validate: data docs {result.data_docs}"
        + (f", quarantine {result.quarantine}" if result.quarantine else "")
    )
    if not result.success:
        raise typer.Exit(1)


def _sim_config(
    customers: int,
    merchants: int,
    days: int,
    start: datetime,
    seed: int,
    fraud_scale: float,
    disable: list[str],
) -> SimConfig:
    from app.simulator.model import SimConfig

    try:
        return SimConfig(
            customers=customers, merchants=merchants, days=days, start=start.date(), seed=seed,
            fraud_scale=fraud_scale, disabled=frozenset(disable),
        )  # fmt: skip
    except ValueError as exc:
        raise FraudstreamError(str(exc)) from exc


def main() -> None:
    """Console-script entry point: known failures become one line on stderr, never a traceback."""
    try:
        cli(standalone_mode=True)
    except FraudstreamError as exc:
        typer.echo(f"fraudstream: error: {exc}", err=True)
        sys.exit(1)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        what = f"setting FRAUDSTREAM_{field.upper()}" if field else "settings"  # a model validator: no field
        typer.echo(f"fraudstream: error: invalid {what}: {first['msg']}", err=True)
        sys.exit(1)
    except Exception as exc:  # a database error from any command (psycopg is imported where it is used)
        psycopg = sys.modules.get("psycopg")
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        missing = isinstance(exc, psycopg.errors.UndefinedTable)
        hint = " (no tables yet: run fraudstream init)" if missing else ""
        typer.echo(f"fraudstream: error: PostgreSQL: {first_line(exc)}{hint}", err=True)
        sys.exit(1)
