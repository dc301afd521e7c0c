"""The UI's words for things the rest of the system names: every fraud type, and durations."""

from __future__ import annotations

from app.schema import SCENARIOS
from app.ui.web import FRAUD_TYPES, duration


def test_every_fraud_type_has_words_and_no_other_type_is_offered() -> None:
    assert set(FRAUD_TYPES) == set(SCENARIOS), "a scenario added to the history needs its words here"
    assert len(set(FRAUD_TYPES.values())) == len(FRAUD_TYPES)


def test_durations_read_as_people_say_them() -> None:
    seconds = (0, 59.9, 60, 3599, 3600, 3660, 7200, 2 * 86400 - 1, 2 * 86400, 9 * 86400)
    assert [duration(s) for s in seconds] == [
        "0 s", "59 s", "1 min", "59 min", "1 h", "1 h 1 min", "2 h", "47 h 59 min", "2 days", "9 days",
    ]  # fmt: skip
