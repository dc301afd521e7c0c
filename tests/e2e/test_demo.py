"""``fraudstream demo`` bounded: history -> validation -> champion -> card states seeded -> worker -> live
traffic scored."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import psycopg

from app.settings import Settings
from tests.e2e.cli import fraudstream
from tests.e2e.test_ui_browser import free_port
from tests.kafka_helpers import drain
from tests.services import fresh_database, unique


def test_demo_runs_bounded_and_scores_live_traffic(settings: Settings, tmp_path: Path) -> None:
    topic, scores = unique("e2e-demo-tx"), unique("e2e-demo-scores")
    with fresh_database(settings, "e2e_demo") as db:
        env = {
            "FRAUDSTREAM_PG_DB": db,
            "FRAUDSTREAM_TOPIC_TRANSACTIONS": topic,
            "FRAUDSTREAM_TOPIC_SCORES": scores,
            "FRAUDSTREAM_TOPIC_FEEDBACK": unique("e2e-demo-fb"),
            "FRAUDSTREAM_TOPIC_DLQ": unique("e2e-demo-dlq"),
            "FRAUDSTREAM_TOPIC_RETRAIN": unique("e2e-demo-retrain"),  # not another test's requests
            "FRAUDSTREAM_APP_ID": unique("e2e-demo"),
            "FRAUDSTREAM_DATA_DIR": str(tmp_path / "data"),
            "FRAUDSTREAM_MODELS_DIR": str(tmp_path / "models"),
            "FRAUDSTREAM_REPORTS_DIR": str(tmp_path / "reports"),
            "FRAUDSTREAM_FEAST_DIR": str(tmp_path / "feast"),
            "FRAUDSTREAM_FEATURE_LOG_DIR": str(tmp_path / "log"),
            "FRAUDSTREAM_UI_PORT": str(free_port()),
        }
        # the demo's default world (1,000 cards, 90 days): ~1,500 live transactions hold ~12 frauds, and
        # its champion (recall 0.77 at 1 % FPR on its holdout) flags some of them
        demo = fraudstream("demo", "--duration", "15", "--rate", "100", "--customers", "1000", env=env)
        assert demo.returncode == 0, demo.stderr[-3000:]
        out = demo.stdout
        assert "validate: ok:" in out
        assert "merchants materialised online" in out
        assert "promoted to champion (no champion yet)" in out
        assert "worker stopped" in out
        assert "demo: trainer running (log: " in out
        assert re.search(r"analyst UI at http://127\.0\.0\.1:\d+/ \(log in as 'demo', password \S+\)", out), (
            out
        )
        (seeded,) = [int(ln.split()[1].replace(",", "")) for ln in out.splitlines() if ln.startswith("seed:")]
        assert seeded > 900, "a fresh worker starts knowing the history's cards (app/seed.py)"
        (live,) = [int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("produce: ")]
        assert 1_300 <= live <= 1_600, out

        with psycopg.connect(settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)) as conn:
            decisions, versions = conn.execute(
                "select count(*), count(distinct model_version) from decisions"
            ).fetchone() or (0, 0)
            (alerts,) = conn.execute("select count(*) from alerts").fetchone() or (0,)
            (audited,) = conn.execute("select count(*) from decisions where shap is not null").fetchone() or (
                0,
            )
            (hurried,) = conn.execute(
                "select avg((((features->>'seconds_since_prev')::float8) < 60)::int) from decisions"
            ).fetchone() or (1.0,)
        streamed = len(drain(settings.kafka_servers, topic, expected=10**9, timeout_s=10))
        assert decisions == streamed == live, "every transaction the demo streamed was decided"
        assert versions == 1
        assert 0 < alerts < decisions
        assert audited >= alerts
        # live traffic keeps each card's pace (0.3 % of training rows follow their card's last
        # transaction within a minute); stamped with the wall clock, ~half of them did, at 6,000 km/h
        assert hurried < 0.02, hurried
        events = drain(settings.kafka_servers, scores, expected=decisions, timeout_s=30)
        assert len({orjson.loads(e.value)["txn_id"] for e in events}) == decisions
