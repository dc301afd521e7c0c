"""A Feast SQLite online store with one row per entity: the development, CI and demo online store.

Feast's own SQLite store keeps one row per entity *and feature*: every card write is 26 row
upserts (or one UPDATE touching 26 rows), and in the pipeline bench that was most of the feature
writer process's CPU (~4.8 µs a feature row on the 2-core machine, session 15). This store keeps
one row per entity key in ``<feast table id>_packed``::

    entity_key BLOB PRIMARY KEY   -- Feast's serialized entity key, as in Feast's own table
    features   BLOB NOT NULL      -- feast.types.Map {feature name -> Value}, keys in sorted order
    event_ts   INTEGER NOT NULL   -- microseconds since the epoch, UTC
    created_ts INTEGER            -- same, or NULL

``features`` is Feast's own protobuf (``Map`` from ``feast/types/Value.proto``), its entries in
feature-name order (``pack``), so that the same values are always the same bytes. A write
replaces the entity's whole row: every writer here (the stream's online writer, ``materialize``,
``write_to_online_store``) writes all the features of the view at once. It is a Feast extension (``type:
features.packed_store.PackedSqliteOnlineStore`` in feature_store.yaml): reads go through
``get_online_features`` as before, and ``features.online_write.OnlineWriter`` writes the same bytes
without Feast's DataFrame-to-protobuf conversion.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.Value_pb2 import Map

TYPE = "features.packed_store.PackedSqliteOnlineStore"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PackedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["features.packed_store.PackedSqliteOnlineStore"] = TYPE  # type: ignore[assignment]


def packed_table(config: Any, view: Any) -> str:
    """The store's table for a feature view: Feast's table id for it, plus ``_packed``."""
    versioned = config.registry.enable_online_feature_view_versioning
    return compute_table_id(config.project, view, versioned) + "_packed"


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def micros(ts: datetime) -> int:
    """Microseconds since the epoch; a naive time is UTC (as Feast treats it)."""
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


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


def create_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {quoted(table)} (entity_key BLOB PRIMARY KEY, "
        "features BLOB NOT NULL, event_ts INTEGER NOT NULL, created_ts INTEGER)"
    )


def upsert_sql(table: str) -> str:
    return (
        f"INSERT INTO {quoted(table)} (entity_key, features, event_ts, created_ts) VALUES (?, ?, ?, ?) "  # noqa: S608
        "ON CONFLICT(entity_key) DO UPDATE SET features = excluded.features, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )


class PackedSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store (its connection, path and teardown) with the one-row layout."""

    _ready: set[str] | None = None  # tables created through this store's connection

    def table(self, config: Any, view: Any) -> tuple[sqlite3.Connection, str]:
        """The connection and the view's table, created on first use (``feast apply`` from the CLI
        plans Feast's own tables, not this one)."""
        conn: sqlite3.Connection = self._get_conn(config)
        name = packed_table(config, view)
        if self._ready is None:
            self._ready = set()
        if name not in self._ready:
            with conn:
                conn.execute(create_sql(name))
            self._ready.add(name)
        return conn, name

    def online_write_batch(
        self, config: Any, table: Any, data: list[tuple[Any, dict[str, Any], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:  # fmt: skip
        conn, name = self.table(config, table)
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, event_ts, created_ts in data:
            rows.append((
                serialize_entity_key(entity_key, entity_key_serialization_version=version),
                pack(values),
                micros(event_ts),
                None if created_ts is None else micros(created_ts),
            ))  # fmt: skip
        with conn:
            conn.executemany(upsert_sql(name), rows)
        if progress:
            progress(len(rows))

    def online_read(
        self, config: Any, table: Any, entity_keys: list[Any], requested_features: list[str] | None = None
    ) -> list[tuple[datetime | None, dict[str, Any] | None]]:
        conn, name = self.table(config, table)
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        found: dict[bytes, tuple[bytes, int]] = {}
        for lo in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[lo : lo + 500]
            found.update(
                (key, (blob, ts))
                for key, blob, ts in conn.execute(
                    f"SELECT entity_key, features, event_ts FROM {quoted(name)} "  # noqa: S608
                    f"WHERE entity_key IN ({','.join('?' * len(part))})",
                    part,
                )
            )
        wanted = None if requested_features is None else set(requested_features)
        result: list[tuple[datetime | None, dict[str, Any] | None]] = []
        for key in keys:
            if key not in found:
                result.append((None, None))
                continue
            blob, ts = found[key]
            values = Map.FromString(blob).val
            result.append((
                from_micros(ts),
                {f: v for f, v in values.items() if wanted is None or f in wanted},
            ))  # fmt: skip
        return result

    def update(  # noqa: PLR0917 - Feast's signature
        self, config: Any, tables_to_delete: Sequence[Any], tables_to_keep: Sequence[Any],
        entities_to_delete: Sequence[Any], entities_to_keep: Sequence[Any], partial: bool,  # noqa: ARG002
    ) -> None:  # fmt: skip
        conn = self._get_conn(config)
        with conn:
            for view in tables_to_keep:
                conn.execute(create_sql(packed_table(config, view)))
            for view in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {quoted(packed_table(config, view))}")
        self._ready = None
