"""Drift reports: two samples of one distribution show no drift; a shifted sample does, in its columns."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.drift import drift_report, parse_window
from app.errors import FraudstreamError

COLUMNS = ["amount", "kmh_from_prev", "new_country", "card_count_24h", "score"]


def sample(n: int, seed: int, *, amount_scale: float = 1.0, foreign: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 0.8, n) * amount_scale,
            "kmh_from_prev": rng.exponential(20, n),
            "new_country": (rng.random(n) < foreign).astype(float),
            "card_count_24h": rng.poisson(3, n).astype(float) + 1,
            "score": rng.beta(1, 60, n),
        }
    )


def test_two_samples_of_one_distribution_show_no_drift(tmp_path: Path) -> None:
    result = drift_report(sample(5_000, 1), sample(3_000, 2), COLUMNS, tmp_path)
    assert result.drifted == []
    assert result.share == 0
    assert {c.column for c in result.columns} == set(COLUMNS)
    assert result.html.exists()
    assert result.json.exists()
    assert "drift: ok: 0/5 columns drifted" in result.one_line(0.3)
    assert "3,000 current vs 5,000 reference rows" in result.one_line(0.3)
    result.extra["sample"] = {"fraction": 0.01, "decisions_read": 3_000, "decisions_in_window": 300_000}
    assert "3,000 current (sampled evenly from the window's ~300,000) vs 5,000" in result.one_line(0.3)


def test_amounts_times_three_and_a_new_country_mix_are_reported(tmp_path: Path) -> None:
    result = drift_report(sample(5_000, 1), sample(3_000, 2, amount_scale=3, foreign=0.4), COLUMNS, tmp_path)
    assert {c.column for c in result.drifted} == {"amount", "new_country"}
    assert result.share == pytest.approx(2 / 5)
    line = result.one_line(0.3)
    assert line.startswith("drift: DRIFT: 2/5 columns drifted")
    assert "amount (" in line
    assert "new_country (" in line


def test_windows() -> None:
    assert parse_window("24h") == timedelta(hours=24)
    assert parse_window("90m") == timedelta(minutes=90)
    with pytest.raises(FraudstreamError, match="a number and a unit"):
        parse_window("soon")


def test_the_trainer_runs_drift_once_per_period(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import app.drift as drift  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415

    calls: list[timedelta] = []

    def fake_job(_settings: Settings, window: timedelta, _out: Path, _threshold: float) -> object:
        calls.append(window)
        raise FraudstreamError("only 3 decisions in the last 1:00:00: too few to judge drift")

    monkeypatch.setattr(drift, "drift_job", fake_job)
    clock = [0.0]
    check = drift.DriftCheck(Settings(drift_every_s=3600), tmp_path, clock=lambda: clock[0])
    check.maybe_run()
    clock[0] = 3599
    check.maybe_run()
    assert calls == []
    clock[0] = 3600
    check.maybe_run()  # a failed check is logged, never raised: the schedule goes on
    check.maybe_run()
    assert calls == [timedelta(hours=1)]


def test_label_drift_waits_for_enough_labels_then_compares_fraud_rates(tmp_path: Path) -> None:
    from app.drift import MIN_LABELS, label_drift  # noqa: PLC0415

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"label": (rng.random(5_000) < 0.01).astype(float)})
    few = pd.DataFrame({"label": [1.0] * (MIN_LABELS - 1) + [np.nan] * 500})
    assert label_drift(reference, few, tmp_path / "few") is None, "unlabelled decisions do not count"
    same = pd.DataFrame({"label": (rng.random(2_000) < 0.01).astype(float)})
    found = label_drift(reference, same, tmp_path / "same")
    assert found is not None
    assert not found.drifted
    burst = pd.DataFrame({"label": (rng.random(400) < 0.3).astype(float)})
    found = label_drift(reference, burst, tmp_path / "burst")
    assert found is not None
    assert found.drifted
