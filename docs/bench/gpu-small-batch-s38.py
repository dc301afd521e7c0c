"""Session 38, on the lent H200: what one scoring call costs on the GPU at the worker's small batches.

Exact TreeSHAP and predict for the champion, per call (median of 15 after a warm-up), by how the
rows reach the booster: host DMatrix (xgboost copies them over), DMatrix on CuPy (already on the
GPU), and a CPU copy of the booster (one thread, as a worker pins) for comparison.

    PYTHONPATH=/tmp/site:. python3 docs/bench/gpu-small-batch-s38.py MODEL_DIR OUT.json
"""
# ruff: noqa: T201 - a measuring script prints its figures

import json
import sys
import time
from pathlib import Path

import cupy
import numpy as np
import xgboost as xgb

from app.model_bench import reference_rows
from app.scoring.model import Model

model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
gpu = Model.load(model_dir, model_dir.name, device="cuda")
cpu = Model.load(model_dir, model_dir.name, threads=1)
x_all = reference_rows(model_dir, gpu.features)
names = list(gpu.features)


def median_ms(fn, x, repeat=15):
    fn(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 4)


ways = {
    "shap_gpu_host_dmatrix": lambda x: gpu.booster.predict(
        xgb.DMatrix(x, feature_names=names, missing=np.nan), pred_contribs=True
    ),
    "shap_gpu_cupy_dmatrix": lambda x: cupy.asnumpy(
        gpu.booster.predict(
            xgb.DMatrix(cupy.asarray(x), feature_names=names, missing=np.nan), pred_contribs=True
        )
    ),
    "shap_cpu_1_thread": lambda x: cpu.booster.predict(
        xgb.DMatrix(x, feature_names=names, missing=np.nan), pred_contribs=True
    ),
    "predict_gpu_inplace_cupy": gpu.predict,
    "predict_cpu_1_thread": cpu.predict,
    "model_contributions_gpu": gpu.contributions,
}
a = ways["shap_gpu_host_dmatrix"](x_all[:50])
b = np.asarray(ways["shap_gpu_cupy_dmatrix"](x_all[:50]))
c = ways["shap_cpu_1_thread"](x_all[:50])
rows = []
for n in (1, 2, 5, 10, 20, 50, 100, 500, 2000):
    x = x_all[1000 : 1000 + n]
    rows.append({"rows": n, **{k: median_ms(f, x) for k, f in ways.items()}})
    print(rows[-1], flush=True)
result = {
    "model": gpu.version,
    **gpu.shape(),
    "ms_per_call": rows,
    "max_abs_diff_cupy_vs_host": float(np.abs(a - b).max()),
    "max_abs_diff_gpu_vs_cpu": float(np.abs(a - c).max()),
}
out.write_text(json.dumps(result, indent=2) + "\n")
print({k: v for k, v in result.items() if k.startswith("max")})
