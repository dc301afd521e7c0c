"""`fraudstream init` (the compose init service's command) run locally: topics, tables, champion, admin."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from kafka import KafkaAdminClient

from app.kafka_admin import records_in
from app.settings import Settings
from features.merchant import MERCHANT_FEATURES
from features.store import MERCHANT_VIEW, close_store, feature_store
from tests.e2e.cli import fraudstream
from tests.services import ROOT, fresh_database, unique


def test_init_prepares_an_empty_deployment_once(settings: Settings, tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = list(compose["services"]["init"]["command"])
    assert command[:3] == ["init", "--history", "/data/history"]
    command[2] = str(tmp_path / "history")  # the compose volume path, here a temporary folder
    command[command.index("--customers") + 1] = "300"  # a small world: the test is about the wiring
    command[command.index("--days") + 1] = "30"
    prefix = unique("e2e-init")
    with fresh_database(settings, "e2e_init") as db:
        env = {
            "FRAUDSTREAM_PG_DB": db,
            "FRAUDSTREAM_APP_ID": prefix,  # its own card-state changelog
            "FRAUDSTREAM_ADMIN_PASSWORD": "first admin's password",
            "FRAUDSTREAM_DATA_DIR": str(tmp_path / "data"),
            "FRAUDSTREAM_MODELS_DIR": str(tmp_path / "models"),
            "FRAUDSTREAM_REPORTS_DIR": str(tmp_path / "reports"),
            "FRAUDSTREAM_FEAST_DIR": str(tmp_path / "feast"),
            "FRAUDSTREAM_FEATURE_LOG_DIR": str(tmp_path / "log"),
            **{f"FRAUDSTREAM_TOPIC_{t}": f"{prefix}-{t.lower()}" for t in
               ("TRANSACTIONS", "SCORES", "DLQ", "FEEDBACK", "RETRAIN")},
        }  # fmt: skip
        first = fraudstream(*command, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "promoted to champion (no champion yet)" in first.stdout
        assert "admin user 'admin' created" in first.stdout
        seeded = [ln for ln in first.stdout.splitlines() if ln.startswith("seed: ")]
        assert len(seeded) == 1, first.stdout
        assert seeded[0].endswith(f"-> {prefix}-card-state-changelog"), seeded
        assert "(0 of them from the decision audit)" in seeded[0], (
            "init reads the audit (nothing decided yet)"
        )
        with psycopg.connect(settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)) as conn:
            (champions,) = conn.execute(
                "select count(*) from model_registry where status = 'champion'"
            ).fetchone() or (0,)
            (admins,) = conn.execute("select count(*) from users where role = 'admin'").fetchone() or (0,)
            tables = {
                r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")
            }
        assert (champions, admins) == (1, 1)
        assert {
            "decisions",
            "alerts",
            "block_list",
            "labels",
            "users",
            "action_log",
            "model_registry",
        } <= tables
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers)
        try:
            assert {f"{prefix}-{t}" for t in ("transactions", "scores", "dlq", "feedback", "retrain")} <= set(
                admin.list_topics()
            )
        finally:
            admin.close()

        (tmp_path / "feast" / "online.db").unlink()  # a new online store (another layout, a lost volume)
        again = fraudstream(*command, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "in the registry; not training" in again.stdout
        assert "admin user" not in again.stdout
        assert f"seed: {prefix}-card-state-changelog already holds" in again.stdout, "seeded once"
        assert "merchants materialised online" in again.stdout, "the worker finds the merchants"
        daily = pd.read_parquet(tmp_path / "feast" / "merchant_features.parquet")
        merchant = daily[daily["event_timestamp"] == daily["event_timestamp"].max()].iloc[0]
        local = settings.model_copy(update={"feast_dir": tmp_path / "feast", "pg_db": db})
        store = feature_store(local, apply=False)
        try:
            online = store.get_online_features(
                features=[f"{MERCHANT_VIEW}:{n}" for n in MERCHANT_FEATURES],
                entity_rows=[{"merchant_id": merchant["merchant_id"]}],
            ).to_dict()
        finally:
            close_store(store)
        assert [online[n][0] for n in MERCHANT_FEATURES] == pytest.approx(
            [merchant[n] for n in MERCHANT_FEATURES]
        )

        # A history replaced under an existing champion, a card number in it, and nothing seeded yet
        # (another app id: an empty changelog): init validates before seeding, and refuses.
        part = sorted((tmp_path / "history").glob("date=*/*.parquet"))[-1]
        table = pq.read_table(part)
        card_ids = table.column("card_id").to_pylist()
        card_ids[0] = "4111111111111111"  # Luhn-valid: a PAN
        pq.write_table(table.set_column(table.schema.get_field_index("card_id"), "card_id", [card_ids]), part)
        env["FRAUDSTREAM_APP_ID"] = f"{prefix}-replaced"
        refused = fraudstream(*command, env=env)
        assert refused.returncode != 0, refused.stdout[-3000:]
        assert "failed validation; card states not seeded" in refused.stderr, refused.stderr[-3000:]
        assert "card_id must be a token" in refused.stdout, refused.stdout[-3000:]
        assert not any(ln.startswith("seed: ") for ln in refused.stdout.splitlines())
        assert records_in(settings, f"{prefix}-replaced-card-state-changelog") == 0
