"""``fraudstream models live``: how the champion, and a shadow challenger, did on live traffic.

The decision audit of a window joined to the labels that came back for it (analysts' verdicts and
chargebacks; per transaction the latest one not retracted), measured per model version with
``training.metrics.live_metrics``; where the worker scored a shadow (``FRAUDSTREAM_SHADOW_MODEL``)
the two models side by side on the same decisions (``shadow_comparison``): the evidence for
promoting the challenger or not. ``settle`` leaves out the most recent decisions, whose chargebacks
may still be on their way.

A window holding more than ``at_most`` decisions is sampled evenly over its time
(``app/audit_window.py``): the counts are the sample's; the shares and the ranking metrics estimate
the window's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg import sql

from app.audit_export import explore_weights
from app.audit_window import SLICES, decided_in_window
from app.errors import FraudstreamError
from app.scoring.store import AUDIT_CLOCK, EXPLORE_COLUMNS
from training.metrics import (
    live_metrics,
    measured_declines,
    recall_by_type,
    shadow_comparison,
    weighted_live_metrics,
)

COLUMNS = sql.SQL(
    "d.model_version, d.score, d.decision <> 'approve', (d.thresholds->>'review')::float8, d.shadow_version,"
    " d.shadow_score, l.is_fraud::int, l.fraud_type, {explore}, d.decision = 'decline', d.event_time"
).format(explore=EXPLORE_COLUMNS)
NAMES = [
    "model_version", "score", "flagged", "review", "shadow_version", "shadow_score", "label", "fraud_type",
    "explored", "explorable", "explore_rate", "declined", "event_time",
]  # fmt: skip


@dataclass(frozen=True)
class Live:
    frame: pd.DataFrame
    sample: dict[str, Any]  # Window.sample()
    clock: datetime | None = None  # the audit's clock (AUDIT_CLOCK)


def live_decisions(conninfo: str, since: datetime, until: datetime, at_most: int | None = None) -> Live:
    """Decisions scored in [since, until), or about ``at_most`` of them spread over it where it holds more:
    model, scores, flagged, review threshold, label (NaN if none); and the audit's clock."""
    import psycopg  # noqa: PLC0415

    window = decided_in_window(conninfo, COLUMNS, since, until, at_most)
    types = {"score": "float64", "flagged": "bool", "review": "float64", "shadow_score": "float64",
             "label": "float64", "explored": "bool", "explorable": "bool",
             "explore_rate": "float64", "declined": "bool"}  # fmt: skip
    frame = pd.DataFrame(window.rows, columns=NAMES).astype(types)
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute(AUDIT_CLOCK).fetchone()
    return Live(frame, window.sample(), row[0] if row else None)


def live_report(
    frame: pd.DataFrame, label_delay: timedelta = timedelta(days=7), clock: datetime | None = None
) -> dict[str, Any]:
    """Per champion version its live metrics; per champion and shadow pair the comparison. The declines
    let through within ``label_delay`` of the audit's ``clock`` (its latest event, as the export's;
    default: the window's) and unlabelled are too recent to tell: their chargeback may be on its way."""
    times = pd.to_datetime(frame["event_time"], utc=True)
    latest = times.max() if clock is None else pd.Timestamp(clock)
    pending = ((times > latest - label_delay) & frame["label"].isna()).to_numpy()
    models = {}
    for version, g in frame.groupby("model_version", sort=True):
        label, flagged, waiting = g["label"].to_numpy(), g["flagged"].to_numpy(), pending[g.index.to_numpy()]
        models[version] = {
            **live_metrics(label, g["score"].to_numpy(), flagged),
            "recall_by_type": recall_by_type(label, flagged, g["fraud_type"].to_numpy()),
            "declines_measured": measured_declines(label, g["explored"].to_numpy(), waiting),
        }
        if (w := declines_weights(g, waiting)) is not None:
            models[version]["weighted"] = weighted_live_metrics(label, g["score"].to_numpy(), flagged, w)
    shadowed = frame[frame["shadow_score"].notna()]
    shadows = [
        {
            "champion_version": champion,
            "shadow_version": shadow,
            **shadow_comparison(
                g["label"].to_numpy(),
                g["score"].to_numpy(),
                g["shadow_score"].to_numpy(),
                g["review"].to_numpy(),
            ),
        }
        for (champion, shadow), g in shadowed.groupby(["model_version", "shadow_version"], sort=True)
    ]
    return {"models": models, "shadows": shadows}


