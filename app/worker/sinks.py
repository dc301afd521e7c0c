"""Where computed features go: the Feast online store and the offline log, both from a writer process.

The offline log is date-partitioned Parquet written in large batches by the writer process, one
new file per flush (``date=YYYY-MM-DD/part-<worker>-<pid>-<seq>.parquet``): never Feast's offline
push, which rewrites the whole Parquet file on every call.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import queue
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.errors import FraudstreamError
from app.history import write_parquet
from app.proc_name import name_process
from app.quiet_gc import quiet_gc
from app.worker.handoff import Columns, unpack
from features.card import FEATURE_NAMES
from features.online_write import OnlineWriter
from features.store import CARD_VIEW, close_store, feature_store

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("fraudstream.worker")
FEATURE_WRITER_NAME = "fs-features"  # the process name ps and top show

LOG_SCHEMA = pa.schema(
    [
        ("txn_id", pa.string()),
        ("card_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        *((name, pa.float64()) for name in FEATURE_NAMES),
    ]
)


class FeatureLog:
    def __init__(self, root: Path, worker: str, flush_rows: int, flush_s: float) -> None:
        self.root = root / CARD_VIEW
        self.worker = f"{worker}-{os.getpid()}"
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.batches: list[Columns] = []
        self.rows = 0  # in ``batches``
        self.seq = 0
        self.last_flush = time.monotonic()
        self.written = 0

    def add(self, batch: Columns | None) -> None:
        """Queue a batch's rows (None: nothing new, only flush when due)."""
        if batch is not None:
            self.batches.append(batch)
            self.rows += len(batch)
        if self.rows >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.rows:
            return
        table = log_table(self.batches)
        days = pc.cast(table.column("event_time"), pa.date32())  # the UTC date (pandas' strftime: 27x slower)
        for day in sorted(pc.unique(days).to_pylist()):
            folder = self.root / f"date={day.isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            rows = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
            write_parquet(rows, folder / f"part-{self.worker}-{self.seq:06d}.parquet")  # never half a file
        self.seq += 1
        self.written += self.rows
        self.batches, self.rows = [], 0


def log_table(batches: list[Columns]) -> pa.Table:
    """The log's rows (``LOG_SCHEMA``) from the batches' columns: no Python object per value."""
    values = np.concatenate([b.values for b in batches])
    columns = [
        pa.array([i for b in batches for i in b.txn_ids], pa.string()),
        pa.array([c for b in batches for c in b.card_ids], pa.string()),
        pa.array([t for b in batches for t in b.event_times], LOG_SCHEMA.field("event_time").type),
        *(pa.array(values[:, j]) for j in range(len(FEATURE_NAMES))),
    ]
    return pa.Table.from_arrays(columns, schema=LOG_SCHEMA)


