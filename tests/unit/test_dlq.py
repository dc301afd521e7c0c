"""``fraudstream dlq``'s summary of dead letters: kinds by count, times, sources, newest examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from app.dlq import UNREADABLE, describe, kind_of, summarize

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def letter(minute: int, reason: str, offset: int, topic: str = "transactions") -> tuple[datetime, bytes]:
    record = {"reason": reason, "topic": topic, "partition": 2, "offset": offset, "value": '{"amount": -3}'}
    return T0 + timedelta(minutes=minute), orjson.dumps(record)


def test_dead_letters_are_counted_by_kind_with_their_newest_examples() -> None:
    letters = [
        letter(0, "invalid amount: Input should be greater than 0", 10),
        letter(5, "late event: 400s behind the card's latest event (lateness 300s)", 11),
        letter(9, "invalid amount: Input should be greater than 0", 12),
        letter(7, "invalid amount: Input should be greater than 0 (+1 more)", 13),
        letter(8, "feedback: invalid verdict", 3, topic="fraud-feedback"),
        (T0 + timedelta(minutes=1), b"\x00 not the worker's"),
    ]
    summary = summarize([*letters, letter(10, "invalid amount: again, after a restart", 12)], samples=2)
    kinds = summary.kinds
    assert summary.repeats == 1, "offset 12 of transactions/2 came twice: counted once"
    assert [(k.name, k.count) for k in kinds] == [
        ("invalid amount", 3), ("feedback", 1), ("late event", 1), (UNREADABLE, 1),
    ]  # fmt: skip
    amount = kinds[0]
    assert (amount.first, amount.last) == (T0, T0 + timedelta(minutes=9))
    assert [r["offset"] for r in amount.newest] == [12, 13], "the newest two, newest first"
    lines = describe(summary, "transactions-dlq", T0 - timedelta(hours=1))
    assert lines[0] == (
        "dlq: 6 dead letters in transactions-dlq since 2026-12-04 08:00:00 UTC"
        " (1 more repeated after a restart, counted once)"
    )
    assert lines[1] == "        3  invalid amount  (from transactions; 2026-12-04 09:00:00 .. 09:09:00 UTC)"
    assert lines[2] == (
        '           transactions/2@12: invalid amount: Input should be greater than 0 | {"amount": -3}'
    )
    assert "from fraud-feedback;" in lines[4]
    assert lines[-1].endswith(f"?/?@?: {UNREADABLE} | \x00 not the worker's")
    empty = summarize([], samples=1)
    assert (empty.kinds, empty.repeats) == ([], 0)
    assert describe(empty, "dlq", T0) == ["dlq: 0 dead letters in dlq since 2026-12-04 09:00:00 UTC"]


def test_the_kind_is_the_reason_up_to_its_first_colon() -> None:
    assert kind_of("invalid JSON: EOF while parsing") == "invalid JSON"
    keyed = "key does not match card_id: messages must be keyed by card_id"
    assert kind_of(keyed) == "key does not match card_id"
    assert kind_of("empty message (tombstone)") == "empty message (tombstone)"
    assert kind_of("") == UNREADABLE
