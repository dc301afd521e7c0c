"""Drift monitoring with Evidently (0.7 API): the champion's training features vs recent decisions.

``drift_report`` (files in, files out, no services) compares a current sample with the reference
column by column (Evidently's ``DataDriftPreset``: per column the method it picks for the type
and size, with its threshold) and writes ``drift.html`` + ``drift.json``. ``drift_job`` takes the
reference stored with the champion (``reference.parquet``: training rows' features and scores) and
the audit's decisions of the last window, and above the threshold files a retrain request on the
topic the trainer consumes and records the run.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg import sql

from app.errors import FraudstreamError
from app.settings import Settings

DRIFT_RUNS = """
create table if not exists drift_runs (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    model_version text not null,
    window_s    double precision not null,
    rows        integer not null,
    share       double precision not null,
    drifted     jsonb not null,
    report      text not null,
    retrain_requested boolean not null
);
"""


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    value: float
    drifted: bool


@dataclass
class DriftResult:
    share: float
    columns: list[ColumnDrift]
    html: Path
    json: Path
    rows: tuple[int, int]  # reference, current
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    def one_line(self, threshold: float) -> str:
        worst = sorted(self.drifted, key=lambda c: -abs(c.value - c.threshold))[:3]
        cols = ", ".join(f"{c.column} ({c.method} {c.value:.3g} vs {c.threshold:g})" for c in worst) or "none"
        verdict = "DRIFT" if self.share > threshold else "ok"
        label = self.extra.get("label")
        labels = ""  # not a decisions report (e.g. fraudstream quality)
        if "label" in self.extra:
            labels = "labels: too few yet; "
        if label is not None:
            drifted = "yes" if label["drifted"] else "no"
            labels = f"label drift {drifted} ({label['method']} {label['value']:.3g}); "
        sample = self.extra.get("sample")
        sampled = ""
        if sample is not None and sample["fraction"] < 1:
            sampled = f" (sampled evenly from the window's ~{sample['decisions_in_window']:,})"
        return (
            f"drift: {verdict}: {len(self.drifted)}/{len(self.columns)} columns drifted "
            f"(share {self.share:.2f}, threshold {threshold:g}); worst: {cols}; {labels}"
            f"{self.rows[1]:,} current{sampled} vs {self.rows[0]:,} reference rows -> {self.html}"
        )


def _is_p_value(method: str) -> bool:
    return "p_value" in method.lower() or "p-value" in method.lower()


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], out: Path
) -> DriftResult:
    """Evidently data drift of ``current`` against ``reference`` over numeric ``columns``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently's own deprecation and runtime noise
        from evidently import DataDefinition, Dataset, Report  # noqa: PLC0415 - slow import
        from evidently.presets import DataDriftPreset  # noqa: PLC0415

        usable = [c for c in columns if reference[c].notna().any() and current[c].notna().any()]
        definition = DataDefinition(numerical_columns=usable)
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current[usable], data_definition=definition),  # current first (0.7 API)
            Dataset.from_pandas(reference[usable], data_definition=definition),
        )
    out.mkdir(parents=True, exist_ok=True)
    html, raw = out / "drift.html", out / "drift.json"
    snapshot.save_html(str(html))
    result = snapshot.dict()
    raw.write_text(json.dumps(result, indent=2, default=str) + "\n")
    share, found = 0.0, []
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif config["type"].endswith("ValueDrift"):
            value, threshold, method = float(metric["value"]), float(config["threshold"]), config["method"]
            drifted = value < threshold if _is_p_value(method) else value >= threshold
            found.append(ColumnDrift(config["column"], method, threshold, value, drifted))
    return DriftResult(share, found, html, raw, (len(reference), len(current)))


MIN_LABELS = 30


