"""Session 37: what stale merchant features cost the live model (docs/bench/merchant-refresh-s37.json).

The demo's world (1,000 customers, 2,000 merchants, seed 42), 150 days. A champion trained on days 0-90
as ``train_job`` trains it (``build_training_frame`` + ``fit``). Days 90-150 scored with the card
features of the same fold over the whole history, and the merchant features of each transaction's day
(rebuilt daily: the trainer's refresh), of its day rounded down to every 7th or 15th, or of day 90
(never refreshed: the demo before session 37, between its retrains). Graded on the true labels.

    PYTHONPATH=. .venv/bin/python docs/bench/merchant-refresh-s37.py docs/bench/merchant-refresh-s37.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from features.backfill import card_feature_frame
from features.merchant import MERCHANT_FEATURES, merchant_daily_features
from features.model_input import ONE_HOT_CHANNELS
from training.dataset import Periods, build_training_frame
from training.train import fit, predict

FIRST_LIVE_DAY = 90
REFRESH = {"daily": 1, "every_7_days": 7, "every_15_days": 15, "frozen_at_day_90": 0}


def main(out: Path) -> None:
    settings = Settings(feast_dir=Path(tempfile.mkdtemp()) / "feast")
    world = simulate(SimConfig(customers=1000, merchants=2000, days=150, start=date(2026, 1, 1), seed=42))
    origin = world["event_time"].min().normalize()
    day = ((world["event_time"] - origin) // pd.Timedelta(days=1)).to_numpy()
    trained_on = world[day < FIRST_LIVE_DAY].reset_index(drop=True)
    periods = Periods.make(trained_on, None, 7, settings.label_delay_days, 7)
    frame = build_training_frame(settings, trained_on, periods)
    booster = fit(frame, seed=0, threads=2).booster
    test = frame[frame["split"] == "test"]
    result: dict[str, object] = {
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "holdout_average_precision": round(
            float(average_precision_score(test["label"], predict(booster, test))), 4
        ),
    }

    live = day >= FIRST_LIVE_DAY
    cards = card_feature_frame(world).set_index("txn_id").loc[world["txn_id"]].reset_index()
    base = cards[live].reset_index(drop=True)
    for channel in ONE_HOT_CHANNELS:
        base[f"channel_{channel}"] = (world.loc[live, "channel"].to_numpy() == channel).astype(np.float64)
    daily = merchant_daily_features(world, settings.label_delay_days)  # each day's labels as known then
    daily["day"] = ((daily["event_timestamp"] - origin) // pd.Timedelta(days=1)).astype(int)
    live_day = pd.Series(day[live])
    y = world.loc[live, "is_fraud"].to_numpy()
    scenario = world.loc[live, "fraud_scenario"].to_numpy()
    for name, every in REFRESH.items():
        built = FIRST_LIVE_DAY + ((live_day - FIRST_LIVE_DAY) // every) * every if every else FIRST_LIVE_DAY
        keys = pd.DataFrame({"merchant_id": world.loc[live, "merchant_id"].to_numpy(), "day": built})
        merchants = keys.merge(
            daily[["merchant_id", "day", *MERCHANT_FEATURES]], on=["merchant_id", "day"], how="left"
        )
        x = base.assign(**{f: merchants[f].to_numpy() for f in MERCHANT_FEATURES})
        score = predict(booster, x)
        flagged = score >= settings.review_threshold
        result[name] = {
            "average_precision": round(float(average_precision_score(y, score)), 4),
            "roc_auc": round(float(roc_auc_score(y, score)), 4),
            "recall_at_review": round(float((flagged & (y == 1)).sum() / y.sum()), 4),
            "precision_at_review": round(float((flagged & (y == 1)).sum() / max(1, flagged.sum())), 4),
            "recall_by_scenario": {
                s: round(float(flagged[scenario == s].mean()), 3) for s in sorted(set(scenario) - {"none"})
            },
        }
        sys.stdout.write(f"{name}: {json.dumps(result[name])}\n")
    result["live_rows"], result["live_frauds"] = int(live.sum()), int(y.sum())
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
