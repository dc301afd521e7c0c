"""``fraudstream models live``: how the champion, and a shadow challenger, did on live traffic.

The decision audit of a window joined to the labels that came back for it (analysts' verdicts and
chargebacks; per transaction the latest one not retracted), measured per model version with
``training.metrics.live_metrics``; where the worker scored a shadow (``FRAUDSTREAM_SHADOW_MODEL``)
the two models side by side on the same decisions (``shadow_comparison``): the evidence for
promoting the challenger or not. ``settle`` leaves out the most recent decisions, whose chargebacks
may still be on their way.

A window can hold more decisions than a page load or a report should read (50 txn/s is 30 million a
week; reading and measuring a million took ~6.5 s and 0.9 GB here). With ``at_most`` a window
estimated to hold more is sampled: every decision scored in stretches of time, one in each of
``SLICES`` equal slots of the window, whose length is chosen so that about ``at_most`` are read.
Each decision has the same chance to be in the sample whenever it was scored, so the labels' maturity and the
mix of models over the window are those of the whole window (the latest decisions alone would have
the fewest chargebacks back). The counts are the sample's; the shares and the ranking metrics
estimate the window's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.errors import FraudstreamError
from training.metrics import live_metrics, shadow_comparison

COLUMNS = ["model_version", "score", "flagged", "review", "shadow_version", "shadow_score", "label"]
SLICES = 1_000  # stretches of time a sampled window is read in
PROBE = 1e-3  # the share of the window's time read to estimate how many decisions it holds


@dataclass(frozen=True)
class Live:
    frame: pd.DataFrame  # model, scores, flagged, review threshold, label (NaN if none)
    fraction: float  # the share of the window's time read: 1, all of it
    in_window: int  # the window's decisions: len(frame) / fraction

    def sample(self) -> dict[str, Any]:
        return {"fraction": round(self.fraction, 6), "decisions_read": len(self.frame),
                "decisions_in_window": self.in_window}  # fmt: skip


def stretches(
    since: datetime, until: datetime, fraction: float, seed: int = 0
) -> list[tuple[datetime, datetime]]:
    """``SLICES`` equal slots of [since, until); in each, ``fraction`` of it from a random offset, wrapping
    round to the slot's start: every instant is in them with chance ``fraction`` (evenly spaced
    stretches alone could fall in step with regular traffic and read none, or too much, of it)."""
    step = (until - since) / SLICES
    width = step * fraction
    out = []
    for i, offset in enumerate(np.random.default_rng(seed).random(SLICES)):
        slot = since + i * step
        start = slot + step * float(offset)
        spill = start + width - (slot + step)
        if spill > timedelta(0):
            out += [(slot, slot + spill), (start, slot + step)]
        else:
            out.append((start, start + width))
    return [(lo, min(hi, until)) for lo, hi in out if lo < until]  # step is rounded to microseconds


def live_decisions(conninfo: str, since: datetime, until: datetime, at_most: int | None = None) -> Live:
    """Decisions scored in [since, until); where the window is estimated to hold more than ``at_most``,
    those scored in ``stretches`` of it, about ``at_most`` of them."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    from app.ui.store import LATEST_LABELS  # noqa: PLC0415

    select = sql.SQL(
        "select d.model_version, d.score, d.decision <> 'approve', (d.thresholds->>'review')::float8,"
        " d.shadow_version, d.shadow_score, l.is_fraud::int from {} left join ({}) l using (txn_id)"
    )
    sampled = sql.SQL(
        "unnest(%s::timestamptz[], %s::timestamptz[]) s(lo, hi) join decisions d"
        " on d.scored_at >= s.lo and d.scored_at < s.hi"
    )

    def bounds(fraction: float) -> tuple[list[datetime], list[datetime]]:
        lo, hi = zip(*stretches(since, until, fraction), strict=True)
        return list(lo), list(hi)

    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        fraction = 1.0
        if at_most is not None:
            # the planner takes each stretch for a tenth of the table and compiles the query (JIT):
            # ~90 ms of a 140 ms probe of 20,000 rows
            conn.execute("set jit = off")
            row = conn.execute(sql.SQL("select count(*) from {}").format(sampled), bounds(PROBE)).fetchone()
            estimate = (row[0] if row else 0) / PROBE
            fraction = min(1.0, at_most / estimate) if estimate else 1.0
        if fraction < 1.0:
            rows = conn.execute(select.format(sampled, LATEST_LABELS), bounds(fraction)).fetchall()
        else:
            where = sql.SQL(" where d.scored_at >= %s and d.scored_at < %s")
            rows = conn.execute(
                select.format(sql.SQL("decisions d"), LATEST_LABELS) + where, (since, until)
            ).fetchall()
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"score": "float64", "flagged": "bool",
                                                        "review": "float64", "shadow_score": "float64",
                                                        "label": "float64"})  # fmt: skip
    return Live(frame, fraction, round(len(frame) / fraction))


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
    at_most: int | None = None,
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
    report = {"since": since.isoformat(), "until": until.isoformat(), "sample": live.sample(),
              **live_report(live.frame)}  # fmt: skip
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    sampled = sample_line(report["sample"])
    return ([f"live: {sampled}"] if sampled else []) + one_lines(report)
