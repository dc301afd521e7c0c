"""Merchant features for scoring: Feast online store behind a short per-merchant cache.

Merchant features change once a day (batch), so each micro-batch asks Feast only for the merchants
it has not looked up within ``ttl_s``: one online read per batch at most, never one per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from features.merchant import MERCHANT_FEATURES
from features.store import MERCHANT_VIEW

Row = Mapping[str, float | None]
Lookup = Callable[[Sequence[str]], dict[str, Row]]


class MerchantCache:
    def __init__(self, lookup: Lookup, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup, self.ttl_s, self.clock = lookup, ttl_s, clock
        self.rows: dict[str, tuple[float, Row]] = {}
        self.reads = 0

    def get(self, merchant_ids: Iterable[str]) -> dict[str, Row]:
        now = self.clock()
        wanted = set(merchant_ids)
        stale = sorted(m for m in wanted if m not in self.rows or now - self.rows[m][0] > self.ttl_s)
        if stale:
            found = self.lookup(stale)
            self.reads += 1
            empty: Row = dict.fromkeys(MERCHANT_FEATURES)
            for m in stale:
                self.rows[m] = (now, found.get(m, empty))
        return {m: self.rows[m][1] for m in wanted}


def feast_lookup(store: object) -> Lookup:
    """Read merchant features for many merchants in one Feast online call."""
    refs = [f"{MERCHANT_VIEW}:{n}" for n in MERCHANT_FEATURES]

    def lookup(merchant_ids: Sequence[str]) -> dict[str, Row]:
        result = store.get_online_features(  # type: ignore[attr-defined]
            features=refs, entity_rows=[{"merchant_id": m} for m in merchant_ids]
        ).to_dict()
        return {m: {n: result[n][i] for n in MERCHANT_FEATURES} for i, m in enumerate(result["merchant_id"])}

    return lookup
