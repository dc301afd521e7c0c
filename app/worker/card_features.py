"""Turn a micro-batch of raw ``transactions`` messages into card features (no Faust, no I/O).

Per message: decode and validate (bad input -> a dead-letter record with a one-line reason),
check the event is not later than the allowed lateness for its card, compute the features as of
the transaction with the shared pure functions, and fold it into the card's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.pan import mask_pans
from app.schema import Transaction
from features.fold import CardState, Txn, card_features, contains, update

MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class Raw:
    """A consumed message and where it came from."""

    key: bytes | None
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp: float | None = None  # produce (or log-append) time, seconds since the epoch


@dataclass(frozen=True)
class DeadLetter:
    """What could not be processed, kept with its reason; card numbers in it are masked."""

    key: bytes | None
    reason: str
    raw: Raw

    def masked_key(self) -> bytes | None:
        return mask_pans(self.key.decode("utf-8", errors="replace")).encode() if self.key else self.key

    def record(self) -> dict[str, Any]:
        value = self.raw.value or b""
        return {
            "reason": self.reason,
            "topic": self.raw.topic,
            "partition": self.raw.partition,
            "offset": self.raw.offset,
            "failed_at": datetime.now(UTC).isoformat(),
            "value": mask_pans(value[:MAX_PAYLOAD].decode("utf-8", errors="replace")),
            "value_bytes": len(value),
            "truncated": len(value) > MAX_PAYLOAD,
        }


@dataclass
class BatchResult:
    features: list[dict[str, Any]] = field(default_factory=list)  # txn_id, card_id, event_time + features
    transactions: list[Transaction] = field(default_factory=list)
    produced_at: list[float | None] = field(default_factory=list)
    states: dict[bytes, bytes] = field(default_factory=dict)  # changed card states, to write back
    partitions: dict[bytes, int] = field(default_factory=dict)  # card -> the source partition it came from
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0


def decode(raw: Raw) -> Transaction | str:
    """The transaction, or a one-line reason why it cannot be processed."""
    if raw.value is None:
        return "empty message (tombstone)"
    if len(raw.value) > MAX_PAYLOAD:
        return f"payload too large: {len(raw.value)} bytes (max {MAX_PAYLOAD})"
    try:
        txn = Transaction.model_validate_json(raw.value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        kind = "invalid JSON" if first["type"] == "json_invalid" else f"invalid {where}"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{kind}: {first['msg']}{more}"
    if raw.key is not None and raw.key != txn.card_id.encode():
        return "key does not match card_id: messages must be keyed by card_id"
    return txn


def to_txn(txn: Transaction) -> Txn:
    return Txn(
        txn.txn_id, txn.event_time.timestamp(), txn.amount, txn.lat, txn.lon, txn.country, txn.merchant_id
    )


def redelivered(state: CardState, raw: Raw) -> bool:
    """A message the card's state already holds: re-read after a crash, however old its event."""
    at = state.position
    return at is not None and at[0] == raw.partition and 0 <= raw.offset <= at[1]


class DecodedStates:
    """Card states decoded earlier, reused while the table still holds the very bytes they came from.

    Decoding a card's state costs ~100-150 µs, once per card and batch. The worker writes its own
    table partitions, so the state object it encoded last is still right as long as the table
    holds that same bytes object (identity, not equality: a changelog recovery or a rebalance puts
    new objects there, which are decoded afresh). A taken entry leaves the cache until the batch
    puts it back, so a batch that fails halfway leaves nothing half-updated behind. At most
    ``capacity`` cards are kept (least recently used go first).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: dict[bytes, tuple[bytes, CardState]] = {}
        self.hits = 0
        self.misses = 0

    def take(self, key: bytes, raw: bytes | None) -> CardState:
        entry = self.entries.pop(key, None)
        if entry is not None and entry[0] is raw:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return CardState.from_bytes(raw)

    def put(self, key: bytes, raw: bytes | None, state: CardState) -> None:
        if raw is None or self.capacity <= 0:
            return
        self.entries[key] = (raw, state)
        while len(self.entries) > self.capacity:
            del self.entries[next(iter(self.entries))]


def process_batch(
    batch: list[Raw],
    states: Mapping[bytes, bytes | None],
    lateness_s: float,
    known: DecodedStates | None = None,
) -> BatchResult:
    """Features for every valid transaction of ``batch``, in order; ``states`` is the card table.

    The card states the batch changed come back in ``result.states``: the caller writes them to
    the table only after the batch's decisions are persisted, so a crash in between replays the
    batch from the old states (same features, same decisions, idempotent sinks). ``known``
    spares decoding the states this worker wrote itself.
    """
    result = BatchResult()
    cache: dict[bytes, CardState] = {}
    read: dict[bytes, bytes | None] = {}
    changed: set[bytes] = set()
    for raw in batch:
        decoded = decode(raw)
        if isinstance(decoded, str):
            result.dead.append(DeadLetter(raw.key, decoded, raw))
            continue
        key = decoded.card_id.encode()
        state = cache.get(key)
        if state is None:
            raw_state = read[key] = states.get(key)
            state = cache[key] = (
                known.take(key, raw_state) if known is not None else CardState.from_bytes(raw_state)
            )
        txn = to_txn(decoded)
        if redelivered(state, raw):
            result.duplicates += 1
            continue
        if contains(state, txn.txn_id):
            result.duplicates += 1
            continue
        if state.last is not None and txn.t < state.last.t - lateness_s:
            behind = state.last.t - txn.t
            reason = f"late event: {behind:.0f}s behind the card's latest event (lateness {lateness_s:.0f}s)"
            result.dead.append(DeadLetter(raw.key, reason, raw))
            result.late += 1
            continue
        row: dict[str, Any] = {
            "txn_id": txn.txn_id,
            "card_id": decoded.card_id,
            "event_time": decoded.event_time,
        }
        row.update(card_features(state, txn))
        update(state, txn, pending_s=lateness_s)
        if raw.offset >= 0:
            state.position = (raw.partition, raw.offset)
            result.partitions[key] = raw.partition
        changed.add(key)
        result.features.append(row)
        result.transactions.append(decoded)
        result.produced_at.append(raw.timestamp)
    result.states = {key: cache[key].to_bytes() for key in changed}  # only cards that moved
    if known is not None:
        for key, state in cache.items():
            known.put(key, result.states.get(key, read[key]), state)
    return result
