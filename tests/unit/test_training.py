"""Training: leakage, determinism, SHAP additivity after reload, monotone behaviour, promotion, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import average_precision_score

from app.schema import LEGIT
from training.dataset import LABEL, MODEL_FEATURES, Periods, known_labels, one_class_splits, splits
from training.jobs import promotion_decision
from training.metrics import capacity_threshold, card_precision_at_k, evaluate, operating_point, recall_at_fpr
from training.train import INCREASING, fit, predict

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def synthetic(n: int = 6_000, seed: int = 0) -> pd.DataFrame:
    """A training frame whose label depends on speed and amount ratio (enough to learn something)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=n) for name in MODEL_FEATURES})
    frame["kmh_from_prev"] = rng.exponential(50, n)
    frame["amount_to_mean_30d"] = rng.lognormal(0, 0.5, n)
    logit = -6 + 0.01 * frame["kmh_from_prev"] + 1.5 * frame["amount_to_mean_30d"]
    frame[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["split"] = np.where(
        np.arange(n) < 0.7 * n, "train", np.where(np.arange(n) < 0.85 * n, "valid", "test")
    )
    frame["event_time"] = T0 + pd.to_timedelta(np.arange(n) * 60, unit="s")
    frame["card_id"] = [f"c{i % 300}" for i in range(n)]
    return frame


def test_a_label_known_after_the_cutoff_is_not_known() -> None:
    history = pd.DataFrame(
        {
            "is_fraud": [1, 1, 0],
            "label_time": [T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=9), T0 + pd.Timedelta(days=2)],
        }
    )
    assert known_labels(history, T0 + pd.Timedelta(days=5)).tolist() == [1, 0, 0]


def test_periods_follow_the_handbook_protocol() -> None:
    history = pd.DataFrame({"event_time": pd.date_range(T0, periods=60 * 24, freq="h")})
    p = Periods.make(history, None, test_days=7, delay_days=7, valid_days=7)
    assert p.cutoff == T0 + pd.Timedelta(days=60)
    assert p.test_start == p.cutoff - pd.Timedelta(days=7)
    assert p.train_end == p.test_start - pd.Timedelta(days=7), "a label-delay gap between train and test"
    assert p.label_known_for_train == p.test_start
    assert p.valid_start < p.train_end


def test_an_unobserved_decline_is_in_no_set() -> None:
    history = pd.DataFrame({"event_time": pd.date_range(T0, periods=60 * 24, freq="h")})
    p = Periods.make(history, None, test_days=7, delay_days=7, valid_days=7)
    at = pd.Series([T0, p.valid_start, p.train_end, p.test_start] * 2)
    scenario = pd.Series(["none"] * 4 + ["unobserved", "reported", "unobserved", "unobserved"])
    assert splits(at, scenario, p).tolist() == [
        "train", "valid", "gap", "test", "unobserved", "valid", "unobserved", "unobserved",
    ]  # fmt: skip


def test_a_split_with_one_class_only_is_named() -> None:
    frame = synthetic()
    assert one_class_splits(frame) == []
    no_fraud = frame.assign(**{LABEL: np.where(frame["split"] == "test", 0, frame[LABEL])})
    assert one_class_splits(no_fraud) == [
        f"test ({(frame['split'] == 'test').sum():,} rows, 0 labelled fraud)"
    ]
    valid = (frame["split"] == "valid").to_numpy()
    all_fraud = frame.assign(**{LABEL: np.where(valid, 1, frame[LABEL])})
    assert one_class_splits(all_fraud) == [f"valid ({valid.sum():,} rows, {valid.sum():,} labelled fraud)"]


def test_training_is_deterministic_for_a_seed() -> None:
    frame = synthetic()
    a, b = fit(frame, seed=3, max_rounds=60), fit(frame, seed=3, max_rounds=60)
    test = frame[frame["split"] == "test"]
    np.testing.assert_array_equal(predict(a.booster, test), predict(b.booster, test))
    assert a.params == b.params


