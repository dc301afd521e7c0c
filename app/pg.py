"""PostgreSQL at the edge: one way to connect (one-line failure) and scratch databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from app.errors import FraudstreamError
from app.settings import Settings

SCHEMA_LOCK = 0x66726175  # an advisory lock key ("frau"): one schema change at a time


def apply_schema(conn: psycopg.Connection[Any], *schemas: str) -> None:
    """Run ``create ... if not exists`` DDL in one transaction, one process at a time.

    Two workers that start together on a fresh database used to race: PostgreSQL's ``create table
    if not exists`` is not safe against a concurrent creation of the same table (one of them fails
    with a duplicate key in ``pg_type``; seen in session 12 with ``bench --workers 2``).
    """
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for schema in schemas:
            conn.execute(schema)


def connect(conninfo: str, *, connect_timeout: int = 10) -> psycopg.Connection[dict[str, Any]]:
    """A connection returning dict rows, its times in UTC (what the UI and the CLI print them as,
    whatever the server's ``TimeZone``); an unreachable server is one FraudstreamError line."""
    try:
        return psycopg.connect(
            conninfo, row_factory=dict_row, connect_timeout=connect_timeout, options="-c TimeZone=UTC"
        )
    except psycopg.OperationalError as exc:
        raise FraudstreamError(f"cannot reach PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc


@contextmanager
def scratch_database(settings: Settings, name: str) -> Iterator[str]:
    """Create database ``name`` on the settings' server, yield it, drop it afterwards.

    ``name`` must come from the caller's own code (tests, the bench), never from user input.
    """
    admin = settings.model_copy(update={"pg_db": "postgres"}).pg_conninfo(reveal=True)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
