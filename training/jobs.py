"""``fraudstream train`` as a typed job: validate -> training set -> fit -> evaluate -> register."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import xgboost as xgb

from app.errors import FraudstreamError
from app.history import partitions, read_history
from app.settings import Settings
from features.snapshot import states_before
from training.dataset import LABEL, MODEL_FEATURES, Periods, build_training_frame, one_class_splits
from training.metrics import evaluate
from training.registry import Registry
from training.report import write_report
from training.train import fit, predict

log = logging.getLogger("fraudstream.trainer")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def load_model(artefact_dir: Path) -> tuple[xgb.Booster, dict[str, Any]]:
    meta = json.loads((artefact_dir / "metadata.json").read_text())
    booster = xgb.Booster()
    booster.load_model(str(artefact_dir / "model.ubj"))
    if list(booster.feature_names or []) != meta["features"]:
        raise FraudstreamError(f"model in {artefact_dir} does not match its metadata's feature order")
    return booster, meta


REFERENCE_ROWS = 50_000


def reference_sample(frame: pd.DataFrame, booster: xgb.Booster, seed: int) -> pd.DataFrame:
    """The drift reference stored with the model: training rows' features and the model's scores."""
    train = frame[frame["split"] == "train"]
    sample = train.sample(min(REFERENCE_ROWS, len(train)), random_state=seed).sort_values("event_time")
    out = sample[["event_time", *MODEL_FEATURES]].reset_index(drop=True)
    out["score"] = predict(booster, sample)
    out["label"] = sample[LABEL].to_numpy()  # as known at training time: the label drift reference
    return out


def promotion_decision(
    candidate_ap: float, champion_ap: float | None, champion: str | None, *,
    alerts: tuple[float, float] | None = None, max_alert_growth: float = 0.0,
) -> tuple[bool, str]:  # fmt: skip
    """A candidate becomes champion only if it beats the champion on the same holdout (or none exists)
    and, with ``max_alert_growth``, would not flag more than that many times the champion's decisions a
    day at the review threshold (``alerts``: the candidate's and the champion's per day, on the same
    holdout; the champion's counted as at least one): a better ranking can still flood the analysts'
    queue when the scores' scale moved."""
    if champion_ap is None:
        return True, "promoted to champion (no champion yet)"
    if candidate_ap <= champion_ap:
        return (
            False,
            f"kept as candidate (AP {candidate_ap} <= champion {champion} {champion_ap} on the same holdout)",
        )
    if max_alert_growth and alerts is not None and alerts[0] > max_alert_growth * max(alerts[1], 1.0):
        return (
            False,
            f"kept as candidate: AP {candidate_ap} > {champion} {champion_ap}, but at the review threshold it"
            f" would flag {alerts[0]:,.1f} decisions a day against the champion's {alerts[1]:,.1f} (more than"
            f" {max_alert_growth:g}x, FRAUDSTREAM_PROMOTE_MAX_ALERT_GROWTH); promote it by hand if intended",
        )
    return (
        True,
        f"promoted to champion (AP {candidate_ap} > {champion} {champion_ap} on the same holdout)",
    )


def first_day(history_dir: Path, cutoff: pd.Timestamp | None, days: int) -> str | None:
    """The first day a training run reads: ``days`` before the cut-off (default: the day after the
    history's last); None, every day (``days`` 0, or a history that does not reach back so far)."""
    found = partitions(history_dir)
    end = (
        cutoff.normalize()
        if cutoff is not None
        else pd.Timestamp(found[-1].day, tz="UTC") + timedelta(days=1)
    )
    first = (end - timedelta(days=days)).strftime("%Y-%m-%d")
    return first if days and first > found[0].day else None


def train_job(
    settings: Settings, history_dir: Path, *, until: datetime | None = None, seed: int = 0,
    test_days: int = 7, valid_days: int = 7, report: Path | None = None,
) -> str:  # fmt: skip
    from expectations.validate import validate_frame, validate_history  # noqa: PLC0415 - GX import is slow

    started = datetime.now(UTC)
    report = report or settings.reports_dir / "training"
    cutoff = None if until is None else pd.Timestamp(until, tz="UTC" if until.tzinfo is None else None)
    since = first_day(history_dir, cutoff, settings.train_days)
    gx = validate_history(history_dir, report / "validation", since=since)
    if not gx.success:
        raise FraudstreamError(f"history failed validation, no model trained: {gx.one_line()}")
    history = read_history(history_dir, since=since)
    periods = Periods.make(history, cutoff, test_days, settings.label_delay_days, valid_days)
    states, origin = None, "card states from the history's first day"
    if since is not None:  # the cards' past before the days read: what the stream's states hold
        states, origin = states_before(history_dir, since)
    frame = build_training_frame(settings, history, periods, states)
    checked = validate_frame(frame, report / "training_set", "training_set")
    if not checked.success:
        raise FraudstreamError(f"training set failed validation, no model trained: {checked.one_line()}")
    if bad := one_class_splits(frame):
        raise FraudstreamError(
            f"one class only in {', '.join(bad)} of {periods.describe()}; no model trained"
        )
    threads = os.cpu_count() or 1
    fitted = fit(frame, seed=seed, threads=threads)
    test = frame[frame["split"] == "test"]
    thresholds = {"review": settings.review_threshold, "decline": settings.decline_threshold}
    test_days = (periods.cutoff - periods.test_start).total_seconds() / 86400
    score = predict(fitted.booster, test)
    capacity = settings.review_capacity_per_day
    metrics = evaluate(test, score, thresholds, test_days, capacity)

    registry = Registry(settings.pg_conninfo(reveal=True))
    registry.migrate()
    champion = registry.champion()
    champion_metrics = None
    if champion is not None:
        booster, _ = load_model(Path(champion.artefact_dir))
        champion_metrics = evaluate(test, predict(booster, test), thresholds, test_days, capacity)

    version = started.strftime("v%Y%m%d-%H%M%S")
    folder = settings.models_dir / version
    folder.mkdir(parents=True, exist_ok=True)
    fitted.booster.save_model(str(folder / "model.ubj"))
    reference = reference_sample(frame, fitted.booster, seed)
    reference.to_parquet(folder / "reference.parquet", index=False)
    meta = {
        "version": version,
        "features": list(MODEL_FEATURES),
        "params": fitted.params,
        "search": fitted.search,
        "valid_average_precision": round(fitted.valid_average_precision, 4),
        "metrics": metrics,
        "champion_metrics_on_same_holdout": champion_metrics,
        "periods": {k: str(v) for k, v in periods.__dict__.items()},
        "data": {
            "rows": len(frame),
            "from": str(history["event_time"].min()),
            "to": str(history["event_time"].max()),
        },
        "validation": {"success": gx.success, "summary": gx.one_line(), "data_docs": gx.data_docs},
        "training_set_validation": {"success": checked.success, "summary": checked.one_line()},
        "card_states": origin,
        "versions": {"xgboost": xgb.__version__, "pandas": pd.__version__},
        "git_commit": git_commit(),
        "seed": seed,
        "reference": {"file": "reference.parquet", "rows": len(reference), "split": "train"},
        "trained_in_s": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    report_path = write_report(
        report / version, version, metrics=metrics, test=test, score=score,
        booster=fitted.booster, meta=meta,
    )  # fmt: skip
    registry.register(
        version, metrics, fitted.params, str(folder.resolve()), history["event_time"].min(),
        periods.cutoff, champion.version if champion else None, str(meta["git_commit"]),
    )  # fmt: skip
    promote, verdict = promotion_decision(
        float(metrics["average_precision"]),  # type: ignore[arg-type]
        None if champion_metrics is None else float(champion_metrics["average_precision"]),  # type: ignore[arg-type]
        champion.version if champion else None,
        alerts=None
        if champion_metrics is None
        else (review_per_day(metrics), review_per_day(champion_metrics)),
        max_alert_growth=settings.promote_max_alert_growth,
    )
    if promote:
        registry.promote(version)
    return (
        f"train: {version} on {periods.describe()}: test AUC {metrics['roc_auc']}, "
        f"AP {metrics['average_precision']}, "
        f"card P@100 {metrics['card_precision_at_100']}, recall@1%FPR {metrics['recall_at_1pct_fpr']}; "
        f"{at_review(metrics)}; {verdict}; {origin}; {meta['trained_in_s']}s -> {folder},"
        f" report {report_path}"
    )


def review_per_day(metrics: dict[str, Any]) -> float:
    return float(metrics["at_thresholds"]["review"]["flagged_per_day"])


def at_review(metrics: dict[str, Any]) -> str:
    """The review threshold's operating point on the holdout, for the run's line."""
    op = metrics["at_thresholds"]["review"]
    line = (
        f"at the review threshold {op['threshold']}: {op['flagged_per_day']:,.1f} flagged a day, precision"
        f" {op['precision']}, recall {op['recall']}"
    )
    if (cap := metrics["at_thresholds"].get("capacity")) is not None:
        line += (
            f" (for {cap['capacity_per_day']:g} a day it would be {cap['threshold']}: recall {cap['recall']},"
            f" precision {cap['precision']})"
        )
    return line


def scheduled_train(
    settings: Settings, history_dir: Path, *, seed: int = 0, report: Path | None = None
) -> str:
    """The daily job: the decision audit's settled days and the labels that came back join the
    history (``app.audit_export``); a training run on it; the merchant features for the audit's day
    are built from it and materialised for the workers. Without the export every retrain
    learned from the history the deployment started with, and the workers' merchant features stayed
    those of the day ``init`` built them. After the export, the decisions older than the retention
    leave the database for the archive (``app.audit_archive``), and the workers' feature log is merged
    into a file a day (``features.log_compaction``)."""
    from app.audit_archive import archive_audit  # noqa: PLC0415
    from app.audit_export import export_audit  # noqa: PLC0415
    from features.jobs import build_merchant_features  # noqa: PLC0415
    from features.log_compaction import compact_feature_log  # noqa: PLC0415
    from features.store import CARD_VIEW  # noqa: PLC0415

    conninfo = settings.pg_conninfo(reveal=True)
    exported = export_audit(conninfo, history_dir, settings.label_delay_days)
    steps = [exported.line()]
    # after the export, so that every decision that goes has its day in the history; housekeeping: a
    # failed archive (another run holds it, a full disk) is logged and the training goes on
    try:
        archived = archive_audit(conninfo, history_dir, settings.audit_archive_dir, settings.audit_keep_days)
        steps.append(archived.line())
    except FraudstreamError as exc:
        log.error("trainer: %s", exc)
        steps.append(f"{exc} (logged; the run goes on)")
    compacted = compact_feature_log(settings.feature_log_dir / CARD_VIEW, settings.feature_log_keep_days)
    if compacted.failed:
        log.error("trainer: %s", compacted.line())
    steps.append(compacted.line())
    try:
        steps.append(train_job(settings, history_dir, seed=seed, report=report))
    finally:
        # after training, which rewrites the merchant features' offline file for its point-in-time join:
        # the file and the online store then both hold the audit's day (even when the training failed)
        if exported.clock is not None:
            steps.append(build_merchant_features(settings, history_dir, through=exported.clock))
    return "; ".join(steps)
