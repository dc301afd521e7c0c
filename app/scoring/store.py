"""Decisions in PostgreSQL: the append-only decision audit, alerts, and the block list.

Writes are batched: one COPY into ``decisions`` (a statement of its own, committed by itself: no
BEGIN/COMMIT round trips), then, when the batch has any, one transaction inserting its alerts.
They are idempotent on txn_id: a replayed batch whose decisions are (partly) recorded fails that
COPY on the primary key and is written again through a session-local staging table with
INSERT ... ON CONFLICT (txn_id) DO NOTHING, so it never duplicates an audit row or an alert. A
crash between the COPY and the alerts is such a replay: the batch is not acknowledged until both
are done, and its replay takes the staging path, which inserts the alerts still missing.
``decisions`` refuses UPDATE and DELETE (trigger), but for the archive's deletes (``app.audit_archive``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps

from app.errors import first_line
from app.pg import apply_schema
from app.scoring.reasons import EXPLORE
from app.scoring.rules import Rules

if TYPE_CHECKING:  # the archive and the UI read the audit's columns without loading the model's libraries
    from app.scoring.decide import Decision

# a decisions row ``d``: ``explored``, a would-be decline let through to be measured (``Policy.explores``;
# the text search first, the JSON walked only where it may be); ``explorable``, a model's decline that
# could have been (the policy recorded its rate and cap with it: ``Policy.thresholds``); ``explore_rate``,
# the rate then in force
EXPLORE_COLUMNS = sql.SQL(
    "(strpos(d.reasons::text, {explore}) > 0 and exists"
    " (select 1 from json_array_elements(d.reasons) r where r->>'feature' = {explore})),"
    " coalesce(d.decision = 'decline' and json_array_length(d.rules) = 0"
    " and (d.thresholds->>'explore_rate')::float8 > 0"
    " and d.amount <= coalesce((d.thresholds->>'explore_max_amount')::float8, 'infinity'), false),"
    " (d.thresholds->>'explore_rate')::float8"
).format(explore=sql.Literal(EXPLORE))

# the audit's clock (the export's: its latest event time), read through the scored_at index: the latest
# event among the decisions scored in the hour before the last one (a full max(event_time) reads the table)
AUDIT_CLOCK = (
    "select max(event_time) from decisions"
    " where scored_at >= (select max(scored_at) from decisions) - interval '1 hour'"
)

log = logging.getLogger("fraudstream.scoring")

SCHEMA = """
create table if not exists decisions (
    txn_id          text primary key,
    card_id         text not null,
    merchant_id     text not null,
    event_time      timestamptz not null,
    amount          double precision not null,
    txn             json not null,
    scored_at       timestamptz not null,
    recorded_at     timestamptz not null default now(),
    model_version   text not null,
    score           double precision not null,
    decision        text not null check (decision in ('approve', 'review', 'decline')),
    thresholds      json not null,
    features        json not null,
    shap            json,
    expected_value  double precision,
    reasons         json not null,
    rules           json not null,
    latency_ms      double precision,
    shadow_version  text,
    shadow_score    double precision
);
-- The JSON columns are json, not jsonb: the audit is written once and read a row at a time, and
-- converting every row's features to jsonb was most of PostgreSQL's work on the scoring path
-- (session 12: a 170-row COPY 7.7-10.0 -> 3.4-4.3 ms). Tables created as jsonb are converted once.
do $$
declare col text;
begin
    for col in select column_name from information_schema.columns
               where table_schema = current_schema() and table_name = 'decisions' and data_type = 'jsonb'
    loop
        execute format('alter table decisions alter column %I type json using %I::json', col, col);
    end loop;
end $$;
create index if not exists decisions_scored_at on decisions (scored_at);
create index if not exists decisions_card on decisions (card_id, event_time);
-- Append-only, but for the archive (app.audit_archive), which deletes only decisions it has written to
-- a Parquet file and recorded in audit_archives, in the same transaction, with this setting on.
create or replace function decisions_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' and current_setting('fraudstream.archiving', true) = 'on' then
        return old;
    end if;
    raise exception 'decisions is an append-only audit: % refused', tg_op;
