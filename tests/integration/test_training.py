"""Training end to end on real PostgreSQL: point-in-time set, registry, promotion, rollback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.errors import FraudstreamError
from app.history import partitions, read_history, write_history
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.ui.web import create_app
from tests.integration.test_ui import analyst_desk, login
from tests.services import fresh_database
from training.dataset import LABEL, Periods, build_training_frame
from training.jobs import load_model, train_job
from training.registry import Registry


@pytest.fixture
def isolated(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a fresh database (so the registry starts empty) and private folders."""
    with fresh_database(settings, "it_train") as db:
        yield settings.model_copy(
            update={"pg_db": db, "models_dir": tmp_path / "models", "feast_dir": tmp_path / "feast",
                    "feature_log_dir": tmp_path / "log", "reports_dir": tmp_path / "reports"}
        )  # fmt: skip


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    write_history(simulate(SimConfig(customers=400, merchants=800, days=45, seed=13)), root)
    return root


def test_training_set_never_sees_labels_from_after_the_cutoff(isolated: Settings, history: Path) -> None:
    frame_history = read_history(history)
    periods = Periods.make(frame_history, None, 7, isolated.label_delay_days, 7)
    frame = build_training_frame(isolated, frame_history, periods)
    assert len(frame) == len(frame_history), "no entity row is dropped by the point-in-time join"
    by_id = frame_history.set_index("txn_id")
    train = frame[frame["split"].isin(["train", "valid"])]
    late = (by_id.loc[train["txn_id"], "label_time"] > periods.label_known_for_train).to_numpy()
    fraud = by_id.loc[train["txn_id"], "is_fraud"].to_numpy() == 1
    assert (fraud & late).any(), "the simulation has chargebacks that arrive after the cut-off"
    assert (train[LABEL].to_numpy()[fraud & late] == 0).all(), "a label known after the cut-off leaked"
    assert (train["event_time"] < periods.train_end).all()
    test = frame[frame["split"] == "test"]
    assert (test["event_time"] >= periods.test_start).all()
    assert np.isfinite(frame["card_count_24h"]).all()


def test_train_registers_promotes_and_keeps_a_worse_candidate(isolated: Settings, history: Path) -> None:
    first = train_job(isolated, history, seed=0)
    assert "promoted to champion (no champion yet)" in first
    report = Path(first.rsplit("report ", 1)[1])
    assert report.exists()
    assert "| roc_auc |" in report.read_text()
    assert {p.name for p in report.parent.glob("*.png")} == {
        "pr_curve.png",
        "calibration.png",
        "shap_summary.png",
    }
    registry = Registry(isolated.pg_conninfo(reveal=True))
    champion = registry.champion()
    assert champion is not None
    booster, meta = load_model(Path(champion.artefact_dir))
    reference = pd.read_parquet(Path(champion.artefact_dir) / meta["reference"]["file"])
    assert list(reference.columns) == ["event_time", *meta["features"], "score", "label"]
    assert len(reference) == meta["reference"]["rows"] > 0
    assert reference["score"].between(0, 1).all()
    assert meta["features"] == list(booster.feature_names or [])
    assert meta["validation"]["success"] is True
    assert meta["metrics"]["roc_auc"] > 0.75
    assert set(json.loads((Path(champion.artefact_dir) / "metadata.json").read_text())) >= {
        "params", "periods", "versions", "git_commit", "data",
    }  # fmt: skip

    review = meta["metrics"]["at_thresholds"]["review"]
    assert review["threshold"] == isolated.review_threshold
    assert (
        f"at the review threshold {isolated.review_threshold}: {review['flagged_per_day']:,.1f} flagged a day"
        in first
    )
    assert 0 < review["flagged_per_day"] < meta["metrics"]["rows"] / 7, (
        "the holdout's 7 days, a share of them flagged"
    )
    assert meta["metrics"]["at_thresholds"]["decline"]["flagged_per_day"] <= review["flagged_per_day"]
    capacity = meta["metrics"]["at_thresholds"]["capacity"]
    assert capacity["capacity_per_day"] == isolated.review_capacity_per_day
    assert 0 < capacity["flagged_per_day"] <= isolated.review_capacity_per_day
    assert f"(for {isolated.review_capacity_per_day:g} a day it would be {capacity['threshold']}: " in first

    second = train_job(isolated, history, seed=0)  # same data, same seed: the same AP, not better
    assert "kept as candidate" in second
    table = Path(second.rsplit("report ", 1)[1]).read_text()
    assert f"| review {isolated.review_threshold} | this model | {review['flagged_per_day']} |" in table
    assert f"| review {isolated.review_threshold} | champion | {review['flagged_per_day']} |" in table, (
        "the champion beside it, on the same holdout"
    )
    assert f"| {isolated.review_capacity_per_day:g} a day: {capacity['threshold']} | champion |" in table
    versions = registry.list()
    assert [m.status for m in versions] == ["candidate", "champion"]
    assert versions[0].parent == champion.version

    registry.promote(versions[0].version)
    assert registry.champion().version == versions[0].version  # type: ignore[union-attr]
    assert registry.rollback() == champion.version
    assert registry.champion().version == champion.version  # type: ignore[union-attr]
    with pytest.raises(FraudstreamError, match="no model version"):
        registry.promote("v-nope")