def test_the_validation_rows_count_by_their_weight() -> None:
    frame = synthetic()
    valid = (frame["split"] == "valid").to_numpy()
    frame["weight"] = np.where(valid & (np.arange(len(frame)) % 3 == 0), 4.0, 1.0)
    fitted = fit(frame, seed=0, max_rounds=40)
    rows = frame[valid]
    score = predict(fitted.booster, rows)
    weighted = average_precision_score(rows[LABEL], score, sample_weight=rows["weight"])
    assert fitted.valid_average_precision == pytest.approx(weighted, abs=1e-12)
    assert fitted.valid_average_precision != pytest.approx(average_precision_score(rows[LABEL], score))


def test_shap_values_add_up_to_the_margin_after_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frame = synthetic()
    fitted = fit(frame, seed=0, max_rounds=60)
    path = tmp_path / "model.ubj"
    fitted.booster.save_model(str(path))
    booster = xgb.Booster()
    booster.load_model(str(path))
    test = frame[frame["split"] == "test"]
    dm = xgb.DMatrix(test[list(MODEL_FEATURES)].to_numpy(np.float32), feature_names=list(MODEL_FEATURES))
    contribs = booster.predict(dm, pred_contribs=True)
    margin = booster.predict(dm, output_margin=True)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(predict(booster, test), predict(fitted.booster, test))


@pytest.mark.parametrize("feature", INCREASING)
def test_a_more_anomalous_transaction_never_scores_lower(feature: str) -> None:
    frame = synthetic()
    fitted = fit(frame, seed=0, max_rounds=60)
    test = frame[frame["split"] == "test"].copy()
    before = predict(fitted.booster, test)
    test[feature] = test[feature] + 10 * test[feature].abs() + 1  # strictly more of it, whatever the sign
    after = predict(fitted.booster, test)
    assert (after >= before - 1e-9).all()


def test_promotion_rule() -> None:
    assert promotion_decision(0.5, None, None)[0] is True
    assert promotion_decision(0.61, 0.60, "v1") == (
        True, "promoted to champion (AP 0.61 > v1 0.6 on the same holdout)",
    )  # fmt: skip
    assert promotion_decision(0.60, 0.60, "v1")[0] is False, "a tie keeps the champion"
    assert promotion_decision(0.40, 0.60, "v1")[0] is False


def test_a_better_model_that_would_flood_the_queue_is_not_promoted_on_its_own() -> None:
    assert promotion_decision(0.7, 0.6, "v1", alerts=(40.0, 20.0), max_alert_growth=2.0)[0] is True
    assert promotion_decision(0.7, 0.6, "v1", alerts=(41.0, 20.0), max_alert_growth=2.0) == (
        False,
        "kept as candidate: AP 0.7 > v1 0.6, but at the review threshold it would flag 41.0 decisions a day"
        " against the champion's 20.0 (more than 2x, FRAUDSTREAM_PROMOTE_MAX_ALERT_GROWTH); promote it by"
        " hand if intended",
    )
    assert promotion_decision(0.7, 0.6, "v1", alerts=(2.0, 0.0), max_alert_growth=2.0)[0] is True, (
        "a champion flagging nothing counts as one a day"
    )
    assert promotion_decision(0.7, 0.6, "v1", alerts=(500.0, 1.0), max_alert_growth=0)[0] is True, "0: off"
    assert promotion_decision(0.5, 0.6, "v1", alerts=(1.0, 20.0), max_alert_growth=2.0)[0] is False


