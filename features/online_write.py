"""Card feature rows -> Feast's online store, in bulk (the worker's online writer process).

Feast's own path (``write_to_online_store``) turns a DataFrame into Arrow, then every value into a
protobuf object, before the store writes them: ~0.5 ms per card on the 2-core machine. ``OnlineWriter``
writes the very same bytes itself -- same table, same entity-key bytes (Feast's own serializer),
same serialized values, same timestamps -- in one statement per flush:

- the development/CI/demo store (``features.packed_store``, one row per card): one upsert per card,
  its features encoded here as the store's ``Map`` protobuf;
- Feast's PostgreSQL store, which ``docker-compose.yml`` ships (one row per card and feature):
  ``unnest`` of binary arrays.

tests/integration/test_online_write.py compares the tables byte for byte with Feast's own write
and reads them back through ``get_online_features``. Any other online store configuration (or the
PostgreSQL one with the optional ``value_num`` / vector columns) goes through Feast's
``write_to_online_store``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore

_DOUBLE = struct.Struct("<d")
_DOUBLE_TAG = b"\x29"  # feast.types.Value field 5 (double_val), wire type 1 (64-bit)


def naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


class OnlineWriter:
    """Writes ``{entity: ..., event_time: ..., <features>}`` rows of one feature view."""

    STORED_MAX = 1_000_000  # cards remembered as fully stored (SQLite); ~100 MB of keys at most

    def __init__(self, store: FeatureStore, view_name: str, join_key: str, features: Sequence[str]) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: PLC0415
        from feast.infra.online_stores.helpers import compute_table_id  # noqa: PLC0415
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: PLC0415
        from feast.protos.feast.types.Value_pb2 import Value  # noqa: PLC0415

        from features.packed_store import TYPE as PACKED  # noqa: PLC0415 - imports Feast
        from features.packed_store import entry, packed_table, upsert_sql  # noqa: PLC0415

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
        self.bulk = self.kind in {PACKED, "postgres"} and not extra
        if self.kind == PACKED:
            self.packed_sql = upsert_sql(packed_table(config, view))
            # each feature's Map entry: its head, followed by the double's 8 bytes; or empty
            self.packed = [
                (name, entry(name, _DOUBLE_TAG + bytes(8))[:-8], entry(name, b""))
                for name in sorted(self.features)
            ]

    def _values(self, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """One tuple per card and feature, in ``columns`` order (Feast's column names)."""
        numbers = "value_num" in columns
        out = []
        for row in rows:
            key, ts = self.key_bytes(row[self.join_key]), naive_utc(row["event_time"])
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
        elif self.kind == "postgres":
            self._write_postgres(rows)
        else:
            self._write_packed(rows)

    def _write_packed(self, rows: Sequence[dict[str, Any]]) -> None:
        """One upsert per card, all in one transaction: the card's features as the store's
        ``Map`` (see ``features.packed_store``), encoded here entry by entry."""
        from features.packed_store import micros  # noqa: PLC0415

        pack, isnan = _DOUBLE.pack, math.isnan
        out = []
        for row in rows:
            blob = b"".join([
                empty if (v := row.get(name)) is None or isnan(v) else head + pack(v)
                for name, head, empty in self.packed
            ])  # fmt: skip
            out.append((self.key_bytes(row[self.join_key]), blob, micros(row["event_time"]), None))
        conn = self.online._get_conn(self.config)
        with conn:  # one transaction
            conn.executemany(self.packed_sql, out)

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
