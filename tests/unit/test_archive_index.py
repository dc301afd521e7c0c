"""The audit archive's index beside each file (``app.audit_archive``): sorted 64-bit hashes of its
txn_ids, which a lookup searches before it reads the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from app.audit_archive import id_hashes, index_path, might_hold, write_index


def test_the_index_answers_for_every_member_and_rules_out_the_rest(tmp_path: Path) -> None:
    parquet = tmp_path / "scored=2026-03-02" / "part-x.parquet"
    parquet.parent.mkdir()
    members = [f"txn-{i:06d}" for i in range(20_000)]
    digest = write_index(index_path(parquet), id_hashes(members))
    data = index_path(parquet).read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    stored = np.frombuffer(data, "<u8")
    assert len(stored) == len(members)
    assert (np.diff(stored.astype(np.float64)) >= 0).all(), "sorted"
    assert all(might_hold(parquet, t) for t in members[::97])
    assert not any(might_hold(parquet, f"other-{i}") for i in range(5_000))
    assert [p.name for p in parquet.parent.iterdir()] == ["part-x.ids"], "no temporary file left"


def test_without_a_sound_index_the_file_is_read(tmp_path: Path) -> None:
    parquet = tmp_path / "part-y.parquet"
    assert might_hold(parquet, "anything"), "no index"
    index_path(parquet).write_bytes(b"\x00" * 7)
    assert might_hold(parquet, "anything"), "a size that is no multiple of 8"
    index_path(parquet).write_bytes(b"")
    assert might_hold(parquet, "anything"), "empty"
