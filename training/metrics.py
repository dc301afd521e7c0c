"""Evaluation metrics on a time-based holdout (pure functions of labels and scores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from app.schema import LEGIT


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> tuple[float, float]:
    """(recall, threshold) at the highest threshold whose false-positive rate stays <= ``max_fpr``."""
    fpr, tpr, thresholds = roc_curve(y, score)
    ok = np.flatnonzero(fpr <= max_fpr)
    best = ok[-1]
    return float(tpr[best]), float(thresholds[best])


def card_precision_at_k(test: pd.DataFrame, score: np.ndarray, k: int = 100) -> float:
    """Handbook card precision@k: per day, the k cards with the highest score that day; the share
    of them with at least one fraudulent transaction that day; averaged over days."""
    frame = pd.DataFrame(
        {"day": test["event_time"].dt.floor("D"), "card": test["card_id"], "y": test["label"], "s": score}
    )
    per_card = frame.groupby(["day", "card"]).agg(s=("s", "max"), y=("y", "max")).reset_index()
    daily = per_card.sort_values("s", ascending=False).groupby("day").head(k).groupby("day")["y"].mean()
    return float(daily.mean())


def evaluate(test: pd.DataFrame, score: np.ndarray) -> dict[str, object]:
    y = test["label"].to_numpy()
    recall, threshold = recall_at_fpr(y, score)
    flagged = score >= threshold
    scenarios = {
        name: round(float(flagged[(test["fraud_scenario"] == name).to_numpy() & (y == 1)].mean()), 4)
        for name in sorted(set(test.loc[test["label"] == 1, "fraud_scenario"]) - {LEGIT})
    }
    return {
        "rows": len(test),
        "frauds": int(y.sum()),
        "roc_auc": round(float(roc_auc_score(y, score)), 4),
        "average_precision": round(float(average_precision_score(y, score)), 4),
        "card_precision_at_100": round(card_precision_at_k(test, score, 100), 4),
        "recall_at_1pct_fpr": round(recall, 4),
        "threshold_at_1pct_fpr": round(threshold, 6),
        "recall_by_scenario_at_1pct_fpr": scenarios,
    }
