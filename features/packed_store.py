"""Feast online stores with one row per entity: SQLite (development, CI, demo) and PostgreSQL
(``docker-compose.yml``).

Feast's own SQLite and PostgreSQL stores keep one row per entity *and feature*: every card write
is 26 row upserts. In the pipeline bench that was most of the feature writer's CPU (SQLite: ~4.8 µs
a feature row on the 2-core machine, session 15), and with Feast's PostgreSQL store this machine
could not keep up with 1,800 txn/s (session 15). These stores keep one row per entity key, in
``<Feast's table id>_packed``::

    entity_key  Feast's serialized entity key (primary key), as in Feast's own tables
    features    feast.types.Map {feature name -> Value}, its entries in name order (``pack``)
    event_ts    the event time (SQLite: microseconds since the epoch, UTC; PostgreSQL: timestamptz)
    created_ts  the same, or NULL

``features`` is Feast's own protobuf (``Map`` in ``feast/types/Value.proto``): any protobuf reader
decodes it, and the same values are always the same bytes. A write replaces the entity's whole
row: every writer here (the stream's online writer, ``materialize``, ``write_to_online_store``)
writes all of a view's features at once. They are Feast online store classes (``type:
features.packed_store.Packed...OnlineStore`` in feature_store*.yaml): reads go through
``get_online_features``; ``write_packed`` is the bulk write that both Feast's path
(``online_write_batch``) and ``features.online_write.OnlineWriter`` (no DataFrame, no protobuf
objects) end in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.infra.utils.postgres.connection_utils import _get_conn
from feast.protos.feast.types.Value_pb2 import Map
from psycopg import sql

SQLITE_TYPE = "features.packed_store.PackedSqliteOnlineStore"
POSTGRES_TYPE = "features.packed_store.PackedPostgreSQLOnlineStore"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = tuple[bytes, bytes, datetime, datetime | None]  # entity key, packed features, event time, created
Read = tuple[datetime | None, dict[str, Any] | None]


class PackedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["features.packed_store.PackedSqliteOnlineStore"] = SQLITE_TYPE  # type: ignore[assignment]


class PackedPostgreSQLOnlineStoreConfig(PostgreSQLOnlineStoreConfig):
    type: Literal["features.packed_store.PackedPostgreSQLOnlineStore"] = POSTGRES_TYPE  # type: ignore[assignment]


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def entry(name: str, value: bytes) -> bytes:
    """One entry of a serialized ``Map``: field 1 (length-delimited), a message holding the key as
    field 1 and the serialized ``Value`` as field 2."""
    key = name.encode()
    inner = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
    return b"\x0a" + varint(len(inner)) + inner


def pack(values: dict[str, Any]) -> bytes:
    """``{feature: Value}`` as a serialized ``Map``, entries in name order."""
    return b"".join(entry(name, values[name].SerializeToString()) for name in sorted(values))


def utc(ts: datetime) -> datetime:
    """An aware UTC time; a naive one is UTC already (as Feast treats it)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def micros(ts: datetime) -> int:
    delta = utc(ts) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def packed_table(config: Any, view: Any) -> str:
    """The table of a feature view: Feast's table id for it, plus ``_packed``."""
    versioned = config.registry.enable_online_feature_view_versioning
    return compute_table_id(config.project, view, versioned) + "_packed"


def packed_rows(
    config: Any, data: Sequence[tuple[Any, dict[str, Any], datetime, datetime | None]]
) -> list[Row]:
    """Feast's ``online_write_batch`` input as rows of this layout."""
    version = config.entity_key_serialization_version
    return [
        (serialize_entity_key(key, entity_key_serialization_version=version), pack(values), ts, created)
        for key, values, ts, created in data
    ]


