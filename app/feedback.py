"""Labels coming back: chargebacks and analyst verdicts on ``fraud-feedback`` -> PostgreSQL -> retrain.

``FeedbackService.handle(batch)`` (the worker's feedback agent calls it per micro-batch):
chargebacks are upserted into ``labels`` (one per txn_id: redelivery never duplicates; analyst
verdicts are already written by the UI); then it counts the confirmed frauds labelled since the
champion's training cut-off, and when they reach ``threshold`` files one retrain request for that
champion (``retrain_triggers`` has one row per model version and kind, so a burst of confirmed
fraud, replays included, triggers exactly once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from pydantic import ValidationError

from app.pg import apply_schema
from app.schema import SCENARIOS, Feedback
from app.ui.store import UiStore, settle_by_chargebacks

log = logging.getLogger("fraudstream.feedback")

SCHEMA = """
create unique index if not exists labels_one_chargeback on labels (txn_id) where source = 'chargeback';
create table if not exists retrain_triggers (
    model_version text not null,
    kind          text not null,
    count         integer not null,
    at            timestamptz not null default now(),
    primary key (model_version, kind)
);
"""


def parse(raw: bytes | None) -> Feedback | str:
    if raw is None:
        return "empty message (tombstone)"
    try:
        return Feedback.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"invalid {'.'.join(str(p) for p in first['loc']) or 'message'}: {first['msg']}"


def fraud_type(feedback: Feedback) -> str | None:
    """A chargeback's fraud type: its ``fraud_scenario`` when it is one of ``SCENARIOS`` (a card
    network's reason code mapped to one, or the simulator's truth), else not known."""
    if feedback.is_fraud and feedback.fraud_scenario in SCENARIOS:
        return feedback.fraud_scenario
    return None


class FeedbackService:
    def __init__(self, conninfo: str, threshold: int, request_retrain: Callable[[str], None]) -> None:
        self.conninfo, self.threshold, self.request_retrain = conninfo, threshold, request_retrain
        self.labels = 0
        self.triggered: list[str] = []

    def migrate(self) -> None:
        UiStore(self.conninfo).migrate()  # labels and alerts live with the UI tables
        with psycopg.connect(self.conninfo, connect_timeout=10) as conn:
            apply_schema(conn, SCHEMA)

    def handle(self, batch: Sequence[Feedback]) -> dict[str, Any]:
        chargebacks = [f for f in batch if f.source == "chargeback"]
        fire, confirmed = False, 0
        with psycopg.connect(self.conninfo, connect_timeout=10) as conn, conn.transaction():
            rows = [(f.txn_id, f.card_id, bool(f.is_fraud), f.label_time, fraud_type(f)) for f in chargebacks]
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into labels (txn_id, card_id, is_fraud, source, label_time, fraud_type) values"
                    " (%s, %s, %s, 'chargeback', %s, %s)"
                    " on conflict (txn_id) where source = 'chargeback' do nothing",
                    rows,
                )
            settled = settle_by_chargebacks(conn, [f.txn_id for f in chargebacks])
            champion = conn.execute(
                "select version, data_to from model_registry where status = 'champion'"
            ).fetchone()
            if champion is not None:
                version, cutoff = champion
                row = conn.execute(
                    "select count(distinct txn_id) from labels where is_fraud and retracted_at is null"
                    " and label_time >= %s",
                    (cutoff,),
                ).fetchone()
                confirmed = int(row[0]) if row else 0
            if champion is not None and confirmed >= self.threshold:
                inserted = conn.execute(
                    "insert into retrain_triggers (model_version, kind, count)"
                    " values (%s, 'confirmed_fraud', %s) on conflict do nothing returning model_version",
                    (version, confirmed),
                ).fetchone()
                fire = inserted is not None
            if fire:  # in the transaction: a failed send rolls the trigger back; the next batch retries
                reason = (
                    f"confirmed fraud: {confirmed} labels since {version}'s cut-off (min {self.threshold})"
                )
                self.request_retrain(reason)
                self.triggered.append(reason)
                log.info("feedback: %s -> retrain requested", reason)
        self.labels += len(chargebacks)
        return {
            "chargebacks": len(chargebacks),
            "settled": len(settled),
            "confirmed": confirmed,
            "retrain": fire,
        }
