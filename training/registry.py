"""Model registry in PostgreSQL: versions, metrics, status and lineage; artefacts live on disk."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.errors import FraudstreamError
from app.pg import apply_schema, connect

SCHEMA = """
create table if not exists model_registry (
    version       text primary key,
    created_at    timestamptz not null default now(),
    status        text not null check (status in ('candidate', 'champion', 'retired')),
    metrics       jsonb not null,
    params        jsonb not null,
    artefact_dir  text not null,
    data_from     timestamptz not null,
    data_to       timestamptz not null,
    parent        text references model_registry (version),
    git_commit    text,
    promoted_at   timestamptz
);
create unique index if not exists one_champion on model_registry (status) where status = 'champion';
create table if not exists model_refusals (
    version     text not null references model_registry (version),
    worker      text not null,
    reason      text not null,
    refused_at  timestamptz not null default now(),
    primary key (version, worker)
);
"""


@dataclass(frozen=True)
class ModelRow:
    version: str
    created_at: datetime
    status: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    artefact_dir: str
    parent: str | None
    promoted_at: datetime | None
    data_to: datetime | None = None  # the training cut-off: its holdout is the week before it
    data_from: datetime | None = None  # its first transaction (FRAUDSTREAM_TRAIN_DAYS before data_to)

    def data(self) -> str:
        """The days it learned from and was tested on: 'first .. last' (the day before the cut-off)."""
        if self.data_to is None or self.data_from is None:
            return "-"
        return f"{self.data_from:%Y-%m-%d} .. {self.data_to - timedelta(days=1):%Y-%m-%d}"


# a ModelRow's columns (a constant: no value is ever formatted into SQL)
ROW = "version, created_at, status, metrics, params, artefact_dir, parent, promoted_at, data_to, data_from"


class Registry:
    """``keep_connection``: one connection for every call (a worker polling the champion every few
    seconds), reopened after a failure; otherwise a connection per call. A new connection costs
    5-8 ms on an idle 2-core machine and 15-40 ms on a busy one, paid on the scoring path."""

    def __init__(self, conninfo: str, *, keep_connection: bool = False) -> None:
        self.conninfo = conninfo
        self.keep_connection = keep_connection
        self._kept: psycopg.Connection[dict[str, Any]] | None = None

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection for one unit of work: committed when it succeeds, rolled back when it fails."""
        if not self.keep_connection:
            with connect(self.conninfo) as conn:
                yield conn
            return
        if self._kept is None or self._kept.closed:
            self._kept = connect(self.conninfo)
        conn = self._kept
        try:
            yield conn
        except BaseException:
            self._kept = None
            conn.close()  # a failed or broken connection is not reused
            raise
        conn.commit()

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def migrate(self) -> None:
        with self._connect() as conn:
            apply_schema(conn, SCHEMA)

    def register(  # noqa: PLR0917 - one row of the registry, column by column
        self, version: str, metrics: dict[str, Any], params: dict[str, Any], artefact_dir: str,
        data_from: datetime, data_to: datetime, parent: str | None, git_commit: str,
    ) -> None:  # fmt: skip
        with self._connect() as conn:
            conn.execute(
                "insert into model_registry (version, status, metrics, params, artefact_dir, data_from,"
                " data_to, parent, git_commit) values (%s, 'candidate', %s, %s, %s, %s, %s, %s, %s)",
                (
                    version,
                    Jsonb(metrics),
                    Jsonb(params),
                    artefact_dir,
                    data_from,
                    data_to,
                    parent,
                    git_commit,
                ),
            )

    def list(self) -> list[ModelRow]:
        with self._connect() as conn:
            rows = conn.execute(
                f"select {ROW} from model_registry order by created_at desc, version desc"  # noqa: S608
            ).fetchall()
        return [ModelRow(**r) for r in rows]

    def champion(self) -> ModelRow | None:
        return self.get(status="champion")

    def get(self, version: str | None = None, *, status: str | None = None) -> ModelRow | None:
        """One row by version or by status (cheap: the workers poll it)."""
        with self._connect() as conn:
            found = conn.execute(
                f"select {ROW} from model_registry where (%s::text is null or version = %s)"  # noqa: S608
                " and (%s::text is null or status = %s) limit 1",
                (version, version, status, status),
            ).fetchone()
        return None if found is None else ModelRow(**found)

    def promote(self, version: str) -> None:
        """Make ``version`` the champion; the previous champion is retired (one transaction)."""
        with self._connect() as conn, conn.transaction():
            found = conn.execute(
                "select status from model_registry where version = %s for update", (version,)
            )
            if found.fetchone() is None:
                raise FraudstreamError(f"no model version {version!r} in the registry")
            conn.execute("update model_registry set status = 'retired' where status = 'champion'")
            conn.execute(
                "update model_registry set status = 'champion', promoted_at = now() where version = %s",
                (version,),
            )

    def refuse(self, version: str, worker: str, reason: str) -> None:
        """Record that ``worker`` could not load ``version`` (shown on the UI's models page)."""
        with self._connect() as conn:
            conn.execute(
                "insert into model_refusals (version, worker, reason) values (%s, %s, %s)"
                " on conflict (version, worker) do update set reason = excluded.reason, refused_at = now()",
                (version, worker, reason[:500]),
            )

    def refusals(self) -> dict[str, builtins.list[dict[str, Any]]]:
        """Per version, the workers that refused it, newest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "select version, worker, reason, refused_at from model_refusals order by refused_at desc"
            ).fetchall()
        out: dict[str, builtins.list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["version"], []).append(r)
        return out

    def rollback(self) -> str:
        """Re-promote the most recently retired champion; return its version."""
        with self._connect() as conn:
            row = conn.execute(
                "select version from model_registry where status = 'retired' and promoted_at is not null"
                " order by promoted_at desc limit 1"
            ).fetchone()
        if row is None:
            raise FraudstreamError("no earlier champion to roll back to")
        self.promote(row["version"])
        return str(row["version"])