def unpacked(
    keys: Sequence[bytes], found: dict[bytes, tuple[bytes, datetime]], requested: list[str] | None
) -> list[Read]:
    """Feast's ``online_read`` result, in ``keys`` order, from ``{key: (features, event time)}``."""
    wanted = None if requested is None else set(requested)
    result: list[Read] = []
    for key in keys:
        if key not in found:
            result.append((None, None))
            continue
        blob, ts = found[key]
        values = Map.FromString(blob).val
        result.append((ts, {f: v for f, v in values.items() if wanted is None or f in wanted}))
    return result


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Packed:
    """Feast's write, read and update in terms of what each backend provides: ``write_packed``,
    ``_found`` (the stored rows of some keys), ``_create`` and ``_drop`` (a view's table)."""

    _ready: set[str] | None = None  # tables created through this store's connection

    def write_packed(self, config: Any, view: Any, rows: Sequence[Row]) -> None:
        raise NotImplementedError

    def _found(self, config: Any, view: Any, keys: list[bytes]) -> dict[bytes, tuple[bytes, datetime]]:
        raise NotImplementedError

    def _create(self, config: Any, name: str) -> None:
        raise NotImplementedError

    def _drop(self, config: Any, name: str) -> None:
        raise NotImplementedError

    def _ensure(self, config: Any, view: Any) -> str:
        """The view's table, created on first use (``feast apply`` from the CLI plans Feast's own
        tables, not this one)."""
        name = packed_table(config, view)
        if name not in (self._ready or ()):
            self._create(config, name)  # PostgreSQL: may open a new connection, which resets _ready
            self._ready = {*(self._ready or ()), name}
        return name

    def online_write_batch(
        self, config: Any, table: Any, data: list[tuple[Any, dict[str, Any], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:  # fmt: skip
        self.write_packed(config, table, packed_rows(config, data))
        if progress:
            progress(len(data))

    def online_read(
        self, config: Any, table: Any, entity_keys: list[Any], requested_features: list[str] | None = None
    ) -> list[Read]:
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        return unpacked(keys, self._found(config, table, keys), requested_features)

    def update(  # noqa: PLR0917 - Feast's signature
        self, config: Any, tables_to_delete: Sequence[Any], tables_to_keep: Sequence[Any],
        entities_to_delete: Sequence[Any], entities_to_keep: Sequence[Any], partial: bool,  # noqa: ARG002
    ) -> None:  # fmt: skip
        self._ready = None
        for view in tables_to_keep:
            self._ensure(config, view)
        for view in tables_to_delete:
            self._drop(config, packed_table(config, view))


class PackedSqliteOnlineStore(_Packed, SqliteOnlineStore):
    """Feast's SQLite online store (its connection, path and teardown) with the one-row layout."""

    def _create(self, config: Any, name: str) -> None:
        with self._get_conn(config) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_quoted(name)} (entity_key BLOB PRIMARY KEY, "
                "features BLOB NOT NULL, event_ts INTEGER NOT NULL, created_ts INTEGER)"
            )

    def _drop(self, config: Any, name: str) -> None:
        with self._get_conn(config) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {_quoted(name)}")

    def write_packed(self, config: Any, view: Any, rows: Sequence[Row]) -> None:
        """Upsert the rows in one transaction (a key given twice: the last row wins)."""
        name = _quoted(self._ensure(config, view))
        with self._get_conn(config) as conn:
            conn.executemany(
                f"INSERT INTO {name} (entity_key, features, event_ts, created_ts) VALUES (?, ?, ?, ?) "  # noqa: S608
                "ON CONFLICT(entity_key) DO UPDATE SET features = excluded.features, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                [(k, f, micros(ts), None if c is None else micros(c)) for k, f, ts, c in rows],
            )

    def _found(self, config: Any, view: Any, keys: list[bytes]) -> dict[bytes, tuple[bytes, datetime]]:
        name = _quoted(self._ensure(config, view))
        conn: sqlite3.Connection = self._get_conn(config)
        found: dict[bytes, tuple[bytes, datetime]] = {}
        for lo in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[lo : lo + 500]
            query = f"SELECT entity_key, features, event_ts FROM {name} WHERE entity_key IN ({','.join('?' * len(part))})"  # noqa: S608, E501
            found.update((key, (blob, from_micros(us))) for key, blob, us in conn.execute(query, part))
        return found


class PackedPostgreSQLOnlineStore(_Packed, OnlineStore):
    """The one-row layout in PostgreSQL, in the configured ``db_schema``, over one autocommit
    connection (Feast's connection settings: sslmode, search path), reopened once broken."""

    _conn: psycopg.Connection[Any] | None = None

    def _connection(self, config: Any) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = _get_conn(config.online_store)
            self._conn.autocommit = True
            self._ready = None
        return self._conn

    @staticmethod
    def _schema(config: Any) -> str:
        return str(config.online_store.db_schema or config.online_store.user)

    def _id(self, config: Any, name: str) -> sql.Identifier:
        return sql.Identifier(self._schema(config), name)

    def _create(self, config: Any, name: str) -> None:
        conn, table = self._connection(config), self._id(config, name)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema(config))))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (entity_key bytea PRIMARY KEY, features bytea NOT NULL, "
                "event_ts timestamptz NOT NULL, created_ts timestamptz)"
            ).format(table)
        )

    def _drop(self, config: Any, name: str) -> None:
        self._connection(config).execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._id(config, name)))

    def write_packed(self, config: Any, view: Any, rows: Sequence[Row]) -> None:
        """One ``INSERT ... SELECT FROM unnest(<one binary array per column>) ON CONFLICT DO
        UPDATE``: one statement, whatever the number of rows. A key given twice keeps its last row
        (PostgreSQL refuses to update a row twice in one statement)."""
        if not rows:
            return
        table = self._id(config, self._ensure(config, view))
        last = {row[0]: row for row in rows}
        keys, blobs, times, created = (list(column) for column in zip(*last.values(), strict=True))
        binary = sql.Placeholder(format=psycopg.adapt.PyFormat.BINARY)  # text arrays: a regex per element
        self._connection(config).execute(
            sql.SQL(
                "INSERT INTO {} (entity_key, features, event_ts, created_ts) "
                "SELECT * FROM unnest({}::bytea[], {}::bytea[], {}::timestamptz[], {}::timestamptz[]) "
                "ON CONFLICT (entity_key) DO UPDATE SET features = EXCLUDED.features, "
                "event_ts = EXCLUDED.event_ts, created_ts = EXCLUDED.created_ts"
            ).format(table, binary, binary, binary, binary),
            [keys, blobs, [utc(t) for t in times], [None if c is None else utc(c) for c in created]],
        )

    def _found(self, config: Any, view: Any, keys: list[bytes]) -> dict[bytes, tuple[bytes, datetime]]:
        table = self._id(config, self._ensure(config, view))
        rows = (
            self._connection(config)
            .execute(
                sql.SQL("SELECT entity_key, features, event_ts FROM {} WHERE entity_key = ANY(%s)").format(
                    table
                ),
                [keys],
            )
            .fetchall()
        )
        return {bytes(key): (bytes(blob), ts.astimezone(UTC)) for key, blob, ts in rows}

    def teardown(self, config: Any, tables: Sequence[Any], entities: Sequence[Any]) -> None:  # noqa: ARG002
        for view in tables:
            self._drop(config, packed_table(config, view))
        self._ready = None
