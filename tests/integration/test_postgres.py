"""Write and read the real local PostgreSQL with psycopg 3 (and its pool)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from app.feedback import FeedbackService
from app.scoring.decide import Decision
from app.scoring.reasons import rule_reason
from app.scoring.store import DecisionStore, _copy, migrate
from app.settings import Settings
from tests.services import fresh_database, unique
from tests.ui_data import populate

HOSTILE = "Robert'); DROP TABLE students;-- \u00e9\u6f22 \\x00"


def test_parameterised_round_trip(settings: Settings) -> None:
    table = unique("it_pg").replace("-", "_")
    with psycopg.connect(settings.pg_conninfo(reveal=True), autocommit=True) as conn:
        conn.execute(f"create table {table} (txn_id text primary key, note text, amount numeric(12,2))")
        try:
            with conn.transaction():
                conn.cursor().executemany(
                    f"insert into {table} (txn_id, note, amount) values (%s, %s, %s)",
                    [("t1", HOSTILE, 12.5), ("t2", "plain", 7)],
                )
            conn.execute(
                f"insert into {table} (txn_id, note, amount) values (%s, %s, %s)"
                " on conflict (txn_id) do nothing",
                ("t1", "duplicate", 99),
            )
            rows = conn.execute(f"select txn_id, note, amount::float from {table} order by txn_id").fetchall()
        finally:
            conn.execute(f"drop table {table}")
    assert rows == [("t1", HOSTILE, 12.5), ("t2", "plain", 7.0)]


def test_connection_pool_serves_queries(settings: Settings) -> None:
    with ConnectionPool(settings.pg_conninfo(reveal=True), min_size=1, max_size=3, open=True) as pool:
        results = []
        for _ in range(5):
            with pool.connection() as conn:
                results.append(conn.execute("select current_database(), 1 + 1").fetchone())
    assert results == [(settings.pg_db, 2)] * 5


def test_a_replayed_batch_never_duplicates_audit_rows_or_alerts(settings: Settings, tmp_path: Path) -> None:
    with fresh_database(settings, "store-replay") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        migrate(conninfo)
        decisions = populate(conninfo, tmp_path / "model", n=12)  # written once (the COPY path)
        first_half = decisions[:6]
        store = DecisionStore(conninfo)
        try:
            store.write(first_half)  # a replay of recorded decisions
            assert store.replays == 1
            extra = [
                replace(d, txn=d.txn.model_copy(update={"txn_id": d.txn.txn_id + "-new"})) for d in first_half
            ]
            store.write(decisions[6:] + extra)  # partly recorded: the new ones are added
            assert store.replays == 2
            fresh = replace(extra[1], txn=extra[1].txn.model_copy(update={"txn_id": "fresh"}))
            store.write([extra[0], fresh])
        finally:
            store.close()
        with psycopg.connect(conninfo) as conn:
            audit = conn.execute("select txn_id from decisions order by txn_id").fetchall()
            alerts = conn.execute("select txn_id from alerts order by txn_id").fetchall()
    expected = sorted([d.txn.txn_id for d in decisions + extra] + ["fresh"])
    assert [r[0] for r in audit] == expected
    assert [r[0] for r in alerts] == expected, "every decision here is flagged: one alert each"


def test_a_crash_between_the_audit_copy_and_the_alerts_is_repaired_by_the_replay(
    settings: Settings, tmp_path: Path
) -> None:
    with fresh_database(settings, "store-alerts") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        migrate(conninfo)
        batch, replays = crash_then_replay(conninfo, populate(conninfo, tmp_path / "model", n=4))
        with psycopg.connect(conninfo) as conn:
            alerts = {r[0] for r in conn.execute("select txn_id from alerts")}
    assert replays == 1
    assert {d.txn.txn_id for d in batch} <= alerts


def crash_then_replay(conninfo: str, decisions: list[Decision]) -> tuple[list[Decision], int]:
    """``decisions`` again under new ids, as a worker writes a batch after a crash that followed its
    audit COPY (the alerts not written): the batch and the store's replays."""
    batch = [replace(d, txn=d.txn.model_copy(update={"txn_id": d.txn.txn_id + "-b"})) for d in decisions]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _copy(conn, "decisions", batch)  # the COPY committed, then the worker died
    store = DecisionStore(conninfo)
    try:
        store.write(batch)  # the replay: the staging path
    finally:
        store.close()
    return batch, store.replays


