"""Retention of the decision audit: old decisions move from PostgreSQL to Parquet files.

At the compose simulator's 50 txn/s the ``decisions`` table grows by four million rows a day, and
each row carries its features, SHAP values and reasons. ``archive_audit`` moves the decisions scored
more than ``keep_days`` ago to ``<archive>/scored=YYYY-MM-DD/part-<run>.parquet`` (every audit
column, the JSON ones as their text, and the alert's status, who closed it and when), one file per
scored day and run, and deletes them from the database:

- **Only what the history holds**: a decision leaves the database once the export has written its
  day (``event_time`` before the export mark's next day, scored before the mark's ``scored_after``),
  so the trainer and the seeding after a lost changelog never need it there again.
- **Never an open alert**: a decision whose alert is still open stays, with its alert, until an
  analyst closes it. Its closed alert goes into the file with it.
- **Nothing lost**: the file is written under a hidden name, renamed into place, then, in one
  transaction, the decisions it holds (a temporary table of their ids, copied as the file is written)
  are deleted and the file recorded in ``audit_archives`` with its row count and SHA-256. A deleted
  count other than the file's rolls the day back and removes the file. A file without its
  ``audit_archives`` row (a run that died between the rename and the commit) holds rows still in the
  database: the next run removes it.
- ``decisions`` stays append-only for everyone else: its trigger lets a DELETE through only with the
  transaction-local setting ``fraudstream.archiving`` on.

One run at a time (an advisory lock). The trainer's scheduled run archives after each export.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql

from app.audit_export import Mark
from app.errors import FraudstreamError, first_line
from app.history import parquet_file, write_whole
from app.scoring.store import COLUMN_TYPES

ARCHIVE_LOCK = 0x61726368  # an advisory lock key ("arch"): one archive run at a time
SCHEMA = """
create table if not exists audit_archives (
    id            bigserial primary key,
    scored_day    date not null,
    path          text not null unique,
    rows          bigint not null,
    sha256        text not null,
    first_scored  timestamptz not null,
    last_scored   timestamptz not null,
    archived_at   timestamptz not null default now()
);
alter table audit_archives add column if not exists ids_sha256 text;  -- its index's (``index_path``)
"""

_ARROW = {"text": pa.string(), "json": pa.string(), "timestamptz": pa.timestamp("us", tz="UTC"),
          "float8": pa.float64()}  # fmt: skip
ALERT_COLUMNS = (("alert_status", "text"), ("alert_created_at", "timestamptz"),
                 ("alert_closed_at", "timestamptz"), ("alert_closed_by", "text"))  # fmt: skip
FILE_COLUMNS = (*COLUMN_TYPES[:7], ("recorded_at", "timestamptz"), *COLUMN_TYPES[7:], *ALERT_COLUMNS)
ARCHIVE_SCHEMA = pa.schema([(name, _ARROW[kind]) for name, kind in FILE_COLUMNS])
_SCORED_AT = [name for name, _ in FILE_COLUMNS].index("scored_at")
# the JSON columns as their text: the file keeps what was written, and psycopg does not parse it
SELECT = sql.SQL(
    "select {}, a.status, a.created_at, a.closed_at, a.closed_by from decisions d"
    " left join alerts a using (txn_id)"
    " where d.scored_at < %s and d.event_time < %s and d.scored_at <= %s"
    " and (a.status is null or a.status <> 'open') order by d.scored_at"
).format(
    sql.SQL(", ").join(
        sql.SQL("d.{}::text").format(sql.Identifier(name)) if kind == "json" else sql.Identifier("d", name)
        for name, kind in FILE_COLUMNS[: -len(ALERT_COLUMNS)]
    )
)


@dataclass(frozen=True)
class Archived:
    horizon: datetime | None  # decisions scored before this may go (None: archiving is off or waits)
    why_not: str  # why nothing could go ("" when the run looked)
    files: tuple[str, ...] = ()
    rows: int = 0
    kept_open: int = 0  # scored before the horizon, kept: their alert is open
    kept_unexported: int = 0  # scored before the horizon, kept: the history does not hold their day yet
    changed: tuple[str, ...] = ()  # days rolled back: their alerts changed while the run wrote them
    orphans: int = 0  # files of a run that died before its commit, removed

    def line(self) -> str:
        if self.horizon is None:
            return f"archive: {self.why_not}"
        head = (
            f"archive: {self.rows:,} decisions scored before {self.horizon:%Y-%m-%d %H:%M} -> "
            f"{len(self.files)} file(s)" if self.files else
            f"archive: nothing scored before {self.horizon:%Y-%m-%d %H:%M} to move"
        )  # fmt: skip
        kept = [f"{self.kept_open:,} kept with an open alert"] if self.kept_open else []
        if self.kept_unexported:
            kept.append(f"{self.kept_unexported:,} kept: their day is not in the history yet")
        if self.changed:
            kept.append(f"day(s) {', '.join(self.changed)} changed while archived: left for the next run")
        if self.orphans:
            kept.append(
                f"{self.orphans} file(s) of an unfinished run removed (their rows are in the database)"
            )
        return "; ".join([head, *kept])


def archive_audit(
    conninfo: str, history: Path, archive: Path, keep_days: int, *, now: datetime | None = None,
    batch_rows: int = 20_000,
) -> Archived:  # fmt: skip
    """Move the decisions scored more than ``keep_days`` ago that the history holds, and whose alert
    is not open, to ``archive``; ``keep_days`` 0 keeps every decision."""
    import psycopg  # noqa: PLC0415

    if keep_days <= 0:
        return Archived(None, "off (FRAUDSTREAM_AUDIT_KEEP_DAYS=0): the database keeps every decision")
    mark = Mark.read(history)
    if mark is None:
        return Archived(
            None, f"nothing moved: no export has written {history} yet (a decision leaves the database only"
            " once the history holds its day)"
        )  # fmt: skip
    horizon = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    try:
        return _archive(conninfo, mark, archive, horizon, batch_rows)
    except psycopg.Error as exc:
        raise FraudstreamError(f"archive: PostgreSQL: {first_line(exc)}") from exc
    except OSError as exc:
        raise FraudstreamError(f"archive: {exc.filename or archive}: {exc.strerror or exc}") from exc


def _archive(conninfo: str, mark: Mark, archive: Path, horizon: datetime, batch_rows: int) -> Archived:
    import psycopg  # noqa: PLC0415

    from app.pg import apply_schema  # noqa: PLC0415

    with (
        psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as reader,
        psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as writer,
    ):
        (tables,) = reader.execute(
            "select to_regclass('decisions') is not null and to_regclass('alerts') is not null"
        ).fetchone() or (False,)
        if not tables:
            return Archived(None, "nothing moved: no decision has been recorded here yet")
        apply_schema(writer, SCHEMA)
        (locked,) = reader.execute("select pg_try_advisory_lock(%s)", (ARCHIVE_LOCK,)).fetchone() or (False,)
        if not locked:
            raise FraudstreamError("archive: another archive run is in progress; try again when it ends")
        orphans = _remove_orphans(writer, archive)
        # the export's next day as a UTC instant: a date would be midnight in the session's time zone
        next_day = datetime.combine(mark.next_day, time(), UTC)
        params = (horizon, next_day, mark.scored_after)
        files: list[str] = []
        changed: list[str] = []
        rows = 0
        with reader.transaction(), reader.cursor(name="audit_archive") as cur:
            cur.itersize = batch_rows
            cur.execute(SELECT, params)
            for day, group in groupby(_batches(cur, batch_rows), key=lambda b: b[0]):
                written = _archive_day(writer, archive, day, (batch for _, batch in group))
                if written is None:
                    changed.append(day.isoformat())
                else:
                    files.append(written[0])
                    rows += written[1]
        exported = "d.event_time < %(next)s and d.scored_at <= %(seen)s"
        kept_unexported, kept_open = reader.execute(
            f"select count(*) filter (where not ({exported})),"  # noqa: S608 - constants only
            f" count(*) filter (where {exported} and a.status = 'open')"
            " from decisions d left join alerts a using (txn_id) where d.scored_at < %(horizon)s",
            {"next": next_day, "seen": mark.scored_after, "horizon": horizon},
        ).fetchone() or (0, 0)
    return Archived(horizon, "", tuple(files), rows, int(kept_open), int(kept_unexported), tuple(changed),
                    orphans)  # fmt: skip


def _batches(cur: Any, size: int) -> Any:
    """The cursor's rows as (scored day, rows of that day) pieces of at most ``size`` rows."""
    while rows := cur.fetchmany(size):
        for day, same in groupby(rows, key=lambda r: r[_SCORED_AT].astimezone(UTC).date()):
            yield day, list(same)


