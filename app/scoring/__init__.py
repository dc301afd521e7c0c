"""Scoring: champion model, decisions, SHAP reason codes, rules, and their sinks."""

from __future__ import annotations

import os


def pin_threads(threads: int) -> None:
    """OpenMP threads per worker process; call before xgboost is imported (OpenMP reads it at load).

    Several worker processes each using every core make a 0.2 ms batch predict take 20 ms.
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