class FeatureWriter:
    """Computed card features to both sinks, in a child process: the Feast online store and the log.

    The agent hands each micro-batch to a writer process (spawned: a clean interpreter). For the
    online store it keeps the newest row per card and writes them every ``online_flush_s`` in bulk
    (``features.online_write``: the rows Feast's own write would store, ~10x cheaper); online
    freshness lags by at most that plus one write. Every row also goes to the offline log
    (``FeatureLog``, flushed every ``feature_log_flush_rows`` rows or ``feature_log_flush_s``).

    Both used to run in the worker: Feast's own SQLite write held the GIL for ~30 % of the worker's
    samples at 500 txn/s (session 5), and the log's Arrow/Parquet flush took ~4 % of the worker's
    samples from a backlog (session 8). Here they cost the worker nothing but the batch's packed
    ``Columns`` (app/worker/handoff.py), the very bytes the scoring process gets.

    Nothing is dropped: when ``MAX_QUEUED`` batches wait, ``write`` waits for room (back-pressure
    on the agent) and, after ``STUCK_S``, raises, which stops the worker so the batch is replayed.
    A worker that dies leaves the writer to flush what it has and exit.
    """

    MAX_QUEUED = 200
    STUCK_S = 120.0

    def __init__(self, settings: Settings) -> None:
        ctx = mp.get_context("spawn")
        self.inbox: mp.Queue[bytes | None] = ctx.Queue(self.MAX_QUEUED)
        self.outbox: mp.Queue[tuple[int, int, int]] = ctx.Queue()
        self.ready = ctx.Event()  # set once the writer has opened the store
        self.process = ctx.Process(
            target=_feature_writer, args=(settings, self.inbox, self.outbox, os.getpid()),
            kwargs={"ready": self.ready}, name="fraudstream-feature-writer", daemon=True,
        )  # fmt: skip
        self.process.start()
        self.written = self.errors = self.logged = 0

    async def write(self, features: bytes) -> None:
        """Queue a batch's packed ``Columns`` (app/worker/handoff.py) for the writer."""
        try:
            self.inbox.put_nowait(features)
        except queue.Full:
            log.warning("worker: the feature writer is %d batches behind; waiting for it", self.MAX_QUEUED)
            try:
                await asyncio.to_thread(self.inbox.put, features, True, self.STUCK_S)
            except queue.Full:
                raise FraudstreamError(
                    f"the feature writer took no batch for {self.STUCK_S:.0f} s "
                    f"(process {'alive' if self.process.is_alive() else 'dead'})"
                ) from None

    def close(self) -> None:
        self.inbox.put(None)
        try:
            self.written, self.errors, self.logged = self.outbox.get(timeout=60)
        except queue.Empty:
            log.error("worker: the feature writer did not finish; its last rows may be missing")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def _feature_writer(
    settings: Settings, inbox: mp.Queue[bytes | None], outbox: mp.Queue[tuple[int, int, int]],
    parent: int, *, ready: Any,
) -> None:  # fmt: skip
    """The writer process: coalesce per card for the online store, log every row; exit with the worker."""
    logging.basicConfig(
        level=settings.log_level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    s = settings
    store = feature_store(s, apply=False)
    writer = OnlineWriter(store, CARD_VIEW, "card_id", FEATURE_NAMES)
    feature_log = FeatureLog(s.feature_log_dir, s.app_id, s.feature_log_flush_rows, s.feature_log_flush_s)
    os.nice(s.feature_writer_nice)  # the online store can lag a little; scores should not
    name_process(FEATURE_WRITER_NAME)
    quiet_gc(log, "feature writer")  # its full collections took 120-180 ms of a shared core (session 10)
    ready.set()
    pending: dict[str, tuple[datetime, Columns, int]] = {}  # card -> its newest row: (event time, batch, row)
    written = errors = 0
    due = time.monotonic() + s.online_flush_s

    def flush() -> None:
        nonlocal written, errors
        if not pending:
            return
        rows = [batch.row(i) for _, batch, i in pending.values()]
        pending.clear()
        try:
            writer.write(rows)
            written += len(rows)
        except Exception:  # keep going; the next write of the card repairs it
            errors += 1
            log.exception("feast online write of %d rows failed", len(rows))

    while True:
        try:
            data = inbox.get(timeout=max(0.0, due - time.monotonic()))
        except queue.Empty:
            batch = None  # nothing new
        else:
            if data is None:  # the worker is closing
                break
            batch = unpack(data)
            for i, (card, at) in enumerate(zip(batch.card_ids, batch.event_times, strict=True)):
                current = pending.get(card)
                if current is None or current[0] <= at:
                    pending[card] = (at, batch, i)
        feature_log.add(batch)  # flushes when due, with or without new rows
        if time.monotonic() >= due:
            flush()
            due = time.monotonic() + s.online_flush_s
            if os.getppid() != parent:  # the worker died without closing: stop too
                break
    flush()
    feature_log.flush()
    close_store(store)
    outbox.put((written, errors, feature_log.written))