def test_operating_points_count_the_queue_a_day_and_what_it_stops() -> None:
    test = pd.DataFrame({
        "label": [1, 1, 0, 0, 0], "amount": [100.0, 300.0, 10.0, 20.0, 30.0],
        "event_time": [T0 + pd.Timedelta(hours=h) for h in (0, 5, 10, 20, 47)],
    })  # fmt: skip
    score = np.array([0.95, 0.6, 0.7, 0.2, 0.1])
    assert operating_point(test, score, 0.5, days=2) == {
        "threshold": 0.5, "flagged_per_day": 1.5, "genuine_flagged_per_day": 0.5, "precision": 0.6667,
        "recall": 1.0, "fraud_amount_stopped": 1.0,
    }  # fmt: skip
    assert operating_point(test, score, 0.9, days=2) == {
        "threshold": 0.9, "flagged_per_day": 0.5, "genuine_flagged_per_day": 0.0, "precision": 1.0,
        "recall": 0.5, "fraud_amount_stopped": 0.25,
    }  # fmt: skip
    assert operating_point(test, score, 0.99, days=2)["precision"] is None, "nothing flagged"
    test["fraud_scenario"] = ["card_testing", "card_testing", LEGIT, LEGIT, LEGIT]
    test["card_id"] = ["a", "a", "b", "c", "d"]
    points = evaluate(test, score, {"review": 0.5, "decline": 0.9})["at_thresholds"]
    assert points["review"]["flagged_per_day"] == round(3 / (47 / 24), 1), "days: the holdout's span"
    at = evaluate(test, score, {"review": 0.5}, days=2, capacity_per_day=1)["at_thresholds"]
    assert at["capacity"] == {
        "threshold": 0.7, "flagged_per_day": 1.0, "genuine_flagged_per_day": 0.5, "precision": 0.5,
        "recall": 0.5, "fraud_amount_stopped": 0.25, "capacity_per_day": 1,
    }, "the model's own threshold for two reviews in two days"  # fmt: skip
    assert "capacity" not in evaluate(test, score, {"review": 0.5}, days=2)["at_thresholds"]


def test_a_row_of_weight_k_counts_as_k_rows() -> None:
    rng = np.random.default_rng(3)
    n = 400
    test = pd.DataFrame({
        "label": (rng.random(n) < 0.1).astype(int), "amount": rng.uniform(1, 500, n),
        "event_time": [T0 + pd.Timedelta(minutes=7 * i) for i in range(n)],
        "fraud_scenario": rng.choice(["card_testing", "reported"], n), "card_id": [f"c{i}" for i in range(n)],
    })  # fmt: skip
    test.loc[test["label"] == 0, "fraud_scenario"] = LEGIT
    score = np.round(rng.random(n) * 0.6 + 0.4 * test["label"].to_numpy(), 3)
    k = np.where(rng.random(n) < 0.05, 4, 1)  # a few stand for four
    weighted = evaluate(
        test.assign(weight=k.astype(float)), score, {"review": 0.5}, days=2, capacity_per_day=30
    )
    repeated = test.loc[test.index.repeat(k)].reset_index(drop=True)
    plain = evaluate(repeated, np.repeat(score, k), {"review": 0.5}, days=2, capacity_per_day=30)
    same = ["roc_auc", "average_precision", "recall_at_1pct_fpr", "threshold_at_1pct_fpr",
            "recall_by_scenario_at_1pct_fpr", "at_thresholds"]  # fmt: skip
    assert {m: weighted[m] for m in same} == {m: plain[m] for m in same}
    assert weighted["weighted"] == {
        "rows": plain["rows"],
        "frauds": plain["frauds"],
        "let_through": int((k > 1).sum()),
    }
    assert weighted["rows"] == n, "rows as they are"
    assert "weighted" not in plain, "weights only where some differ"


def test_the_capacity_threshold_never_lets_ties_overfill_the_queue() -> None:
    score = np.array([0.9, 0.8, 0.8, 0.8, 0.3, 0.1])
    assert capacity_threshold(score, per_day=1, days=3) == 0.9, "0.8 would flag 4 of the 3 allowed"
    assert capacity_threshold(score, per_day=2, days=2) == 0.8
    assert capacity_threshold(score, per_day=5, days=2) == 0.1, "room for all"
    assert capacity_threshold(score, per_day=0.2, days=2) >= 1.0, "room for none"


def test_recall_at_fpr_and_card_precision() -> None:
    y = np.array([0] * 98 + [1, 1])
    score = np.concatenate([np.linspace(0, 0.5, 98), [0.9, 0.45]])
    recall, threshold = recall_at_fpr(y, score, max_fpr=0.01)
    assert recall == 0.5
    assert threshold == 0.9
    test = pd.DataFrame({"event_time": [T0] * 4, "card_id": ["a", "a", "b", "c"], "label": [0, 1, 0, 0]})
    assert card_precision_at_k(test, np.array([0.1, 0.2, 0.9, 0.3]), k=2) == 0.0
    assert card_precision_at_k(test, np.array([0.1, 0.95, 0.9, 0.3]), k=2) == 0.5
