"""The learning loop end to end on real Kafka + PostgreSQL, through the user-facing processes.

worker (scores, feedback agent) + trainer (`fraudstream train --schedule`): chargebacks on
fraud-feedback -> labels -> retrain request -> the trainer trains and registers a new version ->
promoted only if better on the same holdout -> the running worker scores with whatever is champion.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from app.history import read_history, write_history
from app.schema import TRANSACTION_FIELDS
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.worker.process import isolated_env, running_worker, settings_for
from features.jobs import build_merchant_features
from tests.kafka_helpers import produce_json
from tests.services import fresh_database, unique
from training.jobs import train_job
from training.registry import Registry


def test_confirmed_fraud_retrains_and_the_worker_follows_the_champion(
    settings: Settings, tmp_path: Path
) -> None:
    with fresh_database(settings, "e2e_loop") as db:
        env = {**isolated_env(unique("e2e-loop"), tmp_path), "FRAUDSTREAM_PG_DB": db,
               "FRAUDSTREAM_MODELS_DIR": str(tmp_path / "models"),
               "FRAUDSTREAM_REPORTS_DIR": str(tmp_path / "r"),
               "FRAUDSTREAM_MODEL_POLL_S": "1", "FRAUDSTREAM_RETRAIN_FRAUD_COUNT": "3"}  # fmt: skip
        s = settings_for(env)
        history_dir = tmp_path / "history"
        write_history(
            simulate(SimConfig(customers=300, merchants=600, days=40, seed=5, fraud_scale=3)), history_dir
        )
        history = read_history(history_dir)
        train_job(s, history_dir, seed=0)
        build_merchant_features(s, history_dir)
        registry = Registry(s.pg_conninfo(reveal=True))
        first = registry.champion()
        assert first is not None

        trainer_log = (tmp_path / "trainer.log").open("wb")
        trainer = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "train", "--history", str(history_dir),
             "--schedule", "0 0 1 1 *"],
            env={**os.environ, **env}, stdout=trainer_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            with running_worker(tmp_path / "worker.log", env):
                now = datetime.now(UTC).isoformat()
                frauds = history[history["is_fraud"] == 1].tail(3)
                produce_json(s.kafka_servers, s.topic_feedback, [
                    (r["card_id"], {"txn_id": r["txn_id"], "card_id": r["card_id"], "is_fraud": 1,
                                    "label_time": now, "source": "chargeback"})
                    for r in frauds.to_dict("records")
                ])  # fmt: skip
                deadline = time.monotonic() + 240
                while len(registry.list()) < 2:
                    assert trainer.poll() is None, (tmp_path / "trainer.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()[-3000:]
                    time.sleep(2)
                newest = registry.list()[0]
                assert newest.parent == first.version
                champion = registry.champion()
                assert champion is not None
                log = (tmp_path / "trainer.log").read_text()
                assert "retrain request: confirmed fraud: 3 labels" in log
                # each run adds the audit's settled days to the history first (nothing scored yet here)
                # and, after it, moves the decisions older than the retention to the archive (none here)
                assert (
                    "-> export: no decision in the audit yet; the history is unchanged; archive: nothing"
                    " moved: no export has written " in log
                )
                # then merges the workers' feature log, a file a day, before it trains
                assert re.search(
                    r" \(a decision leaves the database only once the history holds its day\);"
                    r" feature log: [^;]+; train: ",
                    log,
                ), log[-3000:]
                if champion.version == newest.version:
                    assert "promoted to champion" in log
                else:
                    assert "kept as candidate" in log
                    assert champion.version == first.version

                time.sleep(3)  # the worker polls the registry every second
                txn = {k: history.iloc[-1][k] for k in TRANSACTION_FIELDS}
                txn["txn_id"] = unique("after-retrain")
                txn["event_time"] = pd.Timestamp(history.iloc[-1]["event_time"]).isoformat()
                produce_json(s.kafka_servers, s.topic_transactions, [(txn["card_id"], txn)])
                with psycopg.connect(s.pg_conninfo(reveal=True), row_factory=dict_row) as conn:
                    deadline = time.monotonic() + 60
                    while not (rows := conn.execute(
                        "select model_version from decisions where txn_id = %s", (txn["txn_id"],)
                    ).fetchall()):  # fmt: skip
                        assert time.monotonic() < deadline
                        time.sleep(0.5)
                assert rows[0]["model_version"] == champion.version, "the worker scores with the champion"
        finally:
            trainer.terminate()
            trainer.wait(timeout=30)
            trainer_log.close()
