"""``fraudstream models live``: how the champion, and a shadow challenger, did on live traffic.

The decision audit of a window joined to the labels that came back for it (analysts' verdicts and
chargebacks; per transaction the latest one not retracted), measured per model version with
``training.metrics.live_metrics``; where the worker scored a shadow (``FRAUDSTREAM_SHADOW_MODEL``)
the two models side by side on the same decisions (``shadow_comparison``): the evidence for
promoting the challenger or not. ``settle`` leaves out the most recent decisions, whose chargebacks
may still be on their way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from app.errors import FraudstreamError
from training.metrics import live_metrics, shadow_comparison

COLUMNS = ["model_version", "score", "flagged", "review", "shadow_version", "shadow_score", "label"]


def live_decisions(conninfo: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Decisions scored in [since, until): model, scores, flagged, review threshold, label (NaN if none)."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    from app.ui.store import LATEST_LABELS  # noqa: PLC0415

    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        query = sql.SQL(
            "select d.model_version, d.score, d.decision <> 'approve', (d.thresholds->>'review')::float8,"
            " d.shadow_version, d.shadow_score, l.is_fraud::int from decisions d left join ({}) l"
            " using (txn_id) where d.scored_at >= %s and d.scored_at < %s"
        ).format(LATEST_LABELS)
        rows = conn.execute(query, (since, until)).fetchall()
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"score": "float64", "flagged": "bool", "review": "float64",
                         "shadow_score": "float64", "label": "float64"})  # fmt: skip


def live_report(frame: pd.DataFrame) -> dict[str, Any]:
    """Per champion version its live metrics; per champion and shadow pair the comparison."""
    models = {
        version: live_metrics(g["label"].to_numpy(), g["score"].to_numpy(), g["flagged"].to_numpy())
        for version, g in frame.groupby("model_version", sort=True)
    }
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


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def one_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"live: {version}: {m['decisions']:,} decisions, {m['flagged']:,} flagged; {m['confirmed_frauds']:,} "
        f"confirmed frauds, recall {_num(m['recall'])}, precision {_num(m['precision'])}, "
        f"ROC AUC {_num(m['roc_auc'])}, AP {_num(m['average_precision'])} (unlabelled presumed genuine); "
        f"precision {_num(m['precision_settled'])} over the {m['flagged_settled']:,} flagged with a label"
        for version, m in report["models"].items()
    ]
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


def live_job(
    conninfo: str, window: timedelta, settle: timedelta, out: Path | None, now: datetime | None = None
) -> list[str]:
    """The decisions scored in ``window`` up to ``settle`` ago, measured: the report's lines (and JSON
    to ``out``)."""
    until = (now or datetime.now(UTC)) - settle
    since = until - window
    frame = live_decisions(conninfo, since, until)
    if frame.empty:
        raise FraudstreamError(
            f"no decisions scored between {since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC"
        )
    report = {"since": since.isoformat(), "until": until.isoformat(), **live_report(frame)}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return one_lines(report)
