"""Card states seeded from history, so that a fresh deployment's worker starts warm.

The worker folds each card's transactions into the card's state (features/card.py) and keeps it in
the card-state table, which it rebuilds from the table's changelog topic when it starts. A new
deployment's worker would know no card: for a month its 30-day features would count only what it
had seen since it started, and the champion, trained on the whole history, would score inputs
unlike those it learned from. ``seed_card_states`` runs the batch backfill's fold (the same fold:
features/backfill.py) over the history and writes each card's state to the changelog, in the
partition of the card's transactions, as a worker that had read the history would have. The next
transaction of each card then gets the features the batch path gives it.

Only into an empty changelog: once a worker has written states they are newer than any history,
so a changelog holding records is left as it is. Run it before the first worker starts: a worker
reads the changelog when it starts (``fraudstream init --history DIR`` and the demo do). The
history should end where the transactions topic begins: a transaction in both is one its card's
state already holds, which the worker recognises (a duplicate, not scored again) only within the
state's 24 hours of exact events.

A deployment that lost its changelog has decided transactions the history lacks: the scheduled
trainer exports the audit into the history only once a day has settled (``app/audit_export.py``), a
week or more after it. With ``audit`` (``fraudstream init`` passes the deployment's database) the
fold takes those from the decision audit too, so the states end where the workers stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from app.audit_export import decided_since_export
from app.errors import FraudstreamError
from app.history import read_history
from app.kafka_admin import ensure_changelog, records_in
from app.schema import TRANSACTION_FIELDS
from app.settings import Settings
from features.backfill import card_states


def source_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) gives ``key``: where the
    card's transactions go, and so where the worker that owns them recovers the card's state."""
    from kafka.partitioner.default import murmur2  # noqa: PLC0415 - adapters import their client lazily

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def seed_card_states(
    settings: Settings, history_dir: Path, *, check: Callable[[Path], None] | None = None,
    audit: str | None = None,
) -> str:  # fmt: skip
    """Write every card's state after ``history_dir`` to the card-state changelog; a one-line summary.

    ``check`` (the history's validation, where nothing has validated it yet; it raises to refuse)
    runs only when seeding will happen: the changelog is empty. ``audit`` (a PostgreSQL conninfo):
    the decided transactions the history lacks are folded in too."""
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    topic, partitions = ensure_changelog(settings)
    held = records_in(settings, topic)
    if held:
        return f"seed: {topic} already holds {held:,} records; card states not seeded (a worker's are newer)"
    if check is not None:
        check(history_dir)
    history = read_history(history_dir)
    decided = pd.DataFrame()
    if audit is not None:
        decided = decided_since_export(audit, history_dir)
        decided = decided[~decided["txn_id"].isin(history["txn_id"])]
        if len(decided):  # one event_time dtype (Arrow's UTC and psycopg's differ), or pandas makes it object
            decided = decided.astype({"event_time": history["event_time"].dtype})
            history = pd.concat([history[list(TRANSACTION_FIELDS)], decided], ignore_index=True)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", enable_idempotence=True, linger_ms=10,
        batch_size=256 * 1024, **settings.kafka_security(),
    )  # fmt: skip
    failed: list[BaseException] = []
    cards = 0
    try:
        for card, state in card_states(history, settings.lateness_s):
            key = card.encode()
            where = source_partition(key, partitions)
            producer.send(topic, key=key, value=state.to_bytes(), partition=where).add_errback(failed.append)
            cards += 1
        producer.flush(timeout=120)
    except KafkaError as exc:
        raise FraudstreamError(f"seeding card states into {topic} failed: {exc}") from exc
    finally:
        producer.close(timeout=30)
    if failed:
        why = f"{type(failed[0]).__name__}: {failed[0]}"
        raise FraudstreamError(f"{len(failed)} of {cards} card states were not written to {topic} ({why})")
    until = f" up to {history['event_time'].max():%Y-%m-%d %H:%M} UTC" if len(history) else ""
    audited = f" ({len(decided):,} of them from the decision audit)" if audit is not None else ""
    return f"seed: {cards:,} card states from {len(history):,} transactions{audited}{until} -> {topic}"
