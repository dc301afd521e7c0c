"""Card feature rows -> Feast's online store, in bulk (the worker's online writer process).

Feast's own path (``write_to_online_store``) turns a DataFrame into Arrow, then every value into a
protobuf object, before the store writes them: ~0.5 ms per card on the 2-core machine.
``OnlineWriter`` writes the very same bytes into this project's online stores
(``features.packed_store``: one row per card, SQLite or PostgreSQL) itself: Feast's entity-key
bytes, each card's features encoded here as the store's ``Map`` protobuf, the event time; then the
store's ``write_packed``, one statement per flush, as Feast's path ends in.
tests/integration/test_online_write.py compares the tables byte for byte with Feast's own write
and reads them back through ``get_online_features``. Any other online store goes through Feast's
``write_to_online_store``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore

_DOUBLE = struct.Struct("<d")
_DOUBLE_TAG = b"\x29"  # feast.types.Value field 5 (double_val), wire type 1 (64-bit)


class OnlineWriter:
    """Writes ``{entity: ..., event_time: ..., <features>}`` rows of one feature view (doubles)."""

    def __init__(self, store: FeatureStore, view_name: str, join_key: str, features: Sequence[str]) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key  # noqa: PLC0415
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey  # noqa: PLC0415
        from feast.protos.feast.types.Value_pb2 import Value  # noqa: PLC0415

        from features.packed_store import entry  # noqa: PLC0415 - imports Feast

        self.store, self.view_name, self.join_key, self.features = store, view_name, join_key, tuple(features)
        self.config = store.config
        self.online: Any = store._get_provider().online_store  # its connection, not a second one
        self.view = store.get_feature_view(view_name)
        self.bulk = hasattr(self.online, "write_packed")
        version = self.config.entity_key_serialization_version

        def key_bytes(entity: str) -> bytes:
            return serialize_entity_key(
                EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity)]),
                entity_key_serialization_version=version,
            )

        self.key_bytes = functools.lru_cache(maxsize=100_000)(key_bytes)
        # each feature's Map entry, in name order: its head (the double's 8 bytes follow), or empty
        self.entries = [
            (name, entry(name, _DOUBLE_TAG + bytes(8))[:-8], entry(name, b""))
            for name in sorted(self.features)
        ]

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self.bulk:
            import pandas as pd  # noqa: PLC0415

            frame = pd.DataFrame(rows)[[self.join_key, "event_time", *self.features]]
            self.store.write_to_online_store(self.view_name, frame)
            return
        pack, isnan = _DOUBLE.pack, math.isnan
        packed = []
        for row in rows:
            blob = b"".join([
                empty if (v := row.get(name)) is None or isnan(v) else head + pack(v)
                for name, head, empty in self.entries
            ])  # fmt: skip
            packed.append((self.key_bytes(row[self.join_key]), blob, row["event_time"], None))
        self.online.write_packed(self.config, self.view, packed)
