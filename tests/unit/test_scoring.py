"""Scoring without services: decisions, exact TreeSHAP reasons, rules, replay, caches, model reload."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.errors import FraudstreamError
from app.schema import Transaction
from app.scoring.champion import Champion
from app.scoring.decide import Policy, replay, score_batch, vectors
from app.scoring.merchants import MerchantCache
from app.scoring.model import Model
from app.scoring.reasons import as_mapping, describe, reason_codes
from app.scoring.rules import Rules
from app.worker.handoff import feature_matrix
from features.card import FEATURE_NAMES
from features.merchant import MERCHANT_FEATURES
from tests.unit.test_training import synthetic
from training.dataset import MODEL_FEATURES
from training.registry import ModelRow
from training.train import fit

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def save(model_dir: Path, seed: int = 0) -> Path:
    fitted = fit(synthetic(seed=seed), seed=seed, max_rounds=40)
    model_dir.mkdir(parents=True)
    fitted.booster.save_model(str(model_dir / "model.ubj"))
    meta = {"features": list(MODEL_FEATURES), "params": fitted.params}
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    return model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(save(tmp_path_factory.mktemp("m") / "v1"), "v1")


def txn(i: int, **over: object) -> Transaction:
    base = {"txn_id": f"t{i}", "event_time": NOW, "card_id": f"card-{i}", "merchant_id": "m1",
            "amount": 20.0, "currency": "EUR", "mcc": "5411", "channel": "card_present", "lat": 48.8,
            "lon": 2.3, "country": "FR"}  # fmt: skip
    return Transaction.model_validate({**base, **over})


def matrix(model: Model, kmh: list[float]) -> np.ndarray:
    card = [{**dict.fromkeys(FEATURE_NAMES), "kmh_from_prev": k, "amount_to_mean_30d": 1.0} for k in kmh]
    merchant = [dict.fromkeys(MERCHANT_FEATURES) for _ in kmh]
    return vectors(model.features, feature_matrix(card), merchant, [txn(i) for i in range(len(kmh))])


def test_a_feature_vector_maps_names_to_values_in_order_with_missing_ones_as_none() -> None:
    names = ["amount", "km_from_prev", "new_country", "seconds_since_prev"]
    assert as_mapping(names, [12.5, 3.0, 1.0, 60.0]) == {
        "amount": 12.5, "km_from_prev": 3.0, "new_country": 1.0, "seconds_since_prev": 60.0}  # fmt: skip
    mapped = as_mapping(names, [12.5, math.nan, 0.0, math.nan])
    assert list(mapped.items()) == [("amount", 12.5), ("km_from_prev", None), ("new_country", 0.0),
                                    ("seconds_since_prev", None)]  # fmt: skip
    with pytest.raises(ValueError, match="shorter"):
        as_mapping(names, [1.0])


def test_reason_codes_are_the_top_k_by_absolute_shap_in_plain_language() -> None:
    names = ["kmh_from_prev", "amount", "new_country", "seconds_since_prev"]
    reasons = reason_codes(names, [2450.0, 12.0, 1.0, math.nan], [2.5, -0.1, -3.0, 0.4], k=3)
    assert [r["feature"] for r in reasons] == ["new_country", "kmh_from_prev", "seconds_since_prev"]
    assert reasons[1]["text"] == "Speed from previous transaction 2,450 km/h"
    assert reasons[0]["text"] == "Country not seen on this card in 90 days yes"
    assert reasons[2] == {"feature": "seconds_since_prev", "value": None, "shap": 0.4,
                          "text": "Time since the previous transaction: unknown"}  # fmt: skip
    assert (
        describe("merchant_fraud_rate_7d", 0.125)
        == "Merchant fraud rate over the 7 days (label-delayed) 12.5%"
    )


def test_vectors_follow_the_model_order_and_keep_missing_values_missing(model: Model) -> None:
    x = matrix(model, [10.0])
    row = dict(zip(model.features, x[0], strict=True))
    assert row["kmh_from_prev"] == 10.0
    assert row["channel_ecommerce"] == 0.0
    assert math.isnan(row["merchant_count_7d"])
    assert math.isnan(row["card_count_24h"]), "a feature the stream did not give stays missing"


def test_flagged_decisions_are_explained_exactly_and_approved_ones_only_on_request(model: Model) -> None:
    x = matrix(model, [1.0, 900.0, 3000.0])
    low, high = model.predict(x)[[0, 2]]
    assert high > low
    policy = Policy(review=(low + high) / 2, decline=0.99)
    decisions = score_batch(
        model, x, [txn(i) for i in range(3)], [NOW.timestamp() - 0.02] * 3, policy, Rules(), now=NOW
    )
    scores = [d.score for d in decisions]
    assert scores == sorted(scores), "faster travel never lowers the score"
    assert [d.decision for d in decisions] == [policy.decision(s, 0) for s in scores]
    assert decisions[0].decision == "approve"
    assert decisions[2].decision != "approve"
    assert decisions[0].shap is None
    assert decisions[0].reasons == []
    margin = model.margin(x)
    for i, d in enumerate(decisions):
        if d.flagged:
            assert d.shap is not None
            assert d.expected_value is not None
            assert sum(d.shap.values()) + d.expected_value == pytest.approx(margin[i], abs=1e-4)
            assert d.reasons[0]["feature"] == "kmh_from_prev"
        assert d.latency_ms == pytest.approx(20, abs=1)
        assert d.event()["model_version"] == "v1"
        sent = orjson.loads(orjson.dumps(d.event()))  # what goes on fraud-scores
        assert sent["event_time"] == d.txn.event_time.isoformat()
        assert sent["scored_at"] == d.scored_at.isoformat()
    everything = score_batch(model, x, [txn(i) for i in range(3)], [None] * 3,
                             Policy(0.99, 0.99, explain_all=True), Rules(), now=NOW)  # fmt: skip
    assert all(d.shap is not None for d in everything)
    assert everything[0].latency_ms is None


def test_replaying_an_audit_row_reproduces_its_shap_values(model: Model) -> None:
    x = matrix(model, [3000.0])
    (decision,) = score_batch(model, x, [txn(0)], [None], Policy(0.0, 1.0), Rules())
    stored = json.loads(json.dumps(decision.features))  # what PostgreSQL's json column gives back
    shap, expected = replay(model, stored)
    assert decision.shap is not None
    assert shap == pytest.approx(decision.shap, abs=1e-9)
    assert expected == pytest.approx(decision.expected_value, abs=1e-9)


def test_rules_decline_whatever_the_score_and_appear_as_reasons(model: Model) -> None:
    rules = Rules(frozenset({"card-0"}), frozenset({"m-bad"}), amount_limit=1000)
    txns = [txn(0), txn(1, merchant_id="m-bad"), txn(2, amount=5000.0), txn(3)]
    x = matrix(model, [1.0] * 4)
    decisions = score_batch(model, x, txns, [None] * 4, Policy(0.5, 0.9), rules)
    assert [d.decision for d in decisions] == ["decline", "decline", "decline", "approve"]
    assert [d.reasons[0]["feature"] for d in decisions[:3]] == ["rule:blocked_card", "rule:blocked_merchant",
                                                                 "rule:amount_limit"]  # fmt: skip
    assert decisions[2].event()["rules"] == ["amount_limit"]
    assert decisions[0].shap is not None, "a rule decline is explained too"


def test_a_decline_the_block_list_alone_forced_is_no_case_for_an_analyst(model: Model) -> None:
    """Every attempt on a blocked card would queue otherwise; one the model finds suspicious still does."""
    rules = Rules(frozenset({"card-0", "card-1"}), frozenset({"m-bad"}), amount_limit=1000)
    txns = [txn(0), txn(1), txn(2, merchant_id="m-bad"), txn(3, amount=5000.0), txn(4), txn(5)]
    card = [{**dict.fromkeys(FEATURE_NAMES), "kmh_from_prev": k, "amount_to_mean_30d": k / 100}
            for k in (1.0, 900.0, 1.0, 1.0, 900.0, 1.0)]  # fmt: skip
    x = vectors(model.features, feature_matrix(card), [dict.fromkeys(MERCHANT_FEATURES)] * 6, txns)
    decisions = score_batch(model, x, txns, [None] * 6, Policy(0.3, 0.99), rules)
    assert [d.decision for d in decisions] == [
        "decline",
        "decline",
        "decline",
        "decline",
        "review",
        "approve",
    ]
    assert decisions[0].score < 0.3 <= decisions[1].score, "the synthetic model: speed and amount raise it"
    assert [d.needs_review for d in decisions] == [False, True, False, True, True, False], (
        "blocked card, low score: no; blocked card, high score: yes; blocked merchant, low score: no;"
        " over the amount limit: yes; the model's review: yes; approved: no"
    )


def test_a_fixed_share_of_would_be_declines_is_let_through_the_same_on_every_replay() -> None:
    policy = Policy(0.5, 0.9, explore_rate=0.05, explore_max_amount=500.0)
    ids = [f"tx-{i:07d}" for i in range(100_000)]
    chosen = [t for t in ids if policy.explores(t, 20.0)]
    assert 4_800 < len(chosen) < 5_200, "5 % of them (binomial sd ~69)"
    assert chosen == [t for t in ids if policy.explores(t, 20.0)], "the same choice every time"
    assert not any(policy.explores(t, 500.01) for t in chosen), "none above the amount cap"
    assert not any(Policy(0.5, 0.9).explores(t, 20.0) for t in ids[:1000]), "off by default"
    assert "1 in 20 of the payments it would decline" in policy.explore_reason()["text"]
    assert (
        "measure the model's declines: all of the payments"
        in Policy(0.5, 0.9, explore_rate=1.0).explore_reason()["text"]
    )


def test_a_would_be_decline_let_through_is_reviewed_and_says_why_and_a_rule_decline_never_is(
    model: Model,
) -> None:
    rules = Rules(frozenset({"card-2"}))
    txns = [txn(0), txn(1, amount=900.0), txn(2), txn(3)]
    card = [{**dict.fromkeys(FEATURE_NAMES), "kmh_from_prev": k, "amount_to_mean_30d": k / 100}
            for k in (900.0, 900.0, 900.0, 1.0)]  # fmt: skip
    x = vectors(model.features, feature_matrix(card), [dict.fromkeys(MERCHANT_FEATURES)] * 4, txns)
    everything = Policy(0.2, 0.35, explore_rate=1.0, explore_max_amount=500.0)
    decisions = score_batch(model, x, txns, [None] * 4, everything, rules)
    assert all(d.score >= 0.35 for d in decisions[:3]), "the synthetic model would decline the first three"
    assert [d.decision for d in decisions] == ["review", "decline", "decline", "approve"], (
        "let through; above the amount cap; the block list's; the model's approval"
    )
    assert [d.explored for d in decisions] == [True, False, False, False]
    first = decisions[0]
    assert first.reasons[0]["feature"] == "policy:explore"
    assert first.shap is not None, "explained"
    assert first.needs_review, "an analyst sees it"
    assert first.event()["decision"] == "review"
    assert first.event()["rules"] == []


def test_policy_thresholds() -> None:
    policy = Policy(review=0.5, decline=0.9)
    assert [policy.decision(s, 0) for s in (0.49, 0.5, 0.89, 0.9)] == [
        "approve",
        "review",
        "review",
        "decline",
    ]
    assert policy.decision(0.0, 1) == "decline"
    assert policy.thresholds() == {"review": 0.5, "decline": 0.9}
    exploring = Policy(review=0.5, decline=0.9, explore_rate=0.05, explore_max_amount=500.0)
    recorded = {"review": 0.5, "decline": 0.9, "explore_rate": 0.05, "explore_max_amount": 500.0}
    assert exploring.thresholds() == recorded, "the audit says which declines could be let through"


def test_merchant_cache_reads_new_merchants_once_and_refreshes_stale_ones_off_the_path() -> None:
    calls: list[list[str]] = []
    clock = [0.0]

    def lookup(ids: object) -> dict[str, dict[str, float | None]]:
        calls.append(list(ids))  # type: ignore[call-overload]
        return {m: {"merchant_count_1d": 3.0} for m in calls[-1] if m != "unknown"}

    cache = MerchantCache(lookup, ttl_s=60, clock=lambda: clock[0])
    assert cache.preload(["a", "b"]) == 2
    assert cache.get(["a", "b", "a"])["a"] == {"merchant_count_1d": 3.0}
    assert calls == [["a", "b"]], "preloaded merchants cost no read"
    assert all(v is None for v in cache.get(["unknown", "a"])["unknown"].values())
    assert calls[-1] == ["unknown"]
    clock[0] = 61
    cache.get(["a"])
    assert len(calls) == 2, "a stale entry is served; refresh re-reads it in the background"
    assert cache.refresh() == 3
    assert sorted(calls[-1]) == ["a", "b", "unknown"]
    assert cache.refresh() == 0


def test_a_corrupt_or_mismatched_model_is_refused_and_the_champion_kept(tmp_path: Path, model: Model) -> None:
    save(tmp_path / "v2", seed=1)
    corrupt = tmp_path / "v3"
    corrupt.mkdir()
    (corrupt / "model.ubj").write_bytes(b"\x00not a model")
    (corrupt / "metadata.json").write_text(json.dumps({"features": list(MODEL_FEATURES)}))
    with pytest.raises(FraudstreamError, match="cannot load model v3"):
        Model.load(corrupt, "v3")
    mismatched = save(tmp_path / "v4")
    (mismatched / "metadata.json").write_text(json.dumps({"features": list(reversed(MODEL_FEATURES))}))
    with pytest.raises(FraudstreamError, match="do not match"):
        Model.load(mismatched, "v4")

    rows = {v: ModelRow(v, NOW, "champion", {}, {}, str(tmp_path / v), None, NOW) for v in ("v2", "v3", "v4")}
    current = ["v2"]
    champion = Champion(lambda: rows[current[0]], rows.get)
    assert champion.refresh() is True
    assert champion.current is not None
    assert champion.current.version == "v2"
    assert champion.refresh() is False, "same champion: nothing to do"
    for bad in ("v3", "v4"):
        current[0] = bad
        assert champion.refresh() is False
        assert champion.current.version == "v2", "a model that fails to load never replaces the champion"


def test_a_shadow_challenger_is_scored_on_the_same_batch_without_deciding(
    model: Model, tmp_path: Path
) -> None:
    challenger = Model.load(save(tmp_path / "v9", seed=3), "v9")
    x = matrix(model, [1.0, 3000.0])
    decisions = score_batch(
        model, x, [txn(0), txn(1)], [None, None], Policy(0.5, 0.9), Rules(), shadow=challenger
    )
    expected = challenger.predict(x)
    for d, shadow_score in zip(decisions, expected, strict=True):
        assert d.shadow_version == "v9"
        assert d.shadow_score == pytest.approx(shadow_score)
        assert d.model_version == "v1", "the champion decides; the challenger is only logged"
        assert d.decision == Policy(0.5, 0.9).decision(d.score, 0)
