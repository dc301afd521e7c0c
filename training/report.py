"""The model report: Markdown with a metrics table and PNG plots (PR curve, calibration, SHAP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve

from training.dataset import MODEL_FEATURES
from training.metrics import weights

SHAP_SAMPLE = 2_000


def write_report(
    folder: Path, version: str, *, metrics: dict[str, Any], test: pd.DataFrame, score: np.ndarray,
    booster: xgb.Booster, meta: dict[str, Any],
) -> Path:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    y = test["label"].to_numpy()

    precision, recall, _ = precision_recall_curve(y, score, sample_weight=weights(test))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.set(xlabel="recall", ylabel="precision", title=f"PR curve (AP {metrics['average_precision']})")
    fig.tight_layout()
    fig.savefig(folder / "pr_curve.png", dpi=110)
    plt.close(fig)

    prob_true, prob_pred = calibration_curve(y, score, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(prob_pred, prob_true, marker="o")
    ax.plot([0, max(prob_pred.max(), 1e-3)], [0, max(prob_pred.max(), 1e-3)], linestyle="--", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration (test)")
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=110)
    plt.close(fig)

    sample = test.sample(min(SHAP_SAMPLE, len(test)), random_state=0)
    x = sample[list(MODEL_FEATURES)].to_numpy(np.float32)
    contribs = booster.predict(xgb.DMatrix(x, feature_names=list(MODEL_FEATURES)), pred_contribs=True)[:, :-1]
    mean_abs = pd.Series(np.abs(contribs).mean(axis=0), index=list(MODEL_FEATURES)).sort_values(
        ascending=False
    )
    top = mean_abs.head(15)[::-1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh(top.index, top.to_numpy())
    ax.set(xlabel="mean |SHAP value| (log-odds)", title="Global feature importance (TreeSHAP)")
    fig.tight_layout()
    fig.savefig(folder / "shap_summary.png", dpi=110)
    plt.close(fig)

    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, dict))
    scenarios = "\n".join(f"| {k} | {v} |" for k, v in metrics["recall_by_scenario_at_1pct_fpr"].items())
    features = "\n".join(f"| {name} | {value:.4f} |" for name, value in mean_abs.head(10).items())
    operating = operating_table(metrics, meta.get("champion_metrics_on_same_holdout"))
    text = f"""# Model {version}

Periods: {meta["periods"]}
{weighted_note(metrics)}
| metric (test holdout) | value |
|---|---|
{rows}

| scenario | recall at 1% FPR |
|---|---|
{scenarios}

{operating}

Champion on the same holdout: {meta.get("champion_metrics_on_same_holdout") or "none"}

![PR curve](pr_curve.png) ![calibration](calibration.png)

## Top features (mean |SHAP|, {len(sample)} test transactions)

| feature | mean abs SHAP |
|---|---|
{features}

![SHAP summary](shap_summary.png)
"""
    path = folder / "report.md"
    path.write_text(text)
    return path


def weighted_note(metrics: dict[str, Any]) -> str:
    """What the holdout's rows stand for, where some stand for more than themselves."""
    w = metrics.get("weighted")
    if not w:
        return ""
    return (
        f"\nThe holdout's {metrics['rows']:,} rows stand for {w['rows']:,.0f} transactions and"
        f" {w['frauds']:,.1f} frauds: {w['let_through']:,} would-be declines let through to be measured"
        " (`FRAUDSTREAM_EXPLORE_RATE`) also stand for the declines nobody labelled (the history's"
        " `weight`), so the metrics are of every transaction, not only of those the champion did not"
        " decline. The card precision and the calibration plot count the rows as they are.\n"
    )


def operating_table(metrics: dict[str, Any], champion: dict[str, Any] | None) -> str:
    """The deployed thresholds on the holdout: the analysts' queue a day, precision, recall and the
    fraud amount stopped, this model beside the champion (same holdout, same thresholds); and each one's
    threshold for the analysts' capacity, when set."""
    mine = metrics.get("at_thresholds")
    if not mine:
        return ""
    theirs = (champion or {}).get("at_thresholds") or {}
    columns = [
        ("flagged_per_day", "flagged a day"), ("genuine_flagged_per_day", "genuine flagged a day"),
        ("precision", "precision"), ("recall", "recall"), ("fraud_amount_stopped", "fraud amount stopped"),
    ]  # fmt: skip
    head = "| threshold | model | " + " | ".join(title for _, title in columns) + " |"
    lines = [head, "|---|---|" + "---|" * len(columns)]
    for name, op in mine.items():
        for who, point in (("this model", op), ("champion", theirs.get(name))):
            if point:
                cells = " | ".join("-" if point[key] is None else str(point[key]) for key, _ in columns)
                label = f"{point['capacity_per_day']:g} a day:" if "capacity_per_day" in point else name
                lines.append(f"| {label} {point['threshold']} | {who} | {cells} |")
    return (
        "## At the deployed thresholds (test holdout)\n\n" + "\n".join(lines) + "\n\n"
        "\"N a day\" is each model's own threshold for a queue of the analysts' capacity"
        " (`FRAUDSTREAM_REVIEW_CAPACITY_PER_DAY`): a model and the champion compared at the same workload."
    )
