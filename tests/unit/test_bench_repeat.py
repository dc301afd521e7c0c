"""``bench --repeat``: the runs it makes, the model it trains once, and the summary it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.bench_repeat import run_repeated, run_summary, summarize
from app.settings import Settings


def result(p99: float, *, steal: float | None = 0.5, lost: int = 0, version: str = "v7") -> dict[str, Any]:
    return {
        "machine": {"cpus": 2},
        "settings": {"rate": 2300.0},
        "model": {"version": version, "trees": 47},
        "event_to_score_ms": {"p50": p99 / 2, "p95": p99 * 0.8, "p99": p99, "max": p99 * 2},
        "steady_event_to_score_ms": {"p99": p99 - 1},
        "scored_per_s": 2301.5,
        "lost": lost,
        "machine_steal_percent": steal,
        "cpu_calibration": {"before": {"min_ms": 5.4, "median_ms": 5.9}},
        "wall_clock_jumps": [],
        "predict_us_per_row": 27.5,
    }


def test_run_summary_takes_each_figure_from_its_run() -> None:
    row = run_summary(result(60.0, steal=3.2, lost=4), "x-r1.json")
    assert row == {
        "file": "x-r1.json", "p50_ms": 30.0, "p99_ms": 60.0, "max_ms": 120.0, "steady_p99_ms": 59.0,
        "scored_per_s": 2301.5, "lost": 4, "steal_percent": 3.2, "calibration_median_ms": 5.9,
        "predict_us_per_row": 27.5, "wall_clock_jumps": 0,
    }  # fmt: skip


def test_summarize_counts_the_runs_within_the_target_and_keeps_every_run() -> None:
    rows = [
        run_summary(result(p99, steal=s), f"r{i}")
        for i, (p99, s) in enumerate([(44, 0.1), (50, 0.0), (120, 9.0)])
    ]
    summary = summarize(rows, target_p99_ms=50)
    assert summary["runs"] == rows
    assert summary["runs_within_target"] == 2  # 50 is within 50
    assert summary["p99_ms"] == {"median": 50.0, "min": 44.0, "max": 120.0}
    assert summary["steal_percent"] == {"median": 0.1, "max": 9.0}
    assert summarize(rows, target_p99_ms=40)["runs_within_target"] == 0


def test_summarize_adds_up_lost_transactions_and_refuses_no_runs() -> None:
    rows = [run_summary(result(40, lost=2), "a"), run_summary(result(45, lost=3, steal=None), "b")]
    summary = summarize(rows, target_p99_ms=50)
    assert summary["lost"] == 5
    assert summary["steal_percent"] == {"median": 0.5, "max": 0.5}  # the run without a reading is left out
    with pytest.raises(ValueError, match="no runs"):
        summarize([], target_p99_ms=50)


def test_run_repeated_trains_once_and_summarizes_only_the_measured_runs(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    p99s = iter([300.0, 48.0, 70.0])

    def fake_run(settings: Settings, out: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append({"out": out.name, **kwargs})
        return result(next(p99s))

    out = tmp_path / "bench" / "p2300.json"
    summary = run_repeated(
        Settings(), out, repeat=2, warmup=1, target_p99_ms=50, run=fake_run, rate=2300.0, duration_s=30.0
    )
    assert [c["out"] for c in calls] == ["p2300-warmup1.json", "p2300-r1.json", "p2300-r2.json"]
    assert calls[0]["model_dir"] is None  # the first run trains the champion, and keeps it
    kept = calls[0]["keep_model"]
    assert kept is not None
    assert [c["model_dir"] for c in calls[1:]] == [kept / "v7", kept / "v7"]  # the rest reuse it
    assert [c["keep_model"] for c in calls[1:]] == [None, None]
    assert all(c["rate"] == 2300.0 and c["duration_s"] == 30.0 for c in calls)
    assert [r["p99_ms"] for r in summary["runs"]] == [48.0, 70.0]  # the warm-up's 300 ms is not among them
    assert summary["runs_within_target"] == 1
    assert summary["settings"] == {"rate": 2300.0, "repeat": 2, "warmup": 1}
    assert json.loads(out.read_text()) == summary


def test_run_repeated_uses_a_given_model_for_every_run(tmp_path: Path) -> None:
    seen: list[tuple[Path | None, Path | None]] = []

    def fake_run(settings: Settings, out: Path, **kwargs: Any) -> dict[str, Any]:
        seen.append((kwargs["model_dir"], kwargs["keep_model"]))
        return result(40.0)

    model = tmp_path / "v3"
    run_repeated(
        Settings(), tmp_path / "s.json", repeat=3, warmup=0, target_p99_ms=50, model_dir=model, run=fake_run
    )
    assert seen == [(model, None)] * 3


@pytest.mark.parametrize(("repeat", "warmup"), [(0, 0), (1, -1)])
def test_run_repeated_refuses_no_runs(tmp_path: Path, repeat: int, warmup: int) -> None:
    with pytest.raises(ValueError, match="repeat must be"):
        run_repeated(
            Settings(),
            tmp_path / "s.json",
            repeat=repeat,
            warmup=warmup,
            target_p99_ms=50,
            run=lambda *a, **k: {},
        )


def test_predict_per_row_is_summed_over_the_workers_scoring_processes() -> None:
    from app.bench_pipeline import predict_us_per_row  # noqa: PLC0415

    stages = [{"predict": 1.2, "rows": 30_000, "batches": 700}, {"predict": 0.6, "rows": 20_000}]
    assert predict_us_per_row(stages) == 36.0  # 1.8 s over 50,000 rows
    assert predict_us_per_row([]) is None
