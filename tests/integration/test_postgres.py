"""Write and read the real local PostgreSQL with psycopg 3 (and its pool)."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from app.settings import Settings
from tests.services import unique

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
