"""Score a micro-batch: feature vectors -> probabilities -> decisions, explained with TreeSHAP.

Pure given the model: no Kafka, no database. Every decision at or above the review threshold (and
every rule hit) is explained synchronously with exact TreeSHAP; approved ones too when
``explain_all``. The decision carries everything the audit needs to replay its explanation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.schema import Transaction
from app.scoring.model import Model
from app.scoring.reasons import EXPLORE, as_mapping, reason_codes
from app.scoring.rules import Rules
from features.card import FEATURE_NAMES
from features.model_input import channel_features


@dataclass(frozen=True)
class Policy:
    review: float
    decline: float
    explain_all: bool = False
    top_k: int = 5
    explore_rate: float = 0.0  # the share of the model's would-be declines let through (as review)
    explore_max_amount: float | None = None  # none above this amount is

    def decision(self, score: float, rule_hits: int) -> str:
        if rule_hits or score >= self.decline:
            return "decline"
        return "review" if score >= self.review else "approve"

    def explores(self, txn_id: str, amount: float) -> bool:
        """Whether the model's would-be decline of this transaction is let through, to be measured.

        A declined payment never brings a chargeback: without this, nobody learns how many of the
        model's declines were good customers', and the next model learns nothing from them. A fixed
        share, ``explore_rate``, chosen by a hash of the transaction id (random to the model and to
        fraudsters, and the same choice when a batch is replayed), up to ``explore_max_amount``."""
        capped = self.explore_max_amount is not None and amount > self.explore_max_amount
        if self.explore_rate <= 0 or capped:
            return False
        digest = hashlib.blake2b(txn_id.encode(), digest_size=8, person=b"fs-explore").digest()
        return int.from_bytes(digest) < self.explore_rate * 2**64

    def explore_reason(self) -> dict[str, Any]:
        share = "all" if self.explore_rate >= 1 else f"1 in {round(1 / self.explore_rate):,}"
        text = (
            f"Let through to measure the model's declines: {share} of the payments it would decline"
            f" (score ≥ {self.decline}), chosen at random"
        )
        return {"feature": EXPLORE, "value": self.explore_rate, "shap": None, "text": text}

    def thresholds(self) -> dict[str, float]:
        """What the audit records of the policy; with exploration on, its rate and cap too: which of
        the model's declines could have been let through (``app.audit_export.history_rows``)."""
        out = {"review": self.review, "decline": self.decline}
        if self.explore_rate > 0:
            out["explore_rate"] = self.explore_rate
            if self.explore_max_amount is not None:
                out["explore_max_amount"] = self.explore_max_amount
        return out


BLOCK_RULES = frozenset({"rule:blocked_card", "rule:blocked_merchant"})  # ``Rules.hits``' block-list reasons


@dataclass(frozen=True)
class Decision:
    txn: Transaction
    score: float
    decision: str
    model_version: str
    features: Mapping[str, float | None]
    shap: Mapping[str, float] | None  # None when not explained (approved, explain_all off)
    expected_value: float | None
    reasons: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    thresholds: dict[str, float]
    scored_at: datetime
    latency_ms: float | None  # produce timestamp -> scored
    shadow_version: str | None = None
    shadow_score: float | None = None

    @property
    def flagged(self) -> bool:
        return self.decision != "approve"

    @property
    def explored(self) -> bool:
        """A would-be decline let through to be measured (``Policy.explores``)."""
        return any(r["feature"] == EXPLORE for r in self.reasons)

    @property
    def needs_review(self) -> bool:
        """Flagged, and a case for an analyst (an ``alerts`` row): not when the block list alone
        declined it and the model would have approved it. That is the block doing its job; a blocked
        card's or merchant's every attempt would otherwise queue (with a merchant, thousands a day)."""
        if not self.flagged:
            return False
        blocked_only = bool(self.rules) and all(r["feature"] in BLOCK_RULES for r in self.rules)
        return not blocked_only or self.score >= self.thresholds["review"]

    def event(self) -> dict[str, Any]:
        """The fraud-scores event (contract in ARCHITECTURE.md; ``rules`` added), for ``orjson.dumps``.

        Its two times stay datetimes (UTC): orjson writes them as ``isoformat()`` would, in C
        (building and dumping an event: 7.7 -> 3.5 µs, session 19)."""
        return {
            "txn_id": self.txn.txn_id,
            "card_id": self.txn.card_id,
            "event_time": self.txn.event_time,
            "scored_at": self.scored_at,
            "score": round(self.score, 6),
            "decision": self.decision,
            "model_version": self.model_version,
            "reasons": self.reasons,
            "rules": [r["feature"].removeprefix("rule:") for r in self.rules],
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
        }


