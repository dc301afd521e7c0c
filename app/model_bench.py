"""Model micro-benchmarks: predict and exact TreeSHAP cost per row, by batch size and model size.

Light on purpose (numpy, xgboost and the scoring code; no services) so it also runs on a bare GPU
machine, with the packages ``docs/bench/gpu_site.py`` packs:

    python -m app.model_bench --device cuda --out gpu.json [--model models/<version> [--stage]]

Without ``--model`` it trains synthetic models of several sizes (trees x depth) on the model's 34
inputs, so CPU and GPU figures compare like for like. ``--stage`` also times the worker's whole
scoring step (``score_batch``) per micro-batch on the model's own reference rows (real traffic).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from app.errors import FraudstreamError, first_line
from app.quiet_gc import quiet_gc
from app.schema import Transaction
from app.scoring.decide import Policy, score_batch
from app.scoring.model import Model
from app.scoring.rules import Rules

SIZES = ((50, 6), (100, 6), (300, 6), (500, 8))
BATCHES = (1, 10, 100, 500, 2_000, 10_000)
STAGE_BATCHES = (100, 500, 2_000)
N_FEATURES = 34


def synthetic_model(trees: int, depth: int, device: str, threads: int, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 1.5).astype(int)
    names = [f"f{i}" for i in range(N_FEATURES)]
    params = {"max_depth": depth, "learning_rate": 0.1, "objective": "binary:logistic", "tree_method": "hist",
              "device": device, "nthread": threads, "seed": seed}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=trees)
    return Model(f"synthetic-{trees}x{depth}", booster, tuple(names), {"params": params}, device)


def _time(fn: Any, x: Any, repeat: int) -> float:
    fn(x)  # warm-up (and GPU kernel compilation)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def micro_bench(model: Model, batches: tuple[int, ...] = BATCHES, repeat: int = 7) -> list[dict[str, Any]]:
    """µs per row for predict and for exact TreeSHAP (pred_contribs), median of ``repeat`` runs."""
    rng = np.random.default_rng(0)
    out = []
    for n in batches:
        x = rng.normal(size=(n, len(model.features))).astype(np.float32)
        predict = _time(model.predict, x, repeat)
        shap = _time(model.contributions, x, max(3, repeat // 2) if n >= 2_000 else repeat)
        out.append({"device": model.device, "batch": n, "predict_us_per_row": round(predict / n * 1e6, 3),
                    "shap_us_per_row": round(shap / n * 1e6, 3),
                    "shap_rows_per_s": round(n / shap)})  # fmt: skip
    return out


def reference_rows(model_dir: Path, features: tuple[str, ...]) -> np.ndarray:
    """The model's reference sample (rows of its training traffic, in time order) as its input matrix."""
    try:
        table = pq.read_table(model_dir / "reference.parquet", columns=list(features))
    except (OSError, pa.ArrowException) as exc:  # a model saved without its sample, a column missing
        raise FraudstreamError(f"no reference rows for {model_dir}: {first_line(exc)}") from exc
    return np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in features]).astype(
        np.float32
    )


def _txn(i: int, amount: float, when: datetime) -> Transaction:
    return Transaction.model_construct(
        txn_id=f"t{i}", event_time=when, card_id=f"c{i % 1_000}", merchant_id=f"m{i % 2_000}", amount=amount,
        currency="EUR", mcc="5411", channel="card_present", lat=0.0, lon=0.0, country="FR",
    )  # fmt: skip


def stage_bench(
    model: Model, x: np.ndarray, batches: tuple[int, ...] = STAGE_BATCHES, rounds: int = 20
) -> list[dict[str, Any]]:
    """The worker's scoring step per micro-batch: predict, rules, decisions, TreeSHAP and reason codes.

    ``score_batch`` as the scoring process calls it (default thresholds 0.5 / 0.9, no rules), on
    ``rounds`` slices of ``x`` spread over it, so the batches have the flagged share of its traffic.
    Flagged decisions only (the default), then every decision explained (``explain_all``)."""
    amounts = x[:, model.features.index("amount")] if "amount" in model.features else np.ones(len(x))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    txns = [_txn(i, float(a), when) for i, a in enumerate(amounts)]
    quiet_gc(logging.getLogger("fraudstream.bench"), "bench")  # as the scoring process does, once built
    out = []
    for explain_all in (False, True):
        policy = Policy(0.5, 0.9, explain_all=explain_all)
        for n in batches:
            times, flagged = [], 0
            for r in range(rounds + 1):  # the first is a warm-up
                start = (r - 1) * (len(x) - n) // rounds if r else 0  # spread over the whole sample
                started = time.perf_counter()
                decisions = score_batch(model, x[start : start + n], txns[start : start + n], [None] * n,
                                        policy, Rules(), now=when)  # fmt: skip
                if r:
                    times.append(time.perf_counter() - started)
                    flagged += sum(d.flagged for d in decisions)
            ms = np.array(times) * 1e3
            out.append({"device": model.device, "explain_all": explain_all, "batch": n, "batches": rounds,
                        "flagged_share": round(flagged / (rounds * n), 4),
                        "ms_per_batch_p50": round(float(np.median(ms)), 3),
                        "ms_per_batch_p95": round(float(np.percentile(ms, 95)), 3),
                        "rows_per_s": round(rounds * n / (ms.sum() / 1e3))})  # fmt: skip
    return out


def main() -> None:
    try:
        _main()
    except FraudstreamError as exc:  # a bad --model: one line, not a traceback
        raise SystemExit(f"model_bench: {exc}") from exc


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, help="a trained model folder (model.ubj + metadata.json)")
    parser.add_argument("--stage", action="store_true", help="with --model: time the whole scoring step too")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.stage and not args.model:
        parser.error("--stage needs --model (it scores the model's own reference rows)")
    if args.model:
        models = [Model.load(args.model, args.model.name, threads=args.threads, device=args.device)]
    else:
        models = [synthetic_model(t, d, args.device, args.threads) for t, d in SIZES]
    result = {
        "suite": "model",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "xgboost": xgb.__version__},
        "device": args.device,
        "threads": args.threads,
        "models": [{"model": m.version, **m.shape(), "results": micro_bench(m)} for m in models],
    }
    if args.stage:
        result["stage"] = stage_bench(models[0], reference_rows(args.model, models[0].features))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for m in result["models"]:
        best = m["results"][-1]
        line = (
            f"{m['model']}: {args.device} batch {best['batch']}: predict {best['predict_us_per_row']} µs/row"
        )
        print(f"{line}, SHAP {best['shap_rows_per_s']:,} rows/s")  # noqa: T201 - a command's output
    for row in result.get("stage", []):
        which = "every decision explained" if row["explain_all"] else "flagged explained"
        print(f"scoring step, {which}, batch {row['batch']}: {row['ms_per_batch_p50']} ms p50,"  # noqa: T201
              f" {row['ms_per_batch_p95']} ms p95, {row['rows_per_s']:,} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
