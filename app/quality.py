"""``fraudstream quality``: the data-quality reports CI publishes under ``reports/``.

1. GX data docs for a simulated history (``validation/``); a failure fails the command.
2. GX data docs for the point-in-time training set built from it (``training_set/``); same.
3. Evidently drift reports between two simulated periods of that history's card features: the later
   one unchanged (``drift-none/``) and with injected drift, amounts x3 and every fourth
   transaction abroad (``drift-injected/``); the command fails if the injected drift goes unseen or
   the unchanged period is reported as drifted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.errors import FraudstreamError
from app.history import read_history, write_history
from app.settings import Settings
from app.simulator.model import SimConfig, simulate


def quality_reports(settings: Settings, out: Path, *, customers: int = 300, days: int = 40,
                    echo: Callable[[str], None] = print) -> None:  # fmt: skip
    from app.drift import drift_report  # noqa: PLC0415 - Evidently import is slow
    from expectations.validate import validate_frame, validate_history  # noqa: PLC0415
    from training.dataset import MODEL_FEATURES, Periods, build_training_frame  # noqa: PLC0415

    history_dir = out / "history"
    config = SimConfig(customers=customers, merchants=2 * customers, days=days, seed=7)
    write_history(simulate(config), history_dir)
    checked = validate_history(history_dir, out / "validation")
    echo(f"quality: history {checked.one_line()} -> {checked.data_docs}")
    if not checked.success:
        raise FraudstreamError(f"simulated history failed validation: {checked.one_line()}")

    history = read_history(history_dir)
    local = settings.model_copy(update={"feast_dir": out / "feast", "feature_log_dir": out / "feature_log"})
    frame = build_training_frame(local, history, Periods.make(history, None, 7, settings.label_delay_days, 7))
    training = validate_frame(frame, out / "training_set", "training_set")
    echo(f"quality: training set {training.one_line()} -> {training.data_docs}")
    if not training.success:
        raise FraudstreamError(f"training set failed validation: {training.one_line()}")

    columns = list(MODEL_FEATURES)
    middle = frame["event_time"].min() + (frame["event_time"].max() - frame["event_time"].min()) / 2
    early, late = frame[frame["event_time"] < middle], frame[frame["event_time"] >= middle]
    halves = early.sample(frac=0.5, random_state=0), early.sample(frac=0.5, random_state=1)
    same = drift_report(*halves, columns, out / "drift-none")
    echo(f"quality: same period, two samples: {same.one_line(0.3)}")
    shifted = late.copy()
    rng = np.random.default_rng(0)
    shifted["amount"] *= 3
    shifted["amount_to_mean_30d"] *= 3
    abroad = rng.random(len(shifted)) < 0.25
    shifted.loc[abroad, "new_country"] = 1.0
    shifted.loc[abroad, "km_from_home"] += 1_500.0
    injected = drift_report(early, shifted, columns, out / "drift-injected")
    echo(f"quality: injected drift: {injected.one_line(0.3)}")
    if same.drifted:
        raise FraudstreamError(f"two samples of one period reported as drifted: {same.one_line(0.3)}")
    if not {"amount", "new_country"} <= {c.column for c in injected.drifted}:
        raise FraudstreamError(f"injected drift not detected: {injected.one_line(0.3)}")
    echo(f"quality: reports under {out}")