def _archive_day(writer: Any, archive: Path, day: date, batches: Any) -> tuple[str, int] | None:
    """One scored day's decisions -> a file, then out of the database; the file's path (relative to
    ``archive``) and row count, or None when the day changed meanwhile (rolled back, file removed)."""
    import psycopg  # noqa: PLC0415

    folder = archive / f"scored={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}.parquet"
    target = folder / name
    relative = target.relative_to(archive).as_posix()
    count, first, last, committed = 0, None, None, False
    hashes: list[np.ndarray] = []
    try:
        with writer.transaction():
            writer.execute("create temp table archiving (txn_id text primary key) on commit drop")
            with parquet_file(target, ARCHIVE_SCHEMA, compression="snappy") as out:
                for rows in batches:
                    columns = list(zip(*rows, strict=True))
                    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, ARCHIVE_SCHEMA, strict=True)]
                    out.write_table(pa.Table.from_arrays(arrays, schema=ARCHIVE_SCHEMA))
                    with writer.cursor().copy("copy archiving (txn_id) from stdin") as copy:
                        for txn_id in columns[0]:
                            copy.write_row((txn_id,))
                    hashes.append(id_hashes(columns[0]))
                    count += len(rows)
                    first = first or rows[0][_SCORED_AT]
                    last = rows[-1][_SCORED_AT]
            if pq.read_metadata(target).num_rows != count:
                raise FraudstreamError(f"archive: {target} does not hold the {count:,} rows written")
            with target.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            ids_digest = write_index(index_path(target), np.concatenate(hashes))
            writer.execute("set local fraudstream.archiving = 'on'")
            writer.execute(
                "delete from alerts a using archiving t where a.txn_id = t.txn_id and a.status <> 'open'"
            )
            deleted = writer.execute(
                "delete from decisions d using archiving t where d.txn_id = t.txn_id"
            ).rowcount
            if deleted != count:
                raise _ChangedError
            writer.execute(
                "insert into audit_archives (scored_day, path, rows, sha256, first_scored, last_scored,"
                " ids_sha256) values (%s, %s, %s, %s, %s, %s, %s)",
                (day, relative, count, digest, first, last, ids_digest),
            )
        committed = True
    except (_ChangedError, psycopg.errors.ForeignKeyViolation):
        return None  # rolled back: an alert reopened meanwhile; the file goes below
    finally:
        if not committed:
            target.unlink(missing_ok=True)
            index_path(target).unlink(missing_ok=True)
    return relative, count


