"""The bench's steady-state latency leaves out the transactions produced before its start."""

from __future__ import annotations

import numpy as np

from app.bench_pipeline import _steady_percentiles


def test_steady_latency_counts_only_transactions_produced_from_the_start() -> None:
    produced = np.arange(3_000, dtype=float) / 100  # 30 s of input at 100 txn/s
    e2e = np.where(produced < 10, 500.0, 20.0)  # a slow start-up, then 20 ms
    e2e[-1] = 40.0
    steady = _steady_percentiles(produced, e2e, start=10.0)
    assert steady is not None
    assert steady["n"] == 2_000
    assert steady["p50"] == 20.0
    assert steady["max"] == 40.0  # the last transaction is in, the first 10 s are out


def test_steady_latency_needs_a_thousand_transactions() -> None:
    produced = np.arange(1_500, dtype=float)
    assert _steady_percentiles(produced, np.ones(1_500), start=501.0) is None  # 999 from the start
    assert _steady_percentiles(produced, np.ones(1_500), start=500.0) is not None
