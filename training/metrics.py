"""Evaluation metrics, on a time-based holdout and on live decisions: pure functions of labels and scores."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from app.schema import LEGIT, WEIGHT


def weights(test: pd.DataFrame) -> np.ndarray:
    """How many transactions each holdout row stands for (the history's ``WEIGHT``; 1 without one)."""
    return test[WEIGHT].to_numpy(dtype=float) if WEIGHT in test else np.ones(len(test))


def recall_at_fpr(
    y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01, w: np.ndarray | None = None
) -> tuple[float, float]:
    """(recall, threshold) at the highest threshold whose false-positive rate stays <= ``max_fpr``
    (``w``: each row's weight)."""
    fpr, tpr, thresholds = roc_curve(y, score, sample_weight=w)
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


def operating_point(test: pd.DataFrame, score: np.ndarray, threshold: float, days: float) -> dict[str, Any]:
    """What a threshold would do to the holdout's ``days``: how many decisions it flags a day (the
    analysts' queue), how many of them genuine, its precision and recall, and the share of the
    frauds' amount it stops (``amount`` being the transaction's); each row counted by its weight."""
    y = test["label"].to_numpy() == 1
    flagged = score >= threshold
    w = weights(test)
    amount = test["amount"].to_numpy(dtype=float) * w
    fraud_amount = float(amount[y].sum())
    return {
        "threshold": threshold,
        "flagged_per_day": round(float(w[flagged].sum()) / days, 1),
        "genuine_flagged_per_day": round(float(w[flagged & ~y].sum()) / days, 1),
        "precision": _share(float(w[flagged & y].sum()), float(w[flagged].sum())),
        "recall": _share(float(w[flagged & y].sum()), float(w[y].sum())),
        "fraud_amount_stopped": round(float(amount[flagged & y].sum()) / fraud_amount, 4)
        if fraud_amount
        else None,
    }


def capacity_threshold(score: np.ndarray, per_day: float, days: float, w: np.ndarray | None = None) -> float:
    """The lowest threshold that flags at most ``per_day`` of the holdout's decisions a day (ties never
    push it over; ``w``: each row's weight): where the review threshold would sit for a team that
    reviews that many a day. Above every score (1.0 or more) when the capacity is under one decision."""
    allowed = per_day * days
    values, at = np.unique(score, return_inverse=True)  # ascending
    counts = np.bincount(at, weights=w, minlength=len(values))
    flagged_from = counts[::-1].cumsum()[::-1]  # decisions at or above each value
    fits = np.flatnonzero(flagged_from <= allowed)
    if not len(fits):
        return float(max(1.0, np.nextafter(values[-1], np.inf)))
    return float(values[fits[0]])


def evaluate(
    test: pd.DataFrame,
    score: np.ndarray,
    thresholds: dict[str, float] | None = None,
    days: float | None = None,
    capacity_per_day: float = 0.0,
) -> dict[str, object]:
    """A model's scores on the holdout (both classes in it: ``one_class_splits``); with ``thresholds``
    (name -> score, the deployed review and decline ones) each one's ``operating_point`` over the
    holdout's ``days`` (default: the span of its transactions, at least one); with
    ``capacity_per_day`` also the operating point of this model's own ``capacity_threshold`` (as
    ``capacity``): two models compared at the same queue size, whatever their scores' scale.

    Each row counts by its weight (``weights``): a would-be decline let through to be measured also
    stands for the declines nobody labelled, so that the metrics are of every transaction, not only of
    those the champion did not decline; then ``weighted`` says how many rows and frauds the holdout
    stands for. The card precision counts the rows as they are (a card's day has no weight)."""
    y = test["label"].to_numpy()
    w = weights(test)
    recall, threshold = recall_at_fpr(y, score, w=w)
    flagged = score >= threshold
    scenarios = {
        name: round(float(np.average(flagged[mine], weights=w[mine])), 4)
        for name in sorted(set(test.loc[test["label"] == 1, "fraud_scenario"]) - {LEGIT})
        if (mine := (test["fraud_scenario"] == name).to_numpy() & (y == 1)).any()
    }
    operating = {}
    if thresholds:
        operating["at_thresholds"] = _operating(test, score, thresholds, days, capacity_per_day)
    weighted = {}
    if (w != 1).any():
        weighted["weighted"] = {"rows": round(float(w.sum()), 1), "frauds": round(float(w[y == 1].sum()), 1),
                                "let_through": int((w > 1).sum())}  # fmt: skip
    return {
        "rows": len(test),
        "frauds": int(y.sum()),
        **weighted,
        **_ranking(y, score, w),
        "card_precision_at_100": round(card_precision_at_k(test, score, 100), 4),
        "recall_at_1pct_fpr": round(recall, 4),
        "threshold_at_1pct_fpr": round(threshold, 6),
        "recall_by_scenario_at_1pct_fpr": scenarios,
        **operating,
    }


def _operating(
    test: pd.DataFrame, score: np.ndarray, thresholds: dict[str, float], days: float | None, capacity: float
) -> dict[str, dict[str, Any]]:
    if days is None:
        span = test["event_time"].max() - test["event_time"].min()
        days = max(span.total_seconds() / 86400, 1.0)
    if capacity:
        limit = capacity_threshold(score, capacity, days, weights(test))
        thresholds = {**thresholds, "capacity": round(limit, 6)}
    points = {name: operating_point(test, score, t, days) for name, t in thresholds.items()}
    if capacity:
        points["capacity"]["capacity_per_day"] = capacity
    return points


def _ranking(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> dict[str, float | None]:
    """ROC AUC and average precision (``w``: each row's weight), or None where one class is missing."""
    if y.min(initial=1) == y.max(initial=0):
        return {"roc_auc": None, "average_precision": None}
    return {
        "roc_auc": round(float(roc_auc_score(y, score, sample_weight=w)), 4),
        "average_precision": round(float(average_precision_score(y, score, sample_weight=w)), 4),
    }


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(part: int, whole: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval (95 %) of the share ``part / whole``: what the share could be, given
    how few decisions it was measured on (recall on 4 confirmed frauds says little). None for no
    ``whole``."""
    if not whole:
        return None
    return wilson_share(part / whole, whole, z)


def wilson_share(share: float, n: float, z: float = Z95) -> list[float]:
    """``wilson`` of a share measured on ``n`` decisions (an effective number where they are weighted)."""
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


NOT_KNOWN = "not known"  # a confirmed fraud whose label gave no type


def recall_by_type(
    label: np.ndarray, flagged: np.ndarray, fraud_type: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per fraud type (the labels' ``fraud_type``; ``NOT_KNOWN`` for none), the confirmed frauds, how
    many the model flagged, and its recall with a 95 % interval: which kinds of fraud it misses live."""
    fraud = np.nan_to_num(label.astype(float)) == 1
    types = np.where(pd.isna(fraud_type), NOT_KNOWN, fraud_type.astype(object))
    out = {}
    for name in sorted(set(types[fraud])):
        mine = fraud & (types == name)
        caught = int((flagged & mine).sum())
        frauds = int(mine.sum())
        out[str(name)] = {"frauds": frauds, "flagged": caught, "recall": _share(caught, frauds),
                          "recall_95": wilson(caught, frauds)}  # fmt: skip
    return out


def live_metrics(label: np.ndarray, score: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """How a model did on live decisions, from the labels that came back.

    ``label``: 1 confirmed fraud, 0 confirmed genuine, NaN no label (yet); ``flagged``: decided review
    or decline. Recall counts the confirmed frauds (analysts' verdicts and chargebacks, which also
    bring the frauds nobody flagged). Precision and the ranking metrics presume an unlabelled
    decision genuine, as a bank does once its chargeback window has passed; ``precision_settled``
    counts only the flagged decisions a label settled (analysts' reviews: with chargebacks alone,
    which only ever say fraud, it is 1)."""
    fraud = label == 1
    settled = ~np.isnan(label)
    caught = int((fraud & flagged).sum())
    return {
        "decisions": len(label),
        "flagged": int(flagged.sum()),
        "labelled": int(settled.sum()),
        "confirmed_frauds": int(fraud.sum()),
        "frauds_flagged": caught,
        "recall": _share(caught, int(fraud.sum())),
        "recall_95": wilson(caught, int(fraud.sum())),
        "precision": _share(caught, int(flagged.sum())),
        "precision_95": wilson(caught, int(flagged.sum())),
        "flagged_settled": int((flagged & settled).sum()),
        "precision_settled": _share(caught, int((flagged & settled).sum())),
        "precision_settled_95": wilson(caught, int((flagged & settled).sum())),
        **_ranking(fraud.astype(np.int8), score),
    }


def weighted_live_metrics(
    label: np.ndarray, score: np.ndarray, flagged: np.ndarray, w: np.ndarray
) -> dict[str, Any]:
    """``live_metrics``' recall, precision and ranking with each decision counted by its weight ``w``
    (``app.live_performance.live_report``: a would-be decline let through stands for the declines
    nobody labelled, which weigh 0), with the sums they rest on. The 95 % intervals use the Kish
    effective number of decisions, (sum w)^2 / sum w^2: twenty rows of weight 20 are not 400."""
    fraud = label == 1
    caught = fraud & flagged

    def share(part: np.ndarray, whole: np.ndarray) -> tuple[float | None, list[float] | None]:
        total = float(w[whole].sum())
        if not total:
            return None, None
        value = float(w[part].sum()) / total
        n = total * total / float((w[whole] ** 2).sum())
        return round(value, 4), wilson_share(value, n)

    recall, recall_95 = share(caught, fraud)
    precision, precision_95 = share(caught, flagged)
    kept = w > 0
    return {
        "decisions": round(float(w.sum()), 1),
        "flagged": round(float(w[flagged].sum()), 1),
        "confirmed_frauds": round(float(w[fraud].sum()), 1),
        "frauds_flagged": round(float(w[caught].sum()), 1),
        "let_through": int((w > 1).sum()),
        "left_out": int((~kept).sum()),
        "recall": recall,
        "recall_95": recall_95,
        "precision": precision,
        "precision_95": precision_95,
        **_ranking(fraud[kept].astype(np.int8), score[kept], w[kept]),
    }


def measured_declines(
    label: np.ndarray, explored: np.ndarray, pending: np.ndarray | None = None
) -> dict[str, Any]:
    """The model's would-be declines let through to be measured (``Policy.explores``): how many, how
    many are ``pending`` (unlabelled, their chargeback may still come: left out), how many turned out
    fraud (an unlabelled one past its chargeback window presumed genuine), and that share of the rest
    with its 95 % interval: the precision of the model's declines, measured where nothing else can
    measure it (a declined payment brings no chargeback); one minus it, the good customers' payments
    they refuse."""
    waiting = explored & pending if pending is not None else np.zeros_like(explored)
    frauds = int((explored & (label == 1)).sum())
    n = int((explored & ~waiting).sum())
    return {"explored": int(explored.sum()), "pending": int(waiting.sum()), "frauds": frauds,
            "decline_precision": _share(frauds, n), "decline_precision_95": wilson(frauds, n)}  # fmt: skip


def shadow_comparison(
    label: np.ndarray, champion: np.ndarray, shadow: np.ndarray, review: np.ndarray
) -> dict[str, Any]:
    """Champion against shadow on the same live decisions (both scored every one of them).

    At the review threshold: the decisions each score alone would flag. At equal volume: the shadow's
    ``k`` highest scores against the champion's flags, ``k`` the champion's count, i.e. the frauds
    each would have put before the same analysts' workload."""
    fraud = label == 1
    flags = champion >= review
    k = int(flags.sum())
    top = np.zeros(len(shadow), dtype=bool)
    top[np.argsort(-shadow, kind="stable")[:k]] = True
    by_score = {
        name: {
            "flagged": int((s >= review).sum()),
            "frauds_flagged": int((fraud & (s >= review)).sum()),
            **_ranking(fraud.astype(np.int8), s),
        }
        for name, s in (("champion", champion), ("shadow", shadow))
    }
    return {
        "decisions": len(label),
        "confirmed_frauds": int(fraud.sum()),
        **by_score,
        "equal_volume": {
            "flagged": k,
            "champion_frauds": int((fraud & flags).sum()),
            "shadow_frauds": int((fraud & top).sum()),
        },
    }
