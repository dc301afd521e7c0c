"""``fraudstream bench --suite pipeline --repeat N``: the same pipeline run N times, and their spread.

On the shared 2-core VM one paced run decides little: at 2,300 txn/s the p99 of a run has ranged
from 41 to 273 ms on the same code, and the CPU the hypervisor stole in that run
(``machine_steal_percent``) decided most of it (sessions 21-24). Sessions measured by hand: warm
the broker (its JIT compiler took ~24 s of CPU over its first three runs), then many runs, each with
its steal. This is that protocol as one command:

- ``--warmup W`` runs first, at the same settings, written (``<out>-warmup<k>.json``) and left out
  of the summary;
- then ``--repeat N`` runs (``<out>-r<k>.json``, each with its logs and batch trace, as a single
  run writes them);
- the champion is trained once, by the first run, and kept for the others (the same model: the
  simulated history and the training are seeded);
- ``out`` gets the summary (``summarize``): each run's latency, throughput, loss, steal and CPU
  calibration, the median / min / max p99, and how many runs had a p99 within ``--target-p99-ms``.

Nothing is left out of a run's figures; a run with transactions lost fails the command after the
summary is written, as a single run does.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import Settings

Runner = Callable[..., dict[str, Any]]


def run_summary(result: dict[str, Any], file: str) -> dict[str, Any]:
    """One run's figures for the summary: ``result`` as ``run_pipeline_bench`` returns it."""
    e2e = result["event_to_score_ms"]
    steady = result.get("steady_event_to_score_ms") or {}
    calibration = result.get("cpu_calibration", {}).get("before", {})
    return {
        "file": file,
        "p50_ms": e2e["p50"],
        "p99_ms": e2e["p99"],
        "max_ms": e2e["max"],
        "steady_p99_ms": steady.get("p99"),
        "scored_per_s": result["scored_per_s"],
        "lost": result["lost"],
        "steal_percent": result.get("machine_steal_percent"),
        "calibration_median_ms": calibration.get("median_ms"),
        "predict_us_per_row": result.get("predict_us_per_row"),  # the host's speed during the run
        "wall_clock_jumps": len(result.get("wall_clock_jumps", [])),
    }


def summarize(runs: Sequence[dict[str, Any]], target_p99_ms: float) -> dict[str, Any]:
    """The spread of ``runs`` (``run_summary`` rows): p99 median / min / max, and the runs within
    the target. No run is dropped or weighted: steal is reported beside each, not corrected for."""
    if not runs:
        raise ValueError("no runs to summarize")
    p99 = np.array([r["p99_ms"] for r in runs], dtype=float)
    steal = [r["steal_percent"] for r in runs if r["steal_percent"] is not None]
    return {
        "runs": list(runs),
        "p99_ms": {
            "median": round(float(np.median(p99)), 1),
            "min": round(float(p99.min()), 1),
            "max": round(float(p99.max()), 1),
        },
        "target_p99_ms": target_p99_ms,
        "runs_within_target": int((p99 <= target_p99_ms).sum()),
        "steal_percent": {"median": round(float(np.median(steal)), 1), "max": max(steal)} if steal else None,
        "lost": sum(r["lost"] for r in runs),
    }


def run_repeated(
    settings: Settings, out: Path, *, repeat: int, warmup: int, target_p99_ms: float,
    model_dir: Path | None = None, run: Runner | None = None, **bench: Any,
) -> dict[str, Any]:  # fmt: skip
    """``warmup`` + ``repeat`` runs of ``run`` (``run_pipeline_bench``; ``bench``: its settings),
    the summary written to ``out`` and returned."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be at least 1 and warmup at least 0 (got {repeat}, {warmup})")
    if run is None:
        from app.bench_pipeline import run_pipeline_bench  # noqa: PLC0415

        run = run_pipeline_bench
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-model-") as kept:
        for k in range(warmup + repeat):
            measured = k >= warmup
            name = f"{out.stem}-r{k - warmup + 1}" if measured else f"{out.stem}-warmup{k + 1}"
            target = out.with_name(name + out.suffix)
            keep = Path(kept) if model_dir is None else None
            result = run(settings, target, model_dir=model_dir, keep_model=keep, **bench)
            if keep is not None:  # trained once, by the first run: its folder, under its version
                model_dir = keep / result["model"]["version"]
            first = first or result
            if measured:
                rows.append(run_summary(result, target.name))
    summary = {
        "suite": "pipeline-repeat",
        "machine": first.get("machine"),
        "settings": first.get("settings", {}) | {"repeat": repeat, "warmup": warmup},
        "model": first.get("model"),
        **summarize(rows, target_p99_ms),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