# The index beside each archive file: the 64-bit BLAKE2b hashes of its txn_ids, sorted, little-endian.
# A lookup reads a few of its pages (a binary search on the memory-mapped file) instead of the file's
# txn_id column, and reads the file only when the hash is there.
def index_path(parquet: Path) -> Path:
    return parquet.with_suffix(".ids")


def id_hash(txn_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(txn_id.encode(), digest_size=8).digest(), "little")


def id_hashes(txn_ids: Any) -> np.ndarray:
    return np.fromiter((id_hash(t) for t in txn_ids), dtype=np.uint64, count=len(txn_ids))


def write_index(path: Path, hashes: np.ndarray) -> str:
    """Write the sorted hashes to ``path`` (whole or not at all); their SHA-256."""
    data = np.sort(hashes).astype("<u8").tobytes()
    write_whole(path, data)
    return hashlib.sha256(data).hexdigest()


def might_hold(parquet: Path, txn_id: str) -> bool:
    """False only when the file's index says ``txn_id`` is not in it; True when it may be, or when the
    index is missing or malformed (the file is read)."""
    index = index_path(parquet)
    try:
        size = index.stat().st_size
    except FileNotFoundError:
        return True
    if size == 0 or size % 8:
        return True
    hashes = np.memmap(index, dtype="<u8", mode="r")
    try:
        h = np.uint64(id_hash(txn_id))
        at = int(np.searchsorted(hashes, h))
        return at < len(hashes) and bool(hashes[at] == h)
    finally:
        del hashes  # unmap


class _ChangedError(Exception):
    """The decisions deleted are not the file's: an alert reopened (or a decision left) meanwhile."""


def _remove_orphans(writer: Any, archive: Path) -> int:
    if not archive.exists():
        return 0
    with writer.transaction():
        known = {path for (path,) in writer.execute("select path from audit_archives")}
    orphans = 0
    for path in archive.glob("scored=*/*"):
        parquet = path.with_suffix(".parquet") if path.suffix == ".ids" else path
        if parquet.relative_to(archive).as_posix() not in known and path.suffix in {
            ".parquet",
            ".ids",
            ".tmp",
        }:
            path.unlink()
            orphans += path.suffix != ".ids"  # an index goes with its file: counted once
    return orphans


