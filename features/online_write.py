"""Card feature rows -> Feast's SQL online store, in bulk (the worker's online writer process).

Feast's own path (``write_to_online_store``) turns a DataFrame into Arrow, every value into a
protobuf object, and (SQLite) executes one INSERT per feature per card: ~0.5 ms per card, which
at saturation kept the writer process at ~60 % of a core on the 2-core machine. ``OnlineWriter``
writes the very same rows -- same table, same entity-key bytes (Feast's own serializer), same
serialized ``Value`` per feature, same ``value_text``, same timestamps -- with one statement
per known card (SQLite, below) or one per flush (PostgreSQL: ``unnest`` of binary arrays).
tests/integration/test_online_write.py compares the table contents byte for byte with Feast's
own write and reads them back through ``get_online_features``.

Only the SQLite and PostgreSQL online stores without the optional ``value_num`` / vector columns
take this path; any other configuration goes through Feast's ``write_to_online_store``.

SQLite, a card already written: one UPDATE sets all its feature rows (found through Feast's
``entity_key`` index), instead of one upsert per feature (a primary-key lookup, then the row, for
each of the 26 features). On the 2-core machine: ~4.8 against ~11 µs of CPU a feature row (session 15).
A card this writer has not stored yet, or one whose rows are not all there any more (the UPDATE
then changes fewer rows than expected), gets the upserts.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore

_DOUBLE = struct.Struct("<d")
_DOUBLE_TAG = b"\x29"  # feast.types.Value field 5 (double_val), wire type 1 (64-bit)
SQLITE_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")


def naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def sqlite_epoch(ts: datetime) -> int:
    """What Feast's SQLite adapter (``adapt_datetime_epoch``) stores for a naive-UTC event time: adapted
    here once per card, not by the driver once per feature row (~10 % of the write, session 12)."""
    return int(naive_utc(ts).timestamp())


class OnlineWriter:
    """Writes ``{entity: ..., event_time: ..., <features>}`` rows of one feature view."""

    STORED_MAX = 1_000_000  # cards remembered as fully stored (SQLite); ~100 MB of keys at most

    def __init__(self, store: FeatureStore, view_name: str, join_key: str, features: Sequence[str]) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: PLC0415
        from feast.infra.online_stores.helpers import compute_table_id  # noqa: PLC0415
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: PLC0415
        from feast.protos.feast.types.Value_pb2 import Value  # noqa: PLC0415

        self.store, self.view_name, self.join_key, self.features = store, view_name, join_key, tuple(features)
        config = store.config
        self.config = config
        self.kind = str(config.online_store.type)
        self.online: Any = store._get_provider().online_store  # its connection, not a second one
        view = store.get_feature_view(view_name)
        self.table = compute_table_id(
            config.project, view, config.registry.enable_online_feature_view_versioning
        )
        version = config.entity_key_serialization_version

        def key_bytes(entity: str) -> bytes:
            return serialize_entity_key(
                EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity)]),
                entity_key_serialization_version=version,
            )

        self.key_bytes = functools.lru_cache(maxsize=100_000)(key_bytes)
        extra = getattr(config.online_store, "enable_openai_compatible_store", False) or getattr(
            config.online_store, "vector_enabled", False
        )
        self.bulk = self.kind in {"sqlite", "postgres"} and not extra
        self.stored: set[bytes] = set()  # SQLite: cards whose rows this writer has upserted
        self.sqlite_sql = self._sqlite_sql()

    def _values(
        self, rows: Sequence[dict[str, Any]], columns: Sequence[str],
        stamp: Callable[[datetime], Any] = naive_utc,
    ) -> list[tuple[Any, ...]]:  # fmt: skip
        """One tuple per card and feature, in ``columns`` order (Feast's column names); ``stamp``
        turns the event time into what the driver stores, once per card."""
        numbers = "value_num" in columns
        out = []
        for row in rows:
            key, ts = self.key_bytes(row[self.join_key]), stamp(row["event_time"])
            values, blobs, texts = self._encode(row)
            for name, v, blob, text in zip(self.features, values, blobs, texts, strict=True):
                out.append((key, name, blob, text, *((v,) if numbers else ()), ts, None))
        return out

    def _encode(self, row: dict[str, Any]) -> tuple[list[float | None], list[bytes], list[str | None]]:
        """A row's features in order: the value (None when missing or NaN), Feast's serialized
        ``Value`` (a double, or empty when missing) and its ``value_text`` (the float's str)."""
        pack, isnan = _DOUBLE.pack, math.isnan
        values = [None if (v := row.get(name)) is None or isnan(v) else float(v) for name in self.features]
        return (
            values,
            [b"" if v is None else _DOUBLE_TAG + pack(v) for v in values],
            [None if v is None else repr(v) for v in values],
        )

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self.bulk:
            import pandas as pd  # noqa: PLC0415

            frame = pd.DataFrame(rows)[[self.join_key, "event_time", *self.features]]
            self.store.write_to_online_store(self.view_name, frame)
        elif self.kind == "sqlite":
            self._write_sqlite(rows)
        else:
            self._write_postgres(rows)

    def _write_sqlite(self, rows: Sequence[dict[str, Any]]) -> None:
        upsert, update = self.sqlite_sql
        known: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        for row in rows:
            (known if self.key_bytes(row[self.join_key]) in self.stored else new).append(row)
        conn = self.online._get_conn(self.config)
        with conn:  # one transaction
            if known:
                before = conn.total_changes
                conn.executemany(update, self._card_values(known))
                if conn.total_changes - before != len(known) * len(self.features):  # rows gone
                    new = list(rows)
            if new:
                conn.executemany(upsert, self._values(new, SQLITE_COLUMNS, sqlite_epoch))
        if len(self.stored) + len(new) > self.STORED_MAX:
            self.stored.clear()  # forgetting a card costs its next write the upserts, nothing else
        self.stored.update(self.key_bytes(r[self.join_key]) for r in new)

    def _sqlite_sql(self) -> tuple[str, str]:
        """(the upsert of one feature row, the UPDATE of all of one card's rows) for this table."""
        quoted = '"' + self.table.replace('"', '""') + '"'
        columns = SQLITE_COLUMNS
        upsert = (
            f"INSERT INTO {quoted} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "  # noqa: S608
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns[2:])
        )
        n = len(self.features)
        names = ["'" + name.replace("'", "''") + "'" for name in self.features]

        def case(first: int) -> str:
            whens = (f"WHEN {name} THEN ?{first + i}" for i, name in enumerate(names))
            return f"CASE feature_name {' '.join(whens)} END"

        update = (
            f"UPDATE {quoted} SET value = {case(2)}, value_text = {case(n + 2)}, "  # noqa: S608
            f"event_ts = ?{2 * n + 2}, created_ts = NULL WHERE entity_key = ?1"
        )
        return upsert, update

    def _card_values(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """One tuple per card for the UPDATE: key, each feature's ``value``, each ``value_text``, time."""
        out = []
        for row in rows:
            _, blobs, texts = self._encode(row)
            out.append((self.key_bytes(row[self.join_key]), *blobs, *texts, sqlite_epoch(row["event_time"])))
        return out

    def _write_postgres(self, rows: Sequence[dict[str, Any]]) -> None:
        """One ``INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO UPDATE`` per
        flush, in binary, instead of one statement per card and feature (psycopg's ``executemany``
        took ~1 s of CPU on each side for 900 cards on the 2-core machine, session 15). A card
        appears once: the last of its rows wins, as with one upsert after the other."""
        from psycopg import sql  # noqa: PLC0415
        from psycopg.adapt import PyFormat  # noqa: PLC0415

        rows = list({row[self.join_key]: row for row in rows}.values())  # one upsert per key
        with self.online._get_conn(self.config) as conn, conn.cursor() as cur:
            numbers = self.online._check_table_has_value_num(cur, self.table, self.config)
            columns = (
                "entity_key", "feature_name", "value", "value_text", *(["value_num"] if numbers else []),
                "event_ts", "created_ts",
            )  # fmt: skip
            binary = sql.Placeholder(format=PyFormat.BINARY)  # text arrays: a regex per element
            types = {"entity_key": "bytea", "value": "bytea", "value_num": "float8", "event_ts": "timestamp",
                     "created_ts": "timestamp"}  # fmt: skip
            query = sql.SQL(
                "INSERT INTO {} ({}) SELECT * FROM unnest({}) "
                "ON CONFLICT (entity_key, feature_name) DO UPDATE SET {}, vector_value = NULL"
            ).format(
                sql.Identifier(self.table),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(
                    sql.SQL("{}::{}[]").format(binary, sql.SQL(types.get(c, "text"))) for c in columns
                ),
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns[2:]
                ),
            )
            # naive UTC timestamps into timestamptz, as Feast's own write stores them
            cur.execute(query, [list(c) for c in zip(*self._values(rows, columns), strict=True)])
            conn.commit()