def recent_decisions(
    conninfo: str, since: datetime, until: datetime, features: list[str], at_most: int | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Decisions scored in [since, until), about ``at_most`` of them spread evenly over it where it holds
    more (``app/audit_window.py``): features, score and the label if one arrived (else NaN); and what
    was read (``Window.sample``)."""
    from app.audit_window import decided_in_window  # noqa: PLC0415

    columns = sql.SQL("d.features, d.score, l.is_fraud")
    window = decided_in_window(conninfo, columns, since, until, at_most)
    frame = pd.DataFrame(
        [{**f, "score": s, "label": None if y is None else float(y)} for f, s, y in window.rows],
        columns=[*features, "score", "label"],
    )
    return frame.astype("float64"), window.sample()


def label_drift(reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> ColumnDrift | None:
    """Fraud rate of the labelled recent decisions vs the training labels (once enough labels arrived)."""
    labelled = current.dropna(subset=["label"])
    if "label" not in reference or len(labelled) < MIN_LABELS:
        return None
    result = drift_report(reference[["label"]], labelled[["label"]], ["label"], out)
    return result.columns[0] if result.columns else None


def drift_job(settings: Settings, window: timedelta, out: Path, threshold: float) -> tuple[DriftResult, bool]:
    """Drift of the last ``window`` of decisions vs the champion's reference; request a retrain above it."""
    import psycopg  # noqa: PLC0415
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    from training.registry import Registry  # noqa: PLC0415

    conninfo = settings.pg_conninfo(reveal=True)
    champion = Registry(conninfo).champion()
    if champion is None:
        raise FraudstreamError("no champion model: nothing to compare with (run fraudstream train)")
    folder = Path(champion.artefact_dir)
    meta = json.loads((folder / "metadata.json").read_text())
    if "reference" not in meta:
        raise FraudstreamError(f"model {champion.version} has no stored drift reference (retrain it)")
    reference = pd.read_parquet(folder / meta["reference"]["file"])
    columns = [*meta["features"], "score"]
    now = datetime.now(UTC)
    current, sample = recent_decisions(
        conninfo, now - window, now, meta["features"], settings.drift_max_decisions
    )
    if len(current) < 100:
        raise FraudstreamError(f"only {len(current)} decisions in the last {window}: too few to judge drift")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    result = drift_report(reference, current, columns, out / f"drift-{stamp}")
    labels = label_drift(reference, current, out / f"drift-{stamp}" / "labels")
    result.extra["label"] = None if labels is None else labels.__dict__
    result.extra["sample"] = sample
    retrain = result.share > threshold
    if retrain:
        request_retrain(settings, f"drift: share {result.share:.2f} > {threshold:g} "
                        f"({', '.join(c.column for c in result.drifted[:5])})")  # fmt: skip
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        conn.execute(DRIFT_RUNS)
        conn.execute(
            "insert into drift_runs (model_version, window_s, rows, share, drifted, report,"
            " retrain_requested) values (%s, %s, %s, %s, %s, %s, %s)",
            (champion.version, window.total_seconds(), len(current), result.share,
             Jsonb([c.__dict__ for c in result.drifted]), str(result.html), retrain),
        )  # fmt: skip
    return result, retrain


def request_retrain(settings: Settings, reason: str) -> None:
    """A retrain request on the topic the trainer consumes (drift and feedback triggers use it)."""
    from kafka import KafkaProducer  # noqa: PLC0415

    from app.kafka_admin import ensure_topics  # noqa: PLC0415

    ensure_topics(settings, [settings.topic_retrain])
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", **settings.kafka_security()
    )
    try:
        payload = {"reason": reason, "requested_at": datetime.now(UTC).isoformat()}
        producer.send(settings.topic_retrain, key=b"drift", value=json.dumps(payload).encode()).get(
            timeout=10
        )
    finally:
        producer.close()


log = logging.getLogger("fraudstream.trainer")


class DriftCheck:
    """The trainer's periodic drift run (every ``FRAUDSTREAM_DRIFT_EVERY_S``, over the same window)."""

    def __init__(self, settings: Settings, out: Path, clock: Any = None) -> None:
        self.settings, self.out = settings, out
        self.clock = clock or time.monotonic
        self.last = self.clock()

    def maybe_run(self) -> None:
        if self.clock() - self.last < self.settings.drift_every_s:
            return
        self.last = self.clock()
        window = timedelta(seconds=self.settings.drift_every_s)
        try:
            result, retrain = drift_job(self.settings, window, self.out, self.settings.drift_threshold)
            log.info("trainer: %s%s", result.one_line(self.settings.drift_threshold),
                     "; retrain requested" if retrain else "")  # fmt: skip
        except FraudstreamError as exc:  # too few decisions, no champion: try again next period
            log.warning("trainer: drift check skipped: %s", exc)


def parse_window(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise FraudstreamError(f"window {text!r}: a number and a unit s, m, h or d (e.g. 24h)") from None
