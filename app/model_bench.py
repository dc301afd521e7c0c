"""Model micro-benchmarks: predict and exact TreeSHAP cost per row, by batch size and model size.

Light on purpose (numpy + xgboost only) so it also runs on a bare GPU machine:

    python -m app.model_bench --device cuda --out gpu.json [--model models/<version>]

Without ``--model`` it trains synthetic models of several sizes (trees x depth) on the model's 34
inputs, so CPU and GPU figures compare like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from app.scoring.model import Model

SIZES = ((50, 6), (100, 6), (300, 6), (500, 8))
BATCHES = (1, 10, 100, 500, 2_000, 10_000)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, help="a trained model folder (model.ubj + metadata.json)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for m in result["models"]:
        best = m["results"][-1]
        line = (
            f"{m['model']}: {args.device} batch {best['batch']}: predict {best['predict_us_per_row']} µs/row"
        )
        print(f"{line}, SHAP {best['shap_rows_per_s']:,} rows/s")  # noqa: T201 - a command's output


if __name__ == "__main__":
    main()
