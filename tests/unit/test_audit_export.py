"""The audit -> history mapping (``app.audit_export``): labels, the presumed genuine, clamping, the
settled day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from app.audit_export import (
    AUDIT_COLUMNS,
    MANIFEST,
    NOTHING_SCORED,
    Export,
    Mark,
    export_audit,
    history_rows,
    settled_through,
)
from app.errors import FraudstreamError
from app.schema import HISTORY_SCHEMA

T = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)


def _audit(
    rows: list[tuple[str, datetime, bool | None, datetime | None]], decision: str = "review"
) -> pd.DataFrame:
    place = ("card-1", "merch-1", 12.5, "EUR", "5411", "ecommerce", 48.8, 2.3, "FR")
    return pd.DataFrame(
        [
            (txn_id, at, *place, fraud, label_at, None, decision, False, False, float("nan"))
            for txn_id, at, fraud, label_at in rows
        ],
        columns=AUDIT_COLUMNS,
    )


def test_labels_become_the_history_columns() -> None:
    audit = _audit([
        ("t3", T + timedelta(hours=2), None, None),  # nobody labelled it: presumed genuine once settled
        ("t1", T, True, T + timedelta(days=3)),  # a chargeback three days later
        ("t2", T + timedelta(hours=1), False, T + timedelta(hours=5)),  # an analyst: legitimate
        ("t4", T + timedelta(hours=3), True, T - timedelta(days=90)),  # a verdict stamped before the event
    ])  # fmt: skip
    out = history_rows(audit, label_delay_days=7)
    assert list(out.columns) == list(HISTORY_SCHEMA.names)
    assert list(out["txn_id"]) == ["t1", "t2", "t3", "t4"], "sorted by event time"
    assert list(out["is_fraud"]) == [1, 0, 0, 1]
    assert list(out["fraud_scenario"]) == ["reported", "none", "none", "reported"]
    assert list(out["weight"]) == [1.0, 1.0, 1.0, 1.0], "nothing let through: each row is itself"
    assert list(out["label_time"]) == [
        pd.Timestamp(T + timedelta(days=3)),
        pd.Timestamp(T + timedelta(hours=5)),
        pd.Timestamp(T + timedelta(hours=2, days=7)),  # when it settled
        pd.Timestamp(T + timedelta(hours=3)),  # never before its event
    ]
    table = pa.Table.from_pandas(out, schema=HISTORY_SCHEMA, preserve_index=False)  # the schema on disk
    assert table.num_rows == 4
    assert (out["label_time"] >= out["event_time"]).all()


def test_a_decline_nobody_labelled_is_unobserved_not_presumed_genuine() -> None:
    later = T + timedelta(hours=1)
    rows = [("d1", T, None, None), ("d2", T, True, later), ("d3", T, False, later), ("a1", T, None, None)]
    audit = _audit(rows, decision="decline")
    audit.loc[audit["txn_id"] == "a1", "decision"] = "approve"
    out = history_rows(audit, label_delay_days=7).set_index("txn_id")
    scenarios = out.loc[["d1", "d2", "d3", "a1"], "fraud_scenario"].tolist()
    assert scenarios == ["unobserved", "reported", "none", "none"], (
        "no chargeback comes for a declined transaction: its label is unknown until someone gives one"
    )
    assert out.loc[["d1", "d2", "d3", "a1"], "is_fraud"].tolist() == [0, 1, 0, 0]


def test_a_let_through_decline_stands_for_the_unlabelled_ones_it_could_have_been() -> None:
    later = T + timedelta(hours=1)
    ids = ["e1", "e2", "u1", "u2", "u3", "x1", "l1", "a1", "e3", "u4", "e0"]
    audit = _audit([(t, T, None, None) for t in ids], decision="decline")
    audit = audit.set_index("txn_id")
    audit.loc[["e1", "e2", "e3", "e0"], ["decision", "explored"]] = ["review", True]  # let through
    audit.loc[["u1", "u2", "u3", "l1", "u4"], "explorable"] = True  # could have been let through
    audit.loc[["e1", "e2", "u1", "u2", "u3", "x1", "l1", "a1"], "explore_rate"] = 0.25
    audit.loc[["e3", "u4"], "explore_rate"] = 0.5  # the rate changed during the day
    audit.loc["l1", ["label_fraud", "label_time"]] = [True, later]  # an analyst's verdict on a decline
    audit.loc["e1", ["label_fraud", "label_time"]] = [True, later]  # a chargeback
    audit.loc["a1", "decision"] = "approve"
    out = history_rows(audit.reset_index(), label_delay_days=7).set_index("txn_id")
    assert out.loc[["e1", "e2"], "weight"].tolist() == [2.5, 2.5], (
        "two let through at 1 in 4 stand for themselves and the three nobody labelled: 1 + 3/2 each"
    )
    assert out.loc["e3", "weight"] == 2.0, "at 1 in 2: itself and u4"
    assert out.loc["e0", "weight"] == 1.0, "let through before the audit recorded the rate: itself"
    assert out.loc[["u1", "x1", "u4"], "weight"].tolist() == [0.0, 0.0, 0.0], "unobserved"
    assert out.loc[["l1", "a1"], "weight"].tolist() == [1.0, 1.0], "a labelled decline is itself"
    assert out["weight"].sum() == len(ids) - 1, "every transaction counted once, but x1 (over the cap)"


def test_a_fraud_labelled_with_its_type_keeps_it_as_its_scenario() -> None:
    later = T + timedelta(hours=1)
    rows = [("f1", T, True, later), ("f2", T, True, later), ("f3", T, True, later), ("g1", T, False, later)]
    audit = _audit(rows)
    audit["fraud_type"] = ["card_testing", None, "not-a-known-type", "card_testing"]
    out = history_rows(audit, label_delay_days=7).set_index("txn_id")
    scenarios = out.loc[["f1", "f2", "f3", "g1"], "fraud_scenario"].tolist()
    assert scenarios == ["card_testing", "reported", "reported", "none"], (
        "an analyst's or a chargeback's type where it is one the history knows; a genuine one stays none"
    )


def test_a_day_is_settled_label_delay_days_after_it_ended() -> None:
    assert settled_through(datetime(2027, 3, 20, 0, 0, tzinfo=UTC), 7) == date(2027, 3, 12)
    assert settled_through(datetime(2027, 3, 20, 23, 59, tzinfo=UTC), 7) == date(2027, 3, 12)
    assert settled_through(datetime(2027, 3, 21, 0, 0, tzinfo=UTC), 7) == date(2027, 3, 13)
    assert settled_through(datetime(2027, 3, 20, 12, 0, tzinfo=UTC), 0) == date(2027, 3, 19)


def test_the_summary_line() -> None:
    assert NOTHING_SCORED.line().startswith("export: no decision in the audit yet")
    clock = datetime(2027, 3, 20, 8, 30, tzinfo=UTC)
    idle = Export(clock, date(2027, 3, 12), (), 0, 0, 0).line()
    assert idle == (
        "export: nothing new: settled through 2027-03-12 (audit clock 2027-03-20 08:30);"
        " the history is unchanged"
    )
    busy = Export(clock, date(2027, 3, 12), ("2027-03-10", "2027-03-12"), 4_321, 12, 3).line()
    assert busy == (
        "export: 2 day(s) 2027-03-10..2027-03-12 -> 4,321 transactions, 12 labelled fraud, 3 already in the"
        " history left out; settled through 2027-03-12 (audit clock 2027-03-20 08:30)"
    )


def test_an_unreadable_mark_is_a_one_line_error(tmp_path: Path) -> None:
    assert Mark.read(tmp_path) is None, "no export yet"
    (tmp_path / MANIFEST).write_text('{"labels_id": 3}')
    with pytest.raises(FraudstreamError, match=r"is unreadable \(KeyError: 'labels_at'\); remove it") as err:
        Mark.read(tmp_path)
    assert "\n" not in str(err.value)


def test_a_history_path_that_is_not_a_folder_is_a_one_line_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "history"
    not_a_folder.write_text("a file")
    with pytest.raises(FraudstreamError, match=r"^export: .*history: File exists$") as err:
        export_audit("host=unused", not_a_folder, 7)  # fails before any connection
    assert "\n" not in str(err.value)
