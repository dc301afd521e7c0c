#!/usr/bin/env bash
# Session 38's GPU check, one device-tool call (`run` with carry [".gpu", "models/<version>"]).
# .gpu/site.tar.xz (built by docs/bench/gpu_site.py): xgboost 3.2.0's manylinux wheel unpacked, its
# fatbin's cubins for other GPUs than sm_90 (H100/H200) zeroed so it travels (131 MB wheel -> 25 MB),
# plus the packages the app's scoring imports that the GPU machine lacks (orjson, pydantic,
# pydantic-core, annotated-types, typing-inspection, typing-extensions) as cp312 wheels unpacked.
# Figures land in $OUT.
set -uo pipefail
M=${1:?model folder}
mkdir -p /tmp/site && tar xJf .gpu/site.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD GX_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a $OUT/gpu.txt
python3 -c "import xgboost as x, cupy, numpy as np
b = x.train({'device': 'cuda', 'max_depth': 3}, x.DMatrix(np.random.rand(512, 4), label=np.arange(512) % 2), 5)
print('xgboost', x.__version__, 'cuda', x.build_info()['USE_CUDA'], 'contribs', b.predict(x.DMatrix(np.ones((2, 4))), pred_contribs=True).shape)" 2>&1 | tee -a $OUT/gpu.txt
bench() { timeout "$1" python3 -m app.model_bench "${@:2}" 2>&1 | tee -a $OUT/log.txt; echo "rc=$? ${*:2}" | tee -a $OUT/log.txt; }
bench 150 --device cuda --model "$M" --stage --out $OUT/champion-cuda.json
bench 150 --device cpu --threads 1 --model "$M" --stage --out $OUT/champion-cpu1.json
bench 150 --device cuda --out $OUT/synthetic-cuda.json
bench 120 --device cpu --threads 16 --model "$M" --stage --out $OUT/champion-cpu16.json
