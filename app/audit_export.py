"""The decided transactions and the labels that came back -> the Parquet history the trainer reads.

Without this the daily retrain learned from the history the deployment started with, forever: the
live traffic, the chargebacks and the analysts' verdicts stayed in PostgreSQL, and a retrain that
confirmed fraud had requested trained on the same data as the champion it was to replace.

``export_audit`` writes each settled UTC day of the decision audit to
``<history>/date=YYYY-MM-DD/part-audit.parquet``, in the history schema:

- **Settled**: the day ended at least ``label_delay_days`` before the audit's clock (the latest
  ``event_time`` in ``decisions``), so its chargebacks have had time to come back. The trainer's
  cut-off is the end of the history, so its holdout is the last settled week.
- **The label** is the transaction's latest label not retracted (``LATEST_LABELS``: an analyst's
  verdict or a chargeback). A transaction nobody labelled is presumed genuine: ``is_fraud`` 0,
  ``label_time`` the moment it settled; but a decline nobody labelled is ``unobserved``
  (``fraud_scenario``; ``is_fraud`` 0): no chargeback comes for money never paid, so training leaves
  it out of its sets (presumed genuine, every unreviewed decline would teach the next model that what
  it declined was genuine). A fraud's ``fraud_scenario`` is its label's ``fraud_type`` (one of
  ``SCENARIOS``: the analyst's verdict or the chargeback's reason), else ``reported``: live traffic
  does not say which pattern it was. ``label_time`` is never before ``event_time`` (in the
  accelerated demo the simulated clock runs ahead of the analysts' wall clock).
- **Rewritten whole**: a day's file is a function of its decisions and their labels (and of the
  rows it held whose decisions have been archived since). A late
  chargeback, a verdict or an undo on a day already exported writes that day again; so does a
  decision made since for such a day (a worker catching up a backlog, one partition behind).
  ``_audit_export.json`` in the history folder keeps the labels' high-water mark (their largest id,
  and the database's clock for retractions) and the last settled day written.
- **No duplicates**: a transaction already in another file of its day (the history the deployment
  started from, or history replayed through the worker) is left out, so ``txn_id`` stays unique.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from app.errors import FraudstreamError, first_line
from app.history import read_history_file, write_parquet, write_whole
from app.schema import HISTORY_SCHEMA, LEGIT, REPORTED, SCENARIOS, TRANSACTION_FIELDS, UNOBSERVED
from app.scoring.store import EXPLORE_COLUMNS

PART = "part-audit.parquet"
MANIFEST = "_audit_export.json"
AUDIT_COLUMNS = [
    *TRANSACTION_FIELDS, "label_fraud", "label_time", "fraud_type", "decision", "explored", "explorable",
    "explore_rate",
]  # fmt: skip
LATE_MARGIN = timedelta(hours=1)
# a decisions row ``d`` -> its transaction's fields, in TRANSACTION_FIELDS order
TXN_SELECT = sql.SQL(
    "d.txn_id, d.event_time, d.card_id, d.merchant_id, d.amount, d.txn->>'currency', d.txn->>'mcc',"
    " d.txn->>'channel', (d.txn->>'lat')::float8, (d.txn->>'lon')::float8, d.txn->>'country'"
)


def history_rows(audit: pd.DataFrame, label_delay_days: int) -> pd.DataFrame:
    """One day's audit rows (``AUDIT_COLUMNS``; ``label_fraud`` None where nobody labelled the
    transaction) -> history rows, sorted by event_time. A decline nobody labelled is ``UNOBSERVED``.
    ``weight``: ``explore_weights``."""
    event_time = pd.to_datetime(audit["event_time"], utc=True)
    labelled = audit["label_fraud"].notna().to_numpy()
    fraud = labelled & (audit["label_fraud"].to_numpy() == True)  # noqa: E712 - an object column of bools and None
    unobserved = ~labelled & (audit["decision"].to_numpy() == "decline")
    types = audit["fraud_type"].to_numpy(dtype=object)
    typed = np.isin(types, SCENARIOS)
    settled = event_time + pd.Timedelta(days=label_delay_days)
    label_time = pd.to_datetime(audit["label_time"], utc=True).where(labelled, settled)
    out = audit[list(TRANSACTION_FIELDS)].assign(
        event_time=event_time,
        is_fraud=fraud.astype(np.int8),
        label_time=label_time.where(label_time >= event_time, event_time),
        fraud_scenario=np.select([fraud & typed, fraud, unobserved], [types, REPORTED, UNOBSERVED], LEGIT),
        weight=explore_weights(
            unobserved,
            audit["explored"].to_numpy(dtype=bool),
            unobserved & audit["explorable"].to_numpy(dtype=bool),
            audit["explore_rate"].to_numpy(dtype=float),
        ),
    )
    return out.sort_values(["event_time", "txn_id"], kind="stable").reset_index(drop=True)[
        list(HISTORY_SCHEMA.names)
    ]


def explore_weights(
    unobserved: np.ndarray, explored: np.ndarray, unseen: np.ndarray, rate: np.ndarray
) -> np.ndarray:
    """How many transactions each row stands for, among a day's (the history's ``weight``) or a
    window's (``app.live_performance.declines_weights``): 1; 0 for an ``unobserved`` decline; and a
    would-be decline let through to be measured (``explored``) also stands for its share of the
    ``unseen`` ones: the model's declines nobody labelled that could have been let through, at the same
    exploration ``rate`` (1 + unseen / let through, about 1 / rate).

    Without it a holdout holds only the frauds the champion did not decline (session 35: AP 0.565 for
    a model whose AP on every transaction was 0.784). Counted, not 1 / rate: a decline an analyst
    labelled is in the history as itself, so the let-through ones stand only for those nobody did."""
    weight = np.where(unobserved, 0.0, 1.0)
    for r in np.unique(rate[explored & ~np.isnan(rate)]):  # NaN: recorded before the rate was
        mine = explored & (rate == r)
        weight[mine] += (unseen & (rate == r)).sum() / mine.sum()
    return weight


@dataclass(frozen=True)
class Export:
    clock: datetime | None  # the audit's latest event_time (None: no decision yet)
    settled_through: date | None  # the last settled day
    days: tuple[str, ...]  # written (or emptied) this run
    rows: int
    frauds: int
    duplicates: int  # left out: already in another file of their day
    # labels since the last export for transactions the audit does not hold (archived, or never scored):
    # the history keeps the label their day was written with
    unmatched_labels: int = 0

    def line(self) -> str:
        if self.clock is None:
            return "export: no decision in the audit yet; the history is unchanged"
        unmatched = (
            f"; {self.unmatched_labels:,} new label(s) for transactions not in the audit (archived, or"
            " never scored) not in the history"
            if self.unmatched_labels
            else ""
        )
        if not self.days:
            return (
                f"export: nothing new: settled through {self.settled_through} (audit clock "
                f"{self.clock:%Y-%m-%d %H:%M}); the history is unchanged{unmatched}"
            )
        span = self.days[0] if len(self.days) == 1 else f"{self.days[0]}..{self.days[-1]}"
        left_out = f", {self.duplicates:,} already in the history left out" if self.duplicates else ""
        return (
            f"export: {len(self.days)} day(s) {span} -> {self.rows:,} transactions, {self.frauds:,} "
            f"labelled fraud{left_out}; settled through {self.settled_through} (audit clock "
            f"{self.clock:%Y-%m-%d %H:%M}){unmatched}"
        )


NOTHING_SCORED = Export(None, None, (), 0, 0, 0)


@dataclass(frozen=True)
class Mark:
    """How far the last export got: the labels it saw, and the last settled day it wrote."""

    labels_id: int
    labels_at: datetime
    through: date

    @classmethod
    def read(cls, history: Path) -> Mark | None:
        path = history / MANIFEST
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(int(raw["labels_id"]), datetime.fromisoformat(raw["labels_at"]),
                       date.fromisoformat(raw["through"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise FraudstreamError(
                f"export: {path} is unreadable ({type(exc).__name__}: {exc}); remove it to export every"
                " settled day of the audit again"
            ) from None

    @property
    def next_day(self) -> date:
        """The first day the export has not written."""
        return self.through + timedelta(days=1)

    @property
    def scored_after(self) -> datetime:
        """A decision scored after this may be missing from the days written (``scored_at`` is the
        scoring host's clock, hence the margin)."""
        return self.labels_at - LATE_MARGIN

    def write(self, history: Path) -> None:
        raw = {"labels_id": self.labels_id, "labels_at": self.labels_at.isoformat(),
               "through": self.through.isoformat()}  # fmt: skip
        write_whole(history / MANIFEST, (json.dumps(raw, indent=2) + "\n").encode())


def settled_through(clock: datetime, label_delay_days: int) -> date:
    """The last UTC day that ended at least ``label_delay_days`` before ``clock``."""
    return (clock - timedelta(days=label_delay_days)).date() - timedelta(days=1)


def export_audit(conninfo: str, history: Path, label_delay_days: int) -> Export:
    """Write the settled days that are new, or whose labels changed, since the last export."""
    import psycopg  # noqa: PLC0415

    try:
        return _export(conninfo, history, label_delay_days)
    except psycopg.Error as exc:
        raise FraudstreamError(f"export: PostgreSQL: {first_line(exc)}") from exc
    except OSError as exc:  # the history folder: not a folder, not writable, a full disk
        raise FraudstreamError(f"export: {exc.filename or history}: {exc.strerror or exc}") from exc


def _export(conninfo: str, history: Path, label_delay_days: int) -> Export:
    import psycopg  # noqa: PLC0415

    from app.ui.store import LATEST_LABELS  # noqa: PLC0415

    history.mkdir(parents=True, exist_ok=True)
    mark = Mark.read(history)
    with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
        conn.execute("set time zone 'UTC'")
        (tables,) = _one(
            conn, "select to_regclass('decisions') is not null and to_regclass('labels') is not null"
        )
        if not tables:  # nothing has been scored here yet (no worker has run)
            return NOTHING_SCORED
        # The labels' mark first: a label that arrives while this runs is seen by the next export. Under
        # a SHARE lock, held only while the mark is read: it waits for the label writers in flight (their
        # ids may be below the largest committed one) and holds new ones back meanwhile, so every label
        # after the mark has a larger id, and every retraction a later clock (the UI's undo stamps
        # clock_timestamp()).
        with conn.transaction():
            conn.execute("lock table labels in share mode")
            labels_id, labels_at = _one(conn, "select coalesce(max(id), 0), clock_timestamp() from labels")
        first, clock = _one(conn, "select min(event_time), max(event_time) from decisions")
        if clock is None:
            return NOTHING_SCORED
        through = settled_through(clock, label_delay_days)
        start = first.date() if mark is None else mark.next_day
        wanted = {start + timedelta(days=i) for i in range(max(0, (through - start).days + 1))}
        unmatched = 0
        if mark is not None:
            relabelled = conn.execute(
                "select distinct (d.event_time at time zone 'UTC')::date from labels l"
                " join decisions d using (txn_id) where l.id > %s or l.retracted_at > %s",
                (mark.labels_id, mark.labels_at),
            ).fetchall()
            # decisions made since then for days written already: a worker that caught up a backlog
            # with one partition behind the others (the clock comes from the one ahead)
            late: dict[date, set[str]] = {}
            for txn_id, day in conn.execute(
                "select txn_id, (event_time at time zone 'UTC')::date from decisions"
                " where scored_at > %s and event_time < %s",
                (mark.scored_after, mark.next_day),
            ):
                late.setdefault(day, set()).add(txn_id)
            missing = {day for day, ids in late.items() if not ids <= _txn_ids(history / f"date={day}")}
            wanted |= {day for day in {d for (d,) in relabelled} | missing if day <= through}
            (unmatched,) = conn.execute(
                "select count(distinct l.txn_id) from labels l where (l.id > %s and l.id <= %s)"
                " and not exists (select from decisions d where d.txn_id = l.txn_id)",
                (mark.labels_id, labels_id),
            ).fetchone() or (0,)
        written, rows, frauds, duplicates = [], 0, 0, 0
        if wanted:
            query = sql.SQL(
                "select {}, l.is_fraud, l.label_time, l.fraud_type, d.decision, {},"
                " (d.event_time at time zone 'UTC')::date"
                " from decisions d left join ({}) l using (txn_id)"
                " where d.event_time >= %s and d.event_time < %s order by d.event_time, d.txn_id"
            ).format(TXN_SELECT, EXPLORE_COLUMNS, LATEST_LABELS)
            lo, hi = min(wanted), max(wanted) + timedelta(days=1)
            with conn.transaction(), conn.cursor(name="audit_export") as cur:  # server-side: a day at a time
                cur.itersize = 20_000
                cur.execute(query, (lo, hi))
                for day, group in itertools.groupby(cur, key=lambda r: r[-1]):
                    if day not in wanted:
                        continue
                    frame = history_rows(
                        pd.DataFrame([r[:-1] for r in group], columns=AUDIT_COLUMNS), label_delay_days
                    )
                    kept = _write_day(history / f"date={day.isoformat()}", frame)
                    written.append(day.isoformat())
                    rows, duplicates = rows + len(kept), duplicates + len(frame) - len(kept)
                    frauds += int(kept["is_fraud"].sum())
    Mark(int(labels_id), labels_at, max(through, mark.through) if mark else through).write(history)
    return Export(clock, through, tuple(written), rows, frauds, duplicates, int(unmatched))


def decided_since_export(conninfo: str, history: Path) -> pd.DataFrame:
    """The decided transactions that ``history``'s exports may lack (TRANSACTION_FIELDS, by event_time).

    With an export's mark: the days after its last settled day, and the decisions made since (a day
    written already may lack those); without one, every decision. The caller drops those the history
    holds. The card states seeded after a lost changelog need them: the history ends where the last
    export stopped, a week or more before the audit's clock."""
    import psycopg  # noqa: PLC0415

    mark = Mark.read(history)
    where = sql.SQL("true")
    params: tuple[object, ...] = ()
    if mark is not None:
        where = sql.SQL("d.event_time >= %s or d.scored_at > %s")
        params = (mark.next_day, mark.scored_after)
    query = sql.SQL("select {} from decisions d where {} order by d.event_time, d.txn_id").format(
        TXN_SELECT, where
    )
    try:
        with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
            conn.execute("set time zone 'UTC'")
            (tables,) = _one(conn, "select to_regclass('decisions') is not null")
            rows = conn.execute(query, params).fetchall() if tables else []
    except psycopg.Error as exc:
        raise FraudstreamError(f"reading the decision audit: PostgreSQL: {first_line(exc)}") from exc
    frame = pd.DataFrame(rows, columns=list(TRANSACTION_FIELDS))
    return frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True))


