"""Decisions for UI tests: a small synthetic model scores a few transactions, written as the worker does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from app.schema import TRANSACTION_FIELDS, Transaction
from app.scoring.decide import Decision, Policy, score_batch, vectors
from app.scoring.model import Model
from app.scoring.rules import Rules
from app.scoring.store import DecisionStore
from app.worker.handoff import feature_matrix
from features.card import FEATURE_NAMES
from features.merchant import MERCHANT_FEATURES
from tests.unit.test_training import synthetic
from training.dataset import MODEL_FEATURES
from training.train import fit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def populate(
    conninfo: str,
    folder: Path,
    n: int = 12,
    adjust: Callable[[list[Decision]], list[Decision]] | None = None,
    policy: Policy | None = None,
) -> list[Decision]:
    """``n`` transactions of two cards, every one flagged (review threshold 0) and explained; ``adjust``
    rewrites the decisions before they are written (scores and outcomes a test needs); ``policy``: other
    than review from 0, decline from 0.5."""
    fitted = fit(synthetic(), seed=0, max_rounds=30)
    folder.mkdir(parents=True, exist_ok=True)
    fitted.booster.save_model(str(folder / "model.ubj"))
    (folder / "metadata.json").write_text(
        json.dumps({"features": list(MODEL_FEATURES), "params": fitted.params})
    )
    model = Model.load(folder, "v-ui-test")
    txns = [
        Transaction.model_validate({
            "txn_id": f"ui-{i:03d}", "event_time": T0 + timedelta(minutes=7 * i),
            "card_id": f"card-ui-{i % 2}",
            "merchant_id": f"m-{i}", "amount": 10.0 + 45 * i, "currency": "EUR", "mcc": "5411",
            "channel": "ecommerce" if i % 3 else "card_present", "lat": 48.8 + i, "lon": 2.3 + i,
            "country": "FR" if i < 6 else "DE",
        })
        for i in range(n)
    ]  # fmt: skip
    card = [{**dict.fromkeys(FEATURE_NAMES), "kmh_from_prev": 40.0 * i * i, "amount_to_mean_30d": 1 + i / 3,
             "km_from_prev": 3.0 * i} for i in range(n)]  # fmt: skip
    x = vectors(model.features, feature_matrix(card), [dict.fromkeys(MERCHANT_FEATURES) for _ in txns], txns)
    decisions = score_batch(model, x, txns, [None] * n, policy or Policy(review=0.0, decline=0.5), Rules())
    if adjust is not None:
        decisions = adjust(decisions)
    store = DecisionStore(conninfo)
    store.write(decisions)
    store.close()
    return decisions


def record_approved(conninfo: str, transactions: pd.DataFrame, version: str) -> datetime:
    """Write ``transactions`` (history rows) to the decision audit as approved by model ``version``, as
    a worker that scored them would; their scored_at, returned."""
    scored = datetime.now(UTC)
    store = DecisionStore(conninfo)
    store.write([
        Decision(txn=Transaction.model_validate({k: r[k] for k in TRANSACTION_FIELDS}), score=0.01,
                 decision="approve", model_version=version, features={}, shap=None, expected_value=None,
                 reasons=[], rules=[], thresholds={"review": 0.5, "decline": 0.9}, scored_at=scored,
                 latency_ms=None)
        for r in transactions.to_dict("records")
    ])  # fmt: skip
    store.close()
    return scored
