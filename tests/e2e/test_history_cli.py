"""The history commands as a user runs them: simulate -> validate -> produce, and their failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from app.history import partitions
from app.settings import Settings
from tests.e2e.cli import fraudstream
from tests.kafka_helpers import drain
from tests.services import unique


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