def _one(conn: Any, query: str) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None  # an aggregate always returns a row
    return tuple(row)


def _txn_ids(folder: Path, *, but: str | None = None) -> set[str]:
    """The transactions a day's files hold (``but``: leaving that file out)."""
    known: set[str] = set()
    for path in folder.glob("*.parquet"):
        if path.name != but:
            known.update(pq.read_table(path, columns=["txn_id"]).column("txn_id").to_pylist())
    return known


def _write_day(folder: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Replace the day's audit file with ``frame`` less the transactions its other files hold.

    The file's rows that ``frame`` lacks stay: their decisions left the database for the archive
    (``app.audit_archive``), which takes a day's decisions as they age, not all at once (an open alert
    keeps its decision there), and decisions are never deleted otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PART
    if target.exists():
        before = read_history_file(target).to_pandas()
        archived = before[~before["txn_id"].isin(frame["txn_id"])]
        if not archived.empty:
            frame = pd.concat([frame, archived], ignore_index=True).sort_values(
                ["event_time", "txn_id"], kind="stable"
            )
    kept = frame[~frame["txn_id"].isin(_txn_ids(folder, but=PART))].reset_index(drop=True)
    if kept.empty:
        target.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
        return kept
    write_parquet(pa.Table.from_pandas(kept, schema=HISTORY_SCHEMA, preserve_index=False), target)
    return kept