def vectors(
    model_features: Sequence[str],
    card: np.ndarray,
    merchant_rows: Sequence[Mapping[str, float | None]],
    txns: Sequence[Transaction],
) -> np.ndarray:
    """The model matrix (float32, NaN = missing) in the model's own feature order. ``card``: the card
    features, one row per transaction in ``FEATURE_NAMES`` order (``app.worker.handoff``)."""
    n = len(txns)
    if card.shape != (n, len(FEATURE_NAMES)):
        raise ValueError(f"card features of shape {card.shape}, expected {(n, len(FEATURE_NAMES))}")
    x = np.empty((n, len(model_features)), dtype=np.float32)
    at = {name: j for j, name in enumerate(FEATURE_NAMES)}
    from_card = [(i, at[name]) for i, name in enumerate(model_features) if name in at]
    x[:, [i for i, _ in from_card]] = card[:, [j for _, j in from_card]]  # one column copy, no dicts
    rest = [(i, name) for i, name in enumerate(model_features) if name not in at]
    if rest:
        channels = {c: channel_features(c) for c in {t.channel for t in txns}}
        rows = []
        for merchant, txn in zip(merchant_rows, txns, strict=True):
            channel = channels[txn.channel]
            rows.append([channel[name] if name in channel else merchant.get(name) for _, name in rest])
        # one conversion (None -> NaN) instead of a NumPy item assignment per value (session 12: ~3x faster)
        x[:, [i for i, _ in rest]] = np.array(rows, dtype=np.float32).reshape(n, len(rest))
    return x


def score_batch(  # noqa: PLR0917 - the batch and the context it is scored in
    model: Model,
    x: np.ndarray,
    txns: Sequence[Transaction],
    produced_at: Sequence[float | None],
    policy: Policy,
    rules: Rules,
    shadow: Model | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    scores = model.predict(x) if len(txns) else np.zeros(0)
    shadow_scores = shadow.predict(x) if shadow is not None and len(txns) else None
    hits = [rules.hits(t.card_id, t.merchant_id, t.amount) for t in txns]
    decisions = [policy.decision(float(s), len(h)) for s, h in zip(scores, hits, strict=True)]
    explored = {  # never one a rule declined: only the model's own declines are measured
        i for i, (d, h, t) in enumerate(zip(decisions, hits, txns, strict=True))
        if d == "decline" and not h and policy.explores(t.txn_id, t.amount)
    }  # fmt: skip
    for i in explored:
        decisions[i] = "review"
    explain = [i for i, d in enumerate(decisions) if policy.explain_all or d != "approve"]
    shap_rows: dict[int, tuple[np.ndarray, float]] = {}
    if explain:
        values, expected = model.contributions(x[explain])
        shap_rows = {i: (values[n], float(expected[n])) for n, i in enumerate(explain)}
    scored_at = now or datetime.now(UTC)
    thresholds = policy.thresholds()
    names, rows = model.features, x.astype(np.float64).tolist()  # Python floats: cheap per value
    out = []
    for i, txn in enumerate(txns):
        row = rows[i]
        explained = shap_rows.get(i)
        reasons = [] if explained is None else reason_codes(names, row, explained[0].tolist(), policy.top_k)
        produced = produced_at[i]
        out.append(
            Decision(
                txn=txn,
                score=float(scores[i]),
                decision=decisions[i],
                model_version=model.version,
                features=as_mapping(names, row),
                shap=None if explained is None else dict(zip(names, explained[0].tolist(), strict=True)),
                expected_value=None if explained is None else explained[1],
                reasons=hits[i] + ([policy.explore_reason()] if i in explored else []) + reasons,
                rules=hits[i],
                thresholds=thresholds,
                scored_at=scored_at,
                latency_ms=None if not produced else max(0.0, scored_at.timestamp() - produced) * 1000,
                shadow_version=None if shadow is None else shadow.version,
                shadow_score=None if shadow_scores is None else float(shadow_scores[i]),
            )
        )
    return out


def replay(model: Model, features: Mapping[str, float | None]) -> tuple[dict[str, float], float]:
    """Recompute a stored decision's SHAP values from its audit row's feature vector."""
    x = np.array(
        [[math.nan if features.get(n) is None else features[n] for n in model.features]], dtype=np.float32
    )
    values, expected = model.contributions(x)
    return dict(zip(model.features, values[0].tolist(), strict=True)), float(expected[0])