def declines_weights(g: pd.DataFrame, pending: np.ndarray) -> np.ndarray | None:
    """Each decision's weight where some would-be declines let through stand for others (else None).
    As the export's (``app.audit_export.explore_weights``, over the window): a decline nobody labelled
    is not known (0), nor is one let through still too recent to tell; each one let through whose
    outcome is known stands for itself and its share, at its rate, of those that could have been let
    through (not a rule's decline, nor one over the amount cap: nothing stands for those)."""
    explored, unlabelled = g["explored"].to_numpy(), g["label"].isna().to_numpy()
    known = explored & ~pending
    if not known.any():
        return None
    unseen = (unlabelled & g["explorable"].to_numpy()) | (explored & pending)
    unknown = unseen | (unlabelled & g["declined"].to_numpy())
    weights = explore_weights(unknown, known, unseen, g["explore_rate"].to_numpy(dtype=float))
    return weights if (weights > 1).any() else None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(bounds: list[float] | None) -> str:
    return "" if bounds is None else f" (95 % {bounds[0]:.3f}-{bounds[1]:.3f})"


def one_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"live: {version}: {m['decisions']:,} decisions, {m['flagged']:,} flagged; {m['confirmed_frauds']:,} "
        f"confirmed frauds, recall {_num(m['recall'])}{_interval(m['recall_95'])}, "
        f"precision {_num(m['precision'])}{_interval(m['precision_95'])}, "
        f"ROC AUC {_num(m['roc_auc'])}, AP {_num(m['average_precision'])} (unlabelled presumed genuine); "
        f"precision {_num(m['precision_settled'])}{_interval(m['precision_settled_95'])} over the "
        f"{m['flagged_settled']:,} flagged with a label"
        for version, m in report["models"].items()
    ]
    for version, m in report["models"].items():
        by_type = m.get("recall_by_type", {}).items()
        kinds = [f"{name} {k['flagged']:,}/{k['frauds']:,}" for name, k in by_type]
        if kinds:
            lines.append(f"live: {version}: frauds flagged by type: {', '.join(kinds)}")
        measured = m.get("declines_measured", {})
        if measured.get("explored"):
            lines.append(
                f"live: {version}: {measured['explored']:,} would-be declines let through to measure them "
                f"({measured['pending']:,} too recent to tell), {measured['frauds']:,} fraud: the declines' "
                f"precision {_num(measured['decline_precision'])}"
                f"{_interval(measured['decline_precision_95'])};"
                f" the rest were good customers' payments the model would have refused (unlabelled, once "
                f"their chargeback window has passed, presumed genuine)"
            )
        if weighted := m.get("weighted"):
            lines.append(
                f"live: {version}: counting each one let through for the declines nobody labelled "
                f"({weighted['left_out']:,} left out): recall {_num(weighted['recall'])}"
                f"{_interval(weighted['recall_95'])} of {weighted['confirmed_frauds']:,.1f} frauds, "
                f"precision {_num(weighted['precision'])}{_interval(weighted['precision_95'])}, "
                f"ROC AUC {_num(weighted['roc_auc'])}, AP {_num(weighted['average_precision'])}"
            )
    for s in report["shadows"]:
        c, w, v = s["champion"], s["shadow"], s["equal_volume"]
        lines.append(
            f"shadow: {s['shadow_version']} beside {s['champion_version']} on {s['decisions']:,} decisions, "
            f"{s['confirmed_frauds']:,} confirmed frauds: with the champion's {v['flagged']:,} flags the "
            f"shadow would catch {v['shadow_frauds']:,}, the champion caught {v['champion_frauds']:,}; "
            f"at the review threshold {w['flagged']:,} flags / {w['frauds_flagged']:,} frauds vs "
            f"{c['flagged']:,} / {c['frauds_flagged']:,}; "
            f"ROC AUC {_num(w['roc_auc'])} vs {_num(c['roc_auc'])}, "
            f"AP {_num(w['average_precision'])} vs {_num(c['average_precision'])}"
        )
    return lines


def sample_line(sample: dict[str, Any]) -> str | None:
    """What a sampled report measured, or None when it read the whole window."""
    if sample["fraction"] >= 1:
        return None
    return (
        f"a sample: {sample['decisions_read']:,} of ~{sample['decisions_in_window']:,} decisions in the "
        f"window, those scored in a stretch of each {SLICES:,}th of it "
        f"({100 * sample['fraction']:.2g} % of its time); the counts are the sample's"
    )


def live_job(
    conninfo: str, window: timedelta, settle: timedelta, out: Path | None, *, now: datetime | None = None,
    at_most: int | None = None, label_delay: timedelta = timedelta(days=7),
) -> list[str]:  # fmt: skip
    """The decisions scored in ``window`` up to ``settle`` ago (about ``at_most`` of them, spread over
    it, where it holds more), measured: the report's lines (and JSON to ``out``)."""
    until = (now or datetime.now(UTC)) - settle
    since = until - window
    live = live_decisions(conninfo, since, until, at_most)
    if live.frame.empty:
        raise FraudstreamError(
            f"no decisions scored between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC"
        )
    report = {"since": since.isoformat(), "until": until.isoformat(), "sample": live.sample,
              **live_report(live.frame, label_delay, live.clock)}  # fmt: skip
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    sampled = sample_line(report["sample"])
    return ([f"live: {sampled}"] if sampled else []) + one_lines(report)
