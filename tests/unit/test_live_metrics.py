"""Live performance from the labels that came back: counts and metrics worked out by hand."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from app.audit_window import SLICES, stretches
from app.live_performance import live_report
from training.metrics import (
    NOT_KNOWN,
    live_metrics,
    recall_by_type,
    shadow_comparison,
    weighted_live_metrics,
    wilson,
    wilson_share,
)

NAN = np.nan
# 8 decisions: two confirmed frauds (one flagged, one found by a chargeback), one flagged decision
# confirmed genuine, one flagged with no label (its verdict retracted), the rest never labelled.
LABEL = np.array([1, 0, NAN, 1, NAN, NAN, NAN, NAN])
CHAMPION = np.array([0.95, 0.70, 0.60, 0.40, 0.30, 0.20, 0.10, 0.05])
SHADOW = np.array([0.90, 0.20, 0.30, 0.80, 0.10, 0.05, 0.04, 0.03])
REVIEW = np.full(8, 0.5)


def test_live_metrics_count_what_the_labels_settled() -> None:
    m = live_metrics(LABEL, CHAMPION, CHAMPION >= 0.5)
    assert m == {
        "decisions": 8,
        "flagged": 3,
        "labelled": 3,
        "confirmed_frauds": 2,
        "frauds_flagged": 1,
        "recall": 0.5,
        "recall_95": [0.0945, 0.9055],  # Wilson, 1 of 2 (scipy.stats.binomtest's proportion_ci agrees)
        "precision": round(1 / 3, 4),
        "precision_95": [0.0615, 0.7923],  # 1 of 3
        "flagged_settled": 2,
        "precision_settled": 0.5,
        "precision_settled_95": [0.0945, 0.9055],
        # frauds 0.95 and 0.40 against the six others: 6 + 4 of 12 pairs ranked right
        "roc_auc": pytest.approx(10 / 12, abs=1e-4),
        # ranks 1 and 4: (1/1 + 2/4) / 2
        "average_precision": pytest.approx(0.75, abs=1e-4),
    }


@pytest.mark.parametrize(
    ("part", "whole"), [(0, 1), (0, 5), (5, 5), (1, 3), (50, 100), (3, 1_000), (999, 1_000)]
)
def test_wilson_intervals_are_scipys(part: int, whole: int) -> None:
    from scipy.stats import binomtest  # noqa: PLC0415 - the reference, for this test only

    ci = binomtest(part, whole).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(part, whole) == [round(float(ci.low), 4), round(float(ci.high), 4)]
    assert wilson(part, 0) is None


def test_live_metrics_without_labels_give_no_ratios() -> None:
    m = live_metrics(np.full(3, NAN), np.array([0.9, 0.1, 0.2]), np.array([True, False, False]))
    assert (m["confirmed_frauds"], m["recall"], m["precision_settled"], m["roc_auc"]) == (0, None, None, None)
    assert (m["recall_95"], m["precision_settled_95"]) == (None, None)
    assert m["precision"] == 0.0, "one flag, no fraud known: presumed genuine"


def test_shadow_comparison_at_equal_volume_and_at_the_threshold() -> None:
    c = shadow_comparison(LABEL, CHAMPION, SHADOW, REVIEW)
    # the champion flags 3 (0.95, 0.70, 0.60) and catches one fraud; the shadow's top 3 (0.90, 0.80,
    # 0.30) hold both
    assert c["equal_volume"] == {"flagged": 3, "champion_frauds": 1, "shadow_frauds": 2}
    assert (c["champion"]["flagged"], c["champion"]["frauds_flagged"]) == (3, 1)
    assert (c["shadow"]["flagged"], c["shadow"]["frauds_flagged"]) == (2, 2)
    assert c["shadow"]["roc_auc"] == 1.0
    assert c["champion"]["roc_auc"] == pytest.approx(10 / 12, abs=1e-4)
    assert (c["decisions"], c["confirmed_frauds"]) == (8, 2)


def test_stretches_cover_the_fraction_of_every_slot_without_overlap() -> None:
    since = datetime(2026, 3, 1, tzinfo=UTC)
    until = since + timedelta(days=7)
    for fraction in (0.001, 0.2, 0.9):
        spans = sorted(stretches(since, until, fraction))
        assert all(since <= lo < hi <= until for lo, hi in spans)
        assert all(a[1] <= b[0] for a, b in pairwise(spans)), "no decision is read twice"
        covered = sum((hi - lo for lo, hi in spans), timedelta(0))
        assert abs(covered - fraction * (until - since)) < timedelta(milliseconds=5), fraction
        step = (until - since) / SLICES
        per_slot = Counter(int((lo - since) / step) for lo, _ in spans)
        assert set(per_slot) == set(range(SLICES)), "a stretch in every slot"


def test_stretches_do_not_fall_in_step_with_regular_traffic() -> None:
    """Decisions every 15.12 s: stretches at one offset in every slot read none or far too many."""
    since = datetime(2026, 3, 1, tzinfo=UTC)
    until = since + timedelta(days=7)
    times = np.array([(since + timedelta(seconds=15.12 * i)).timestamp() for i in range(40_000)])
    for fraction in (0.001, 0.1):
        read = sum(
            int(((times >= lo.timestamp()) & (times < hi.timestamp())).sum())
            for lo, hi in stretches(since, until, fraction)
        )
        assert read == pytest.approx(fraction * len(times), rel=0.35, abs=15), fraction


def test_recall_by_type_counts_confirmed_frauds_of_each_kind() -> None:
    label = np.array([1, 1, 1, 0, np.nan, 1, 1])
    flagged = np.array([True, False, True, True, True, False, True])
    types = np.array(["card_testing", "card_testing", None, "card_testing", None, "account_takeover", None],
                     dtype=object)  # fmt: skip
    by_type = recall_by_type(label, flagged, types)
    assert {k: (v["flagged"], v["frauds"], v["recall"]) for k, v in by_type.items()} == {
        "account_takeover": (0, 1, 0.0), "card_testing": (1, 2, 0.5), NOT_KNOWN: (2, 2, 1.0),
    }, "a genuine or unlabelled decision counts in no type"  # fmt: skip
    assert by_type["card_testing"]["recall_95"] == wilson(1, 2)
    assert recall_by_type(np.array([0.0, np.nan]), np.array([True, False]), np.array([None, None])) == {}


def test_weighted_live_metrics_count_a_decision_of_weight_k_as_k_decisions() -> None:
    w = np.array([1.0, 3.0, 0.0, 2.0, 1.0, 1.0, 4.0, 1.0])
    flagged = CHAMPION >= 0.5
    label = np.where(np.isnan(LABEL), 0.0, LABEL)  # the weighted view knows every outcome it counts
    m = weighted_live_metrics(label, CHAMPION, flagged, w)
    k = w.astype(int)
    plain = live_metrics(np.repeat(label, k), np.repeat(CHAMPION, k), np.repeat(flagged, k))
    for name in ("recall", "precision", "roc_auc", "average_precision"):
        assert m[name] == pytest.approx(plain[name], abs=1e-4), name
    assert (m["decisions"], m["confirmed_frauds"], m["let_through"], m["left_out"]) == (13.0, 3.0, 3, 1)
    ones = weighted_live_metrics(label, CHAMPION, flagged, np.ones(8))
    unweighted = live_metrics(label, CHAMPION, flagged)
    assert (ones["recall_95"], ones["precision_95"]) == (unweighted["recall_95"], unweighted["precision_95"])
    assert m["recall_95"] == wilson_share(m["recall"], 3.0**2 / (1 + 2**2)), "Kish: 3 frauds weigh as 1.8"


def test_known_let_through_declines_stand_for_the_declines_nobody_labelled() -> None:
    now = datetime(2027, 3, 20, tzinfo=UTC)
    old, recent = now - timedelta(days=10), now - timedelta(days=1)
    rows = [  # name, flagged, label, explored, explorable, event_time
        ("e1", True, 1.0, True, False, old),  # let through, charged back
        ("e2", True, NAN, True, False, old),  # let through, past its chargeback window: genuine
        ("e3", True, NAN, True, False, recent),  # let through, too recent to tell: not known
        ("u1", True, NAN, False, True, old), ("u2", True, NAN, False, True, old),
        ("u3", True, NAN, False, True, recent),  # declines nobody labelled: not known
        ("l1", True, 1.0, False, True, old),  # a decline an analyst labelled: itself
        ("x1", True, NAN, False, False, old),  # a rule's decline, unlabelled: none stands for it
        ("a1", False, NAN, False, False, now), ("a2", False, 1.0, False, False, old),
    ]  # fmt: skip
    frame = pd.DataFrame({
        "model_version": "v1", "score": np.linspace(0.99, 0.1, len(rows)),
        "flagged": [r[1] for r in rows], "review": 0.5, "shadow_version": None, "shadow_score": NAN,
        "label": [r[2] for r in rows], "fraud_type": None, "explored": [r[3] for r in rows],
        "explorable": [r[4] for r in rows], "explore_rate": 0.25, "event_time": [r[5] for r in rows],
        "declined": [r[0][0] in "ulx" for r in rows],
    })  # fmt: skip
    weighted = live_report(frame)["models"]["v1"]["weighted"]
    assert (weighted["let_through"], weighted["left_out"]) == (2, 5), "e1, e2 stand for u1, u2, u3, e3"
    assert weighted["decisions"] == len(rows) - 1, (
        "each counted once by those known, but x1: none stands for it"
    )
    assert weighted["confirmed_frauds"] == 3 + 1 + 1, "e1 for 3, l1 and a2"
    assert weighted["recall"] == 0.8
    assert weighted["precision"] == round(4 / 7, 4), "e1 (for 3) and l1 of the 7 flagged: e1, e2 (3 each), l1"
    settled = live_report(frame, clock=now + timedelta(days=30))["models"]["v1"]["weighted"]
    assert (settled["let_through"], settled["left_out"]) == (3, 4), "the audit's clock: e3 is settled"
    assert settled["confirmed_frauds"] == 2 + 1 + 1, "e1 stands for 2 now"
    frame["explored"] = False
    assert "weighted" not in live_report(frame)["models"]["v1"], "nothing let through: as before"
