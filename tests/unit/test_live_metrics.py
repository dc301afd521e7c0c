"""Live performance from the labels that came back: counts and metrics worked out by hand."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from app.audit_window import SLICES, stretches
from training.metrics import NOT_KNOWN, live_metrics, recall_by_type, shadow_comparison, wilson

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