def _blocked_every_other(decisions: list[Decision]) -> list[Decision]:
    """Every other decision a decline the block list forced on a score below the review threshold."""
    block = [rule_reason("blocked_card", "Card is on the block list")]
    return [
        replace(d, decision="decline", score=0.1, thresholds={"review": 0.5, "decline": 0.9}, rules=block)
        if i % 2 == 0 else d
        for i, d in enumerate(decisions)
    ]  # fmt: skip


def test_a_decline_the_block_list_alone_forced_raises_no_alert_on_either_write_path(
    settings: Settings, tmp_path: Path
) -> None:
    with fresh_database(settings, "store-blocked") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        migrate(conninfo)
        decisions = populate(conninfo, tmp_path / "model", n=6, adjust=_blocked_every_other)  # the COPY path
        replayed, replays = crash_then_replay(conninfo, decisions)
        with psycopg.connect(conninfo) as conn:
            audit = {r[0] for r in conn.execute("select txn_id from decisions")}
            alerts = {r[0] for r in conn.execute("select txn_id from alerts")}
    assert replays == 1
    assert len(audit) == 12, "every decision is in the audit"
    flagged_by_the_model = {d.txn.txn_id for d in decisions[1::2] + replayed[1::2]}
    assert alerts == flagged_by_the_model, "the blocked ones, scored 0.1, are declined without an alert"


def test_workers_that_start_together_create_the_schema_once(settings: Settings) -> None:
    """Every process that opens PostgreSQL sinks migrates; on a fresh database, several at once
    used to race in ``create table if not exists`` (a duplicate key in ``pg_type``)."""
    for _ in range(3):
        with fresh_database(settings, "it_schema") as db:
            conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)

            def open_sinks(_: int, conninfo: str = conninfo) -> None:
                migrate(conninfo)  # the scoring process's
                FeedbackService(conninfo, threshold=50, request_retrain=lambda _reason: None).migrate()

            with ThreadPoolExecutor(6) as pool:
                list(pool.map(open_sinks, range(6)))  # raises the first failure
            with psycopg.connect(conninfo) as conn:
                rows = conn.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
            tables = {r[0] for r in rows}
            assert {"decisions", "alerts", "block_list"} <= tables


def test_an_audit_created_with_jsonb_columns_is_converted_and_keeps_its_rows(
    settings: Settings, tmp_path: Path
) -> None:
    json_columns = ("txn", "thresholds", "features", "shap", "reasons", "rules")
    with fresh_database(settings, "store-jsonb") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        migrate(conninfo)
        old = populate(conninfo, tmp_path / "model", n=3)
        with psycopg.connect(conninfo, autocommit=True) as conn:  # the audit as sessions 1-11 created it
            for col in json_columns:
                conn.execute(f"alter table decisions alter column {col} type jsonb using {col}::jsonb")
        migrate(conninfo)  # the next start converts it
        store = DecisionStore(conninfo)
        try:
            new = [replace(d, txn=d.txn.model_copy(update={"txn_id": d.txn.txn_id + "-new"})) for d in old]
            store.write_once(new)  # the binary COPY needs json columns (write() would retry forever)
        finally:
            store.close()
        with psycopg.connect(conninfo) as conn:
            kinds = conn.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_name = 'decisions' and column_name = any(%s)", (list(json_columns),),
            ).fetchall()  # fmt: skip
            query = "select txn_id, features, txn->>'channel' from decisions order by txn_id"
            rows = conn.execute(query).fetchall()
    assert {kind for _, kind in kinds} == {"json"}
    assert len(kinds) == len(json_columns)
    assert [r[0] for r in rows] == sorted(d.txn.txn_id for d in old + new)
    by_id = {r[0]: r for r in rows}
    for d in old:
        assert by_id[d.txn.txn_id][1] == dict(d.features)
        assert by_id[d.txn.txn_id][2] == d.txn.channel
