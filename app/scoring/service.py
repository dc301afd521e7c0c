"""The scoring service the worker's agent calls once per micro-batch (blocking: run it off the loop).

features (from the stream) + merchant features (cached Feast reads) -> model matrix -> champion
(and shadow) scores -> rules -> decisions with TreeSHAP reasons -> PostgreSQL (idempotent, retried).
The scoring process answers with a batch's fraud-scores events as soon as ``decide`` returns, then
records the batch (``persist``); the worker acknowledges the batch only once both are done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.errors import first_line
from app.schema import Transaction
from app.scoring.champion import Champion
from app.scoring.decide import Decision, Policy, score_batch, vectors
from app.scoring.merchants import MerchantCache
from app.scoring.rules import Rules
from app.scoring.store import DecisionStore
from app.worker.handoff import Columns

log = logging.getLogger("fraudstream.scoring")


@dataclass
class StageTimes:
    """Seconds spent per stage (in-process timers for the benchmark)."""

    queued: float = 0.0  # summed over rows: produce timestamp -> scoring starts
    merchant_read: float = 0.0
    predict: float = 0.0
    persist: float = 0.0
    deliver: float = 0.0  # the batch's score events, dead letters and card states acknowledged by Kafka
    batches: int = 0
    rows: int = 0
    flagged: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class Scorer:
    champion: Champion
    merchants: MerchantCache
    store: DecisionStore
    policy: Policy
    amount_limit: float | None = None
    rules: Rules = field(default_factory=Rules)
    times: StageTimes = field(default_factory=StageTimes)

    def refresh(self) -> None:
        """Between batches: a newly promoted champion, the current block list (failures keep the old)."""
        try:
            self.champion.refresh()
            self.rules = self.store.rules(self.amount_limit)
            self.merchants.refresh()
        except Exception as exc:
            log.warning("scoring: refresh failed (%s); keeping the current model and rules", first_line(exc))

    def decide(
        self, card: Columns, txns: Sequence[Transaction], produced_at: Sequence[float | None]
    ) -> list[Decision]:
        """The batch's decisions, explained; not yet recorded (``persist``)."""
        model = self.champion.current
        if model is None or not txns:
            return []
        t0 = time.perf_counter()
        wall = time.time()
        self.times.queued += sum(wall - p for p in produced_at if p)
        merchant = self.merchants.get(t.merchant_id for t in txns)
        t1 = time.perf_counter()
        x = vectors(model.features, card.values, [merchant[t.merchant_id] for t in txns], txns)
        decisions = score_batch(model, x, txns, produced_at, self.policy, self.rules, self.champion.shadow)
        s = self.times
        s.merchant_read += t1 - t0
        s.predict += time.perf_counter() - t1
        s.batches += 1
        s.rows += len(decisions)
        s.flagged += sum(d.flagged for d in decisions)
        return decisions

    def persist(self, decisions: Sequence[Decision]) -> None:
        """Record the decisions and their alerts in PostgreSQL (retried until it succeeds)."""
        t0 = time.perf_counter()
        self.store.write(decisions)
        self.times.persist += time.perf_counter() - t0
