"""The card states before a day of the history, kept beside it, so that a training run reads only the
days it trains on.

Without them every run read the whole history: the card features fold a card's past from its first
transaction (``card_prev_txns``, the countries and merchants seen, home), and the stream worker's
states hold all of it. Once the trainer exports the live days into the history (``app/audit_export``),
the history grows with the traffic (4.3 million transactions a day at the compose simulator's 50
txn/s), and so did each run's memory, without bound.

``states_before(history, day)`` returns each card's state after every transaction of the days before
``day``: the latest snapshot at or before ``day`` (``_card_states/before=YYYY-MM-DD.parquet``), and the
days between folded on top (``features.backfill.card_states``: the fold the features use). The result
is saved as the snapshot for ``day``; the next run folds only the days since. A snapshot is used only
while no partition before its day has been written since (a re-export of an old day, a replaced
history), and only if it can be read: otherwise an earlier one is, or none. The features of the days
from ``day`` on, folded from these states, equal those folded from the first day (unit test).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from app.history import Partition, partitions, read_history, write_parquet
from features.backfill import card_states
from features.fold import CardState

FOLDER = "_card_states"
KEEP = 2  # the newest snapshots kept


@dataclass(frozen=True)
class Snapshot:
    day: str  # the states after every transaction before this day
    path: Path

    @classmethod
    def all(cls, history: Path) -> list[Snapshot]:
        found = (cls(p.stem.removeprefix("before="), p) for p in (history / FOLDER).glob("before=*.parquet"))
        return sorted(found, key=lambda s: s.day)

    def load(self) -> dict[str, CardState]:
        table = pq.read_table(self.path)
        return {
            card: CardState.from_bytes(raw)
            for card, raw in zip(
                table.column("card_id").to_pylist(), table.column("state").to_pylist(), strict=True
            )
        }


def states_before(history: Path, day: str) -> tuple[dict[str, CardState], str]:
    """Each card's state after every transaction of the days before ``day`` (YYYY-MM-DD), and a line
    saying where they came from."""
    base, states, passed = latest_states(history, day)
    folded = read_history(history, since=base.day if base else None, before=day)
    if len(folded):
        states = dict(card_states(folded, initial=states))
        _save(history, day, states)
    origin = f"snapshot {base.day}" if base else "the first day"
    return (
        states,
        f"card states before {day}: {len(states):,} cards, from {origin} + {len(folded):,} transactions"
        + passed,
    )


def latest_states(history: Path, day: str) -> tuple[Snapshot | None, dict[str, CardState], str]:
    """The latest usable snapshot at or before ``day`` that can be read, its states, and what was
    passed over (a cache, not the data: an unreadable one is never the end of a run); no snapshot and
    no states when there is none."""
    passed = ""
    for snap in _usable(history, day, partitions(history, before=day)):
        try:
            return snap, snap.load(), passed
        except (OSError, ValueError, KeyError, IndexError, struct.error, pa.ArrowException) as exc:
            passed += f" (snapshot {snap.day} unreadable, passed over: {type(exc).__name__})"
    return None, {}, passed


def _usable(history: Path, day: str, before: list[Partition]) -> list[Snapshot]:
    """The snapshots at or before ``day`` written after every partition before their own day, newest
    first."""
    usable = []
    for snap in reversed(Snapshot.all(history)):
        written = snap.path.stat().st_mtime_ns
        if snap.day <= day and all(p.path.stat().st_mtime_ns < written for p in before if p.day < snap.day):
            usable.append(snap)
    return usable


def _save(history: Path, day: str, states: dict[str, CardState]) -> None:
    folder = history / FOLDER
    folder.mkdir(exist_ok=True)
    table = pa.table({"card_id": pa.array(list(states), pa.string()),
                      "state": pa.array([s.to_bytes() for s in states.values()], pa.binary())})  # fmt: skip
    write_parquet(table, folder / f"before={day}.parquet")
    for old in Snapshot.all(history)[:-KEEP]:
        old.path.unlink(missing_ok=True)