end $$;
create or replace trigger decisions_append_only before update or delete on decisions
    for each row execute function decisions_append_only();

create table if not exists alerts (
    txn_id          text primary key references decisions (txn_id),
    created_at      timestamptz not null default now(),
    card_id         text not null,
    event_time      timestamptz not null,
    amount          double precision not null,
    score           double precision not null,
    decision        text not null check (decision in ('review', 'decline')),
    model_version   text not null,
    status          text not null default 'open' check (status in ('open', 'fraud', 'legit')),
    closed_at       timestamptz,
    closed_by       text
);
create index if not exists alerts_open on alerts (status, score desc);
create index if not exists alerts_closed on alerts (closed_at) where status <> 'open';  -- the queue's health
alter table alerts add column if not exists assigned_to text;  -- the analyst working it (the UI's "take")
alter table alerts add column if not exists assigned_at timestamptz;
create index if not exists alerts_open_card on alerts (card_id) where status = 'open';  -- the card's others

create table if not exists block_list (
    kind        text not null check (kind in ('card', 'merchant')),
    value       text not null,
    reason      text not null default '',
    created_at  timestamptz not null default now(),
    primary key (kind, value)
);
alter table block_list add column if not exists created_by text;  -- an analyst, or cli:USER
alter table block_list add column if not exists txn_id text;  -- the fraud verdict that blocked it
"""

COLUMN_TYPES = (
    ("txn_id", "text"), ("card_id", "text"), ("merchant_id", "text"), ("event_time", "timestamptz"),
    ("amount", "float8"), ("txn", "json"), ("scored_at", "timestamptz"), ("model_version", "text"),
    ("score", "float8"), ("decision", "text"), ("thresholds", "json"), ("features", "json"),
    ("shap", "json"), ("expected_value", "float8"), ("reasons", "json"), ("rules", "json"),
    ("latency_ms", "float8"), ("shadow_version", "text"), ("shadow_score", "float8"),
)  # fmt: skip
COLUMNS = tuple(name for name, _ in COLUMN_TYPES)
_COLS = ", ".join(COLUMNS)  # constants only: no value is ever formatted into SQL
WRITE = f"""
insert into decisions ({_COLS}) select {_COLS} from decision_stage order by txn_id
    on conflict (txn_id) do nothing
"""  # noqa: S608

ALERT = """
insert into alerts (txn_id, card_id, event_time, amount, score, decision, model_version)
    values (%s, %s, %s, %s, %s, %s, %s) on conflict (txn_id) do nothing
"""

STAGE = f"create temp table if not exists decision_stage as select {_COLS} from decisions with no data"  # noqa: S608


# The binary COPY's form of a json value is its UTF-8 text: the JSON columns go as bytes that orjson
# (pydantic for the transaction) has already written, through psycopg's C bytes dumper, instead of
# psycopg's Python JSON dumper, once per column and row (session 20: the COPY's client CPU a row
# 8.5 -> 6.9 µs at best over 40 COPYs of 500 rows, the same rows in the table).
COPY_TYPES = tuple("bytea" if kind == "json" else kind for _, kind in COLUMN_TYPES)


def row(d: Decision) -> tuple[Any, ...]:
    """The audit row: the JSON columns as JSON text (bytes; NaN -> null), the transaction as the
    validated record's own JSON."""
    t, dumps = d.txn, orjson.dumps
    return (
        t.txn_id, t.card_id, t.merchant_id, t.event_time, t.amount, t.__pydantic_serializer__.to_json(t),
        d.scored_at, d.model_version, d.score, d.decision, dumps(d.thresholds), dumps(d.features),
        None if d.shap is None else dumps(d.shap), d.expected_value, dumps(d.reasons), dumps(d.rules),
        d.latency_ms, d.shadow_version, d.shadow_score,
    )  # fmt: skip


def alert_row(d: Decision) -> tuple[Any, ...]:
    t = d.txn
    return (t.txn_id, t.card_id, t.event_time, t.amount, d.score, d.decision, d.model_version)


def _copy(conn: psycopg.Connection[Any], table: str, decisions: Sequence[Decision]) -> None:
    """COPY the audit rows into ``table`` (``decisions`` or the staging table; a constant, never input).

    Binary: doubles and timestamps travel as they are, not as text (session 12, 170-row batches:
    the same wall time, 0.5 ms less of the scoring process's CPU a batch)."""
    with conn.cursor().copy(f"copy {table} ({_COLS}) from stdin (format binary)") as copy:
        copy.set_types(COPY_TYPES)
        for d in decisions:
            copy.write_row(row(d))


def migrate(conninfo: str) -> None:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        apply_schema(conn, SCHEMA)


class DecisionStore:
    """One connection, reopened on failure; ``write`` retries with backoff until it succeeds.

    Thread-safe: the scoring process records batches in a thread of their own while its loop reads
    the rules; one lock keeps each write (COPY, alerts) and each read whole on the connection."""

    def __init__(self, conninfo: str, *, max_backoff_s: float = 5.0) -> None:
        self.conninfo = conninfo
        self.max_backoff_s = max_backoff_s
        self.conn: psycopg.Connection[Any] | None = None
        self.lock = threading.RLock()
        self.replays = 0  # batches that took the idempotent path

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.conninfo, connect_timeout=5, autocommit=True)
            set_json_dumps(orjson.dumps, context=self.conn)  # NaN -> null
            self.conn.execute(STAGE)
        return self.conn

    def write_once(self, decisions: Sequence[Decision]) -> None:
        """COPY straight into the audit (the usual case: none of them recorded yet); a batch that
        was partly recorded before (a replay) trips the primary key and takes the idempotent path."""
        with self.lock:
            conn = self._connection()
            try:
                _copy(conn, "decisions", decisions)  # autocommit: the COPY is its own transaction
                alerts = [alert_row(d) for d in decisions if d.needs_review]
                if alerts:
                    with conn.transaction():
                        conn.cursor().executemany(ALERT, alerts)
            except psycopg.errors.UniqueViolation:
                self.replays += 1
                with conn.transaction():
                    conn.execute("truncate decision_stage")
                    _copy(conn, "decision_stage", decisions)
                    conn.execute(WRITE)
                    if alerts := [alert_row(d) for d in decisions if d.needs_review]:
                        conn.cursor().executemany(ALERT, alerts)  # on conflict do nothing

    def write(self, decisions: Sequence[Decision]) -> None:
        """Persist a batch, retrying with exponential backoff for as long as it takes.

        The worker acknowledges a batch's messages only after this returns, so while PostgreSQL is
        down the worker holds its offsets (and a process killed meanwhile re-reads the batch).
        """
        if not decisions:
            return
        backoff = 0.1
        while True:
            try:
                self.write_once(decisions)
            except psycopg.Error as exc:
                log.warning(
                    "scoring: decision write failed (%s); retrying in %.1fs", first_line(exc), backoff
                )
                self.close()
                time.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
            else:
                return

    def rules(self, amount_limit: float | None) -> Rules:
        """The block list as it is now, on the writes' connection (between batches: a connection of
        its own cost 5-40 ms every poll); a failure closes it, and the next write reopens it."""
        with self.lock:
            try:
                rows = self._connection().execute("select kind, value from block_list").fetchall()
            except psycopg.Error:
                self.close()
                raise
        return Rules(
            blocked_cards=frozenset(v for k, v in rows if k == "card"),
            blocked_merchants=frozenset(v for k, v in rows if k == "merchant"),
            amount_limit=amount_limit,
        )

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                finally:
                    self.conn = None
