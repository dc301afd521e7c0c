"""Merchant features for scoring: the Feast online store, held in memory by the worker.

Merchant features are batch features (rebuilt daily), so the worker loads every known merchant at
start (one bulk online read), reads a merchant it has never seen on first sight, and re-reads
entries older than ``ttl_s`` in the background (``refresh``), never on the scoring path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from features.merchant import MERCHANT_FEATURES
from features.store import MERCHANT_VIEW

Row = Mapping[str, float | None]
Lookup = Callable[[Sequence[str]], dict[str, Row]]
CHUNK = 2_000


class MerchantCache:
    def __init__(self, lookup: Lookup, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup, self.ttl_s, self.clock = lookup, ttl_s, clock
        self.rows: dict[str, tuple[float, Row]] = {}
        self.reads = 0

    def _read(self, merchant_ids: Sequence[str]) -> None:
        empty: Row = dict.fromkeys(MERCHANT_FEATURES)
        for lo in range(0, len(merchant_ids), CHUNK):
            part = merchant_ids[lo : lo + CHUNK]
            found = self.lookup(part)
            self.reads += 1
            now = self.clock()
            for m in part:
                self.rows[m] = (now, found.get(m, empty))

    def get(self, merchant_ids: Iterable[str]) -> dict[str, Row]:
        """Features of each merchant; one online read for those never seen before."""
        wanted = set(merchant_ids)
        missing = sorted(m for m in wanted if m not in self.rows)
        if missing:
            self._read(missing)
        return {m: self.rows[m][1] for m in wanted}

    def preload(self, merchant_ids: Iterable[str]) -> int:
        ids = sorted(set(merchant_ids) - set(self.rows))
        self._read(ids)
        return len(ids)

    def refresh(self) -> int:
        """Re-read entries older than the TTL (call it off the scoring path); returns how many."""
        now = self.clock()
        stale = sorted(m for m, (at, _) in self.rows.items() if now - at > self.ttl_s)
        self._read(stale)
        return len(stale)


def feast_lookup(store: object) -> Lookup:
    """Read merchant features for many merchants in one Feast online call."""
    refs = [f"{MERCHANT_VIEW}:{n}" for n in MERCHANT_FEATURES]

    def lookup(merchant_ids: Sequence[str]) -> dict[str, Row]:
        result = store.get_online_features(  # type: ignore[attr-defined]
            features=refs, entity_rows=[{"merchant_id": m} for m in merchant_ids]
        ).to_dict()
        return {m: {n: result[n][i] for n in MERCHANT_FEATURES} for i, m in enumerate(result["merchant_id"])}

    return lookup