def find_decision(
    conninfo: str, archive: Path, txn_id: str, *, scored_on: date | None = None
) -> tuple[dict[str, Any], str] | None:
    """A transaction's decision record, from the database or else from the archive, and where it was
    found (``database`` or the archive file); None when neither holds it. ``scored_on`` looks only at
    that scored day's files. Each file's index (``might_hold``) is searched first; a file is read
    (its txn_id column, a row group at a time) only when its index has the hash, or has no sound index."""
    import psycopg  # noqa: PLC0415
    from psycopg.rows import dict_row  # noqa: PLC0415

    columns = sql.SQL(", ").join(sql.Identifier("d", name) for name, _ in FILE_COLUMNS[: -len(ALERT_COLUMNS)])
    query = sql.SQL(
        "select {}, a.status as alert_status, a.created_at as alert_created_at,"
        " a.closed_at as alert_closed_at, a.closed_by as alert_closed_by"
        " from decisions d left join alerts a using (txn_id) where d.txn_id = %s"
    ).format(columns)
    try:
        with psycopg.connect(conninfo, connect_timeout=10, autocommit=True, row_factory=dict_row) as conn:
            found = conn.execute("select to_regclass('decisions') is not null as yes").fetchone()
            row = conn.execute(query, (txn_id,)).fetchone() if found and found["yes"] else None
    except psycopg.Error as exc:
        raise FraudstreamError(f"decision: PostgreSQL: {first_line(exc)}") from exc
    if row is not None:
        return dict(row), "database"
    folders = [archive / f"scored={scored_on.isoformat()}"] if scored_on else sorted(archive.glob("scored=*"))
    for path in (p for folder in folders for p in sorted(folder.glob("part-*.parquet"))):
        if not might_hold(path, txn_id):
            continue
        try:
            record = _find_in(path, txn_id)
        except (OSError, pa.ArrowException) as exc:  # the decision may be in it: never "not found"
            raise FraudstreamError(
                f"decision: {path} is unreadable ({type(exc).__name__}: {first_line(exc)}); `fraudstream"
                " archive --verify` checks every archived file"
            ) from exc
        if record is not None:
            for name, kind in FILE_COLUMNS:
                if kind == "json" and record[name] is not None:
                    record[name] = json.loads(record[name])
            return record, path.relative_to(archive).as_posix()
    return None


def _find_in(path: Path, txn_id: str) -> dict[str, Any] | None:
    """The archive file's row for ``txn_id``, a row group at a time (a day's file can be gigabytes)."""
    file = pq.ParquetFile(path)
    for group in range(file.num_row_groups):
        at = pc.index(file.read_row_group(group, columns=["txn_id"]).column("txn_id"), txn_id).as_py()
        if at >= 0:
            row: dict[str, Any] = file.read_row_group(group).slice(at, 1).to_pylist()[0]
            return row
    return None


@dataclass(frozen=True)
class Verified:
    files: int
    rows: int
    problems: tuple[str, ...]  # one line per file missing, changed or not holding its rows

    def line(self) -> str:
        head = f"archive: {self.files:,} file(s), {self.rows:,} decisions checked against audit_archives"
        if not self.problems:
            return f"{head}: every file is there, with its SHA-256 and row count, and its index"
        shown = "; ".join(self.problems[:5]) + ("; ..." if len(self.problems) > 5 else "")
        return f"{head}: {len(self.problems):,} problem(s): {shown}"


def verify_archive(conninfo: str, archive: Path) -> Verified:
    """Every file ``audit_archives`` records: there, with the SHA-256 and row count recorded when its
    decisions left the database, and its index (``index_path``) with the SHA-256 recorded for it."""
    import psycopg  # noqa: PLC0415

    from app.pg import apply_schema  # noqa: PLC0415

    try:
        with psycopg.connect(conninfo, connect_timeout=10, autocommit=True) as conn:
            found = conn.execute("select to_regclass('audit_archives') is not null").fetchone()
            recorded = []
            if found and found[0]:
                apply_schema(conn, SCHEMA)  # a table from before the index gains its column
                query = "select path, rows, sha256, ids_sha256 from audit_archives order by id"
                recorded = conn.execute(query).fetchall()
    except psycopg.Error as exc:
        raise FraudstreamError(f"archive: PostgreSQL: {first_line(exc)}") from exc
    problems, rows = [], 0
    for path, count, digest, ids_digest in recorded:
        file = archive / path
        rows += count
        if ids_digest is not None:  # files archived before the index have none
            index = index_path(file)
            if not index.is_file():
                problems.append(f"{index.relative_to(archive).as_posix()} is missing (lookups read its file)")
            elif hashlib.sha256(index.read_bytes()).hexdigest() != ids_digest:
                problems.append(f"{index.relative_to(archive).as_posix()} has changed (SHA-256)")
        if not file.is_file():
            problems.append(f"{path} is missing")
            continue
        with file.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                problems.append(f"{path} has changed (SHA-256)")
                continue
        held = pq.read_metadata(file).num_rows
        if held != count:  # the digest matched: only a wrong record could
            problems.append(f"{path} holds {held:,} rows, not {count:,}")
    return Verified(len(recorded), rows, tuple(problems))
