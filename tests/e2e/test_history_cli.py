"""The history commands as a user runs them: simulate -> validate -> produce, and their failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from app.history import partitions
from app.settings import Settings
from tests.kafka_helpers import drain
from tests.services import unique


def fraudstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "False", **(env or {})},
        timeout=300,
    )


def test_simulate_validate_produce(settings: Settings, tmp_path: Path) -> None:
    history, report = tmp_path / "history", tmp_path / "report"
    sim = fraudstream("simulate", "--out", str(history), "--customers", "300", "--merchants", "600",
                      "--days", "8", "--seed", "4", "--start", "2026-01-05")  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert sim.stdout.startswith("simulate: ")
    assert len(partitions(history)) == 8
    rows = sum(pq.read_metadata(p.path).num_rows for p in partitions(history))

    ok = fraudstream("validate", str(history), "--report", str(report))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith(f"validate: ok: {rows} rows in 8 partitions")
    assert (report / "gx").is_dir()

    topic = unique("e2e-tx")
    env = {"FRAUDSTREAM_TOPIC_TRANSACTIONS": topic, "FRAUDSTREAM_TOPIC_FEEDBACK": unique("e2e-fb")}
    produced = fraudstream("produce", "--from", str(history), "--rate", "0", env=env)
    assert produced.returncode == 0, produced.stderr
    assert f"produce: {rows} transactions" in produced.stdout
    assert "0 failed" in produced.stdout
    assert len(drain(settings.kafka_servers, topic, expected=rows)) == rows


def test_bad_inputs_fail_with_one_line(tmp_path: Path) -> None:
    history = tmp_path / "history"
    assert fraudstream("simulate", "--out", str(history), "--customers", "200", "--merchants", "400",
                       "--days", "3").returncode == 0  # fmt: skip
    broken = tmp_path / "broken"
    shutil.copytree(history, broken)
    target = partitions(broken)[0].path
    frame = pq.read_table(target).to_pandas()
    frame.loc[frame.index[:4], "card_id"] = "4111111111111111"
    frame.to_parquet(target)

    failed = fraudstream("validate", str(broken), "--report", str(tmp_path / "report"))
    assert failed.returncode == 1
    assert failed.stderr.strip().count("\n") == 0
    assert "never a card number" in failed.stderr
    assert "(4 rows)" in failed.stderr
    assert "quarantine" in failed.stdout
    assert (tmp_path / "report" / "quarantine.parquet").exists()

    missing = fraudstream("produce", "--from", str(tmp_path / "nope"), "--rate", "0")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"fraudstream: error: history folder {tmp_path / 'nope'} does not exist"

    neither = fraudstream("produce")
    assert neither.returncode == 1
    assert neither.stderr.strip() == "fraudstream: error: give either --from DIR (replay) or --live"

    bad_scenario = fraudstream("simulate", "--out", str(tmp_path / "x"), "--disable", "aliens")
    assert bad_scenario.returncode == 1
    assert bad_scenario.stderr.strip() == "fraudstream: error: unknown scenario(s): aliens"


def test_demo_runs_bounded_and_streams(settings: Settings, tmp_path: Path) -> None:
    topic = unique("e2e-demo-tx")
    env = {
        "FRAUDSTREAM_TOPIC_TRANSACTIONS": topic,
        "FRAUDSTREAM_TOPIC_FEEDBACK": unique("e2e-demo-fb"),
        "FRAUDSTREAM_DATA_DIR": str(tmp_path / "data"),
        "FRAUDSTREAM_REPORTS_DIR": str(tmp_path / "reports"),
        "FRAUDSTREAM_FEAST_DIR": str(tmp_path / "feast"),
        "FRAUDSTREAM_FEATURE_LOG_DIR": str(tmp_path / "log"),
        "FRAUDSTREAM_APP_ID": unique("e2e-demo"),
        "FRAUDSTREAM_TOPIC_DLQ": unique("e2e-demo-dlq"),
    }
    demo = fraudstream("demo", "--duration", "6", "--rate", "100", "--customers", "200", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "validate: ok:" in demo.stdout
    assert (tmp_path / "reports" / "demo" / "validation" / "summary.json").exists()
    line = next(ln for ln in demo.stdout.splitlines() if ln.startswith("produce: "))
    sent = int(line.split()[1])
    assert 500 <= sent <= 620
    assert len(drain(settings.kafka_servers, topic, expected=sent)) == sent
    assert "merchants materialised online" in demo.stdout
    assert "worker stopped" in demo.stdout
    featurised = ds.dataset(tmp_path / "log" / "card_features", format="parquet").count_rows()
    assert 0 < featurised <= sent, "the demo's worker computed features for the live traffic"