def test_invalid_history_trains_nothing(isolated: Settings, history: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    write_history(read_history(history), broken)
    target = partitions(broken)[3].path
    frame = pq.read_table(target).to_pandas()
    frame.loc[frame.index[:5], "amount"] = -1.0
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target)
    with pytest.raises(FraudstreamError, match="history failed validation, no model trained"):
        train_job(isolated, broken)
    assert not isolated.models_dir.exists() or not any(isolated.models_dir.iterdir())


def test_a_holdout_with_let_through_declines_counts_each_row_by_its_weight(
    isolated: Settings, history: Path, tmp_path: Path
) -> None:
    """As the export writes it: declines nobody labelled weigh 0 (out of every set), the would-be
    declines let through stand for them. The metrics, the report and the UI's models page say so."""
    frame = read_history(history)
    periods = Periods.make(frame, None, 7, isolated.label_delay_days, 7)
    test_week = (frame["event_time"] >= periods.test_start).to_numpy()
    frauds = np.flatnonzero(test_week & (frame["is_fraud"] == 1).to_numpy())
    let_through, unseen = frauds[0:20:2], frauds[1:20:2]
    frame.loc[let_through, "weight"] = 2.0
    frame.loc[unseen, ["fraud_scenario", "is_fraud", "weight"]] = ["unobserved", 0, 0.0]
    weighted = tmp_path / "weighted"
    write_history(frame, weighted)

    line = train_job(isolated, weighted, seed=0)
    assert "promoted to champion" in line, line
    champion = Registry(isolated.pg_conninfo(reveal=True)).champion()
    assert champion is not None
    metrics = champion.metrics
    held = int(test_week.sum()) - len(unseen)
    assert metrics["rows"] == held, "the unobserved rows are in no set"
    assert metrics["weighted"] == {
        "rows": float(held + len(let_through)),
        "frauds": float(metrics["frauds"] + len(let_through)),
        "let_through": len(let_through),
    }
    report = Path(line.rsplit("report ", 1)[1]).read_text()
    assert f"The holdout's {held:,} rows stand for {held + len(let_through):,} transactions" in report

    ui, _ = analyst_desk(isolated.pg_conninfo(reveal=True))
    client = TestClient(create_app(ui, lambda _: None, tmp_path / "reports"), follow_redirects=False)
    login(client, "ana")
    page = client.get("/models").text
    assert f"title=\"The holdout's {held:,} rows stand for" in page
    assert 'id="weighted-note"' in page
