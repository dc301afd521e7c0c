"""The one-row-per-entity online store's encoding: Feast's Map protobuf, timestamps in microseconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from features.store import skip_typeguard

skip_typeguard()

from feast.protos.feast.types.Value_pb2 import Map, Value  # noqa: E402

from features.packed_store import entry, from_micros, micros, pack  # noqa: E402


def test_pack_is_a_map_protobuf_in_name_order() -> None:
    long_name = "f" * 200  # a key and an entry longer than 127 bytes: two-byte lengths
    values = {
        "b_double": Value(double_val=-1.5e-7),
        "a_zero": Value(double_val=0.0),
        "c_missing": Value(),
        "d_nan": Value(double_val=math.nan),
        "é_text": Value(string_val="x" * 300),
        long_name: Value(int64_val=-3),
    }
    blob = pack(values)
    decoded = Map.FromString(blob).val
    assert set(decoded) == set(values)
    for name, value in values.items():
        assert decoded[name].SerializeToString() == value.SerializeToString(), name
    assert decoded["c_missing"].WhichOneof("val") is None
    assert blob == b"".join(entry(n, values[n].SerializeToString()) for n in sorted(values))
    assert pack(dict(reversed(values.items()))) == blob, "the same values are always the same bytes"


def test_entry_head_and_double_make_the_serialized_entry() -> None:
    """The online writer's fast path: an entry's head, then the double's 8 bytes."""
    head = entry("card_count_1h", b"\x29" + bytes(8))[:-8]
    for v in (0.0, -0.0, 3.25, 1e308, math.inf):
        got = head + Value(double_val=v).SerializeToString()[1:]
        assert got == entry("card_count_1h", Value(double_val=v).SerializeToString())


@pytest.mark.parametrize(
    "ts",
    [
        datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 11, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),  # same instant
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_micros_round_trip(ts: datetime) -> None:
    assert from_micros(micros(ts)) == ts
    assert from_micros(micros(ts)).tzinfo is UTC


def test_a_naive_time_is_utc() -> None:
    naive = datetime(2026, 11, 1, 12, 0, 0, 5)  # noqa: DTZ001 - naive on purpose
    assert micros(naive) == micros(naive.replace(tzinfo=UTC))
    assert micros(datetime(2026, 11, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))) == micros(
        datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    )
