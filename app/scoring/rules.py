"""Rules beside the model: block lists (cards, merchants) and a hard amount limit.

A hit forces a decline whatever the score, and appears among the reasons. The block list lives in
PostgreSQL (``block_list``) so operators can change it without a deploy; workers refresh it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.scoring.reasons import rule_reason


@dataclass(frozen=True)
class Rules:
    blocked_cards: frozenset[str] = field(default_factory=frozenset)
    blocked_merchants: frozenset[str] = field(default_factory=frozenset)
    amount_limit: float | None = None

    def hits(self, card_id: str, merchant_id: str, amount: float) -> list[dict[str, Any]]:
        out = []
        if card_id in self.blocked_cards:
            out.append(rule_reason("blocked_card", "Card is on the block list"))
        if merchant_id in self.blocked_merchants:
            out.append(rule_reason("blocked_merchant", "Merchant is on the block list", merchant_id))
        if self.amount_limit is not None and amount > self.amount_limit:
            text = f"Amount above the hard limit of {self.amount_limit:,.2f}"
            out.append(rule_reason("amount_limit", text, amount))
        return out
