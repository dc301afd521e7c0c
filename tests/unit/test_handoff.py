"""A micro-batch as the worker hands it to its child processes: the same rows, values and transactions
come out as went in (NaN and absent features too), and the model matrix built from the columns is
the one the rows give."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.schema import Transaction
from app.scoring.decide import vectors
from app.worker.card_features import Raw, process_batch
from app.worker.handoff import Columns, feature_matrix, pack, transactions, txn_values, unpack
from features.card import FEATURE_NAMES
from features.merchant import MERCHANT_FEATURES
from features.model_input import MODEL_FEATURES, channel_features

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def txn(i: int) -> Transaction:
    return Transaction.model_validate({
        "txn_id": f"tx-{i:04d}", "event_time": T0 + timedelta(minutes=13 * i), "card_id": f"card-{i % 3}",
        "merchant_id": f"m-{i % 5}", "amount": 5.0 + 17 * i, "currency": "EUR", "mcc": "5411",
        "channel": ("card_present", "ecommerce", "atm")[i % 3], "lat": 48.8 + i / 10, "lon": 2.3 - i / 10,
        "country": "FR" if i % 4 else "DE",
    })  # fmt: skip


def same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_the_folds_rows_cross_whole_and_in_order() -> None:
    txns = [txn(i) for i in range(40)]
    raws = [Raw(t.card_id.encode(), t.model_dump_json().encode(), "tx", 0, i) for i, t in enumerate(txns)]
    rows = process_batch(raws, {}, lateness_s=300).features
    assert any(math.isnan(v) for row in rows for v in row.values() if isinstance(v, float))  # NaN included

    got = unpack(pack(Columns.of(rows)))

    assert len(got) == len(rows)
    assert got.values.dtype == np.float64
    for i, row in enumerate(rows):
        back = got.row(i)
        assert list(back) == ["txn_id", "card_id", "event_time", *FEATURE_NAMES]
        assert all(same(back[k], row[k]) for k in back), row["txn_id"]


def test_none_features_are_nan_and_a_missing_one_is_refused() -> None:
    rows = [
        {**dict.fromkeys(FEATURE_NAMES), "amount": 3.0},
        {**dict.fromkeys(FEATURE_NAMES), "km_from_home": 2.5},
    ]
    matrix = feature_matrix(rows)
    amount, km = FEATURE_NAMES.index("amount"), FEATURE_NAMES.index("km_from_home")
    assert matrix.shape == (2, len(FEATURE_NAMES))
    assert matrix[0, amount] == 3.0
    assert math.isnan(matrix[1, amount])
    assert matrix[1, km] == 2.5
    assert np.isnan(matrix).sum() == 2 * len(FEATURE_NAMES) - 2
    with pytest.raises(KeyError, match="amount"):
        feature_matrix([{n: 1.0 for n in FEATURE_NAMES if n != "amount"}])


def test_transactions_are_rebuilt_equal_without_validation() -> None:
    txns = [txn(i) for i in range(5)]
    back = transactions(txn_values(txns))
    assert back == txns
    assert [t.model_dump_json() for t in back] == [t.model_dump_json() for t in txns]
    assert all(b.model_fields_set == t.model_fields_set for b, t in zip(back, txns, strict=True))
    assert back[0].event_time.tzinfo is not None


def test_the_model_matrix_from_columns_is_the_one_the_rows_give() -> None:
    """Card features from the matrix, merchant and channel features per row, in the model's order:
    as the earlier dict merge (``{**card, **merchant, **channel}``) gave them."""
    txns = [txn(i) for i in range(12)]
    raws = [Raw(t.card_id.encode(), t.model_dump_json().encode(), "tx", 0, i) for i, t in enumerate(txns)]
    rows = process_batch(raws, {}, lateness_s=300).features
    merchants = [{name: (None if i % 2 else float(i + j)) for j, name in enumerate(MERCHANT_FEATURES)}
                 for i in range(len(txns))]  # fmt: skip
    order = list(reversed(MODEL_FEATURES))  # any model's order

    x = vectors(order, Columns.of(rows).values, merchants, txns)

    triples = zip(rows, merchants, txns, strict=True)
    merged = [{**r, **m, **channel_features(t.channel)} for r, m, t in triples]
    want = np.array([[row.get(name) for name in order] for row in merged], dtype=np.float32)
    np.testing.assert_array_equal(x, want)  # NaN where missing, in the same places
