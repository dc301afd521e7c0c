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
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from app.audit_export import decided_since_export
from app.errors import FraudstreamError
from app.history import partitions, read_history
from app.kafka_admin import ensure_changelog, records_in
from app.schema import TRANSACTION_FIELDS
from app.settings import Settings
from features.backfill import card_states
from features.card import PENDING_S
from features.fold import CardState
from features.snapshot import Snapshot, latest_states


def source_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) gives ``key``: where the
    card's transactions go, and so where the worker that owns them recovers the card's state."""
    from kafka.partitioner.default import murmur2  # noqa: PLC0415 - adapters import their client lazily

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def seed_card_states(
    settings: Settings, history_dir: Path, *, check: Callable[[Path, str | None], None] | None = None,
    audit: str | None = None,
) -> str:  # fmt: skip
    """Write every card's state after ``history_dir`` to the card-state changelog; a one-line summary.

    ``check(history_dir, since)`` (the validation of the days read from ``since`` on, where nothing has
    validated them yet; it raises to refuse) runs only when seeding will happen: the changelog is
    empty. ``audit`` (a PostgreSQL conninfo): the decided transactions the history lacks are folded
    in too.

    The states before the history's last days come from the trainer's snapshot when one is usable
    (``features.snapshot``: the same fold, so the same states), and only the days from it on are read:
    a deployment that has run for a year has a history no process could read whole. Not when the
    worker's lateness differs from the one the snapshots were folded with."""
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    topic, partitions = ensure_changelog(settings)
    held = records_in(settings, topic)
    if held:
        return f"seed: {topic} already holds {held:,} records; card states not seeded (a worker's are newer)"
    decided = pd.DataFrame(columns=list(TRANSACTION_FIELDS))
    if audit is not None:
        decided = decided_since_export(audit, history_dir)
    base: Snapshot | None = None
    initial: dict[str, CardState] = {}
    passed = ""
    if settings.lateness_s == PENDING_S:  # the snapshots' fold
        base, initial, passed = latest_states(history_dir, _first_day_to_read(history_dir, decided))
    since = None if base is None else base.day
    if check is not None:
        check(history_dir, since)
    history = read_history(history_dir, since=since)
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
        for card, state in card_states(history, settings.lateness_s, initial=initial):
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
    origin = "" if base is None else f"snapshot {base.day} + "
    return (
        f"seed: {cards:,} card states from {origin}{len(history):,} transactions{audited}{until} -> {topic}"
        + passed
    )


def _first_day_to_read(history_dir: Path, decided: pd.DataFrame) -> str:
    """The first day whose transactions the fold needs one by one: the day after the history's last,
    or the first day of a decided transaction the history lacks, if earlier (the fold is in time
    order, so everything from there on is read)."""
    last = partitions(history_dir)[-1].day
    after = (date.fromisoformat(last) + timedelta(days=1)).isoformat()
    if not len(decided):
        return after
    first: str = pd.Timestamp(decided["event_time"].min()).strftime("%Y-%m-%d")
    return min(after, first)
