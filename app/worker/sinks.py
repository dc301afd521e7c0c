"""Where computed features go: the Feast online store (a writer process) and the offline log.

The offline log is date-partitioned Parquet written in large batches by this process, one new
file per flush (``date=YYYY-MM-DD/part-<worker>-<seq>.parquet``): never Feast's offline push,
which rewrites the whole Parquet file on every call.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.card import FEATURE_NAMES
from features.online_write import OnlineWriter
from features.store import CARD_VIEW, close_store, feature_store

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("fraudstream.worker")

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
        self.rows: list[dict[str, Any]] = []
        self.seq = 0
        self.last_flush = time.monotonic()
        self.written = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=LOG_SCHEMA)
        days = pd.Series(table.column("event_time").to_pandas()).dt.strftime("%Y-%m-%d").to_numpy()
        for day in sorted(set(days)):
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".part-{self.worker}-{self.seq:06d}.tmp"
            pq.write_table(table.filter(pa.array(days == day)), tmp, compression="zstd")
            tmp.rename(folder / f"part-{self.worker}-{self.seq:06d}.parquet")  # readers never see half a file
        self.seq += 1
        self.written += len(self.rows)
        self.rows = []


class OnlineFeatures:
    """Latest card features to the Feast online store, coalesced per card, in a child process.

    The agent hands each micro-batch to a writer process (spawned: a clean interpreter), which keeps
    the newest row per card and writes them every ``flush_s`` in bulk (``features.online_write``:
    the rows Feast's own write would store, ~10x cheaper). Feast's own SQLite write converts every
    value to protobuf and holds the GIL: in a thread of the worker it took ~30 % of the worker's
    samples at 500 txn/s (py-spy); in its own process it no longer stalls the agent.
    Online freshness lags by at most ``flush_s`` plus one write. If the writer falls behind by
    ``MAX_QUEUED`` batches, batches are dropped and counted (a later event of the card repairs its
    row); the card state in the stream, not the online store, is what scoring uses.
    """

    MAX_QUEUED = 200

    def __init__(self, settings: Settings, flush_s: float = 0.5) -> None:
        ctx = mp.get_context("spawn")
        self.inbox: mp.Queue[list[dict[str, Any]] | None] = ctx.Queue(self.MAX_QUEUED)
        self.outbox: mp.Queue[tuple[int, int]] = ctx.Queue()
        self.ready = ctx.Event()  # set once the writer has opened the store
        self.process = ctx.Process(
            target=_online_writer,
            args=(settings, flush_s, self.inbox, self.outbox, os.getpid()),
            kwargs={"ready": self.ready},
            name="feast-online-writer", daemon=True,
        )  # fmt: skip
        self.process.start()
        self.written = self.errors = self.dropped = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self.inbox.put_nowait(rows)  # pickled by the queue's feeder thread
        except queue.Full:
            self.dropped += len(rows)
            if self.dropped == len(rows) or self.dropped % 10_000 < len(rows):
                log.warning("worker: Feast online writer behind; %d rows not written online", self.dropped)

    def close(self) -> None:
        self.inbox.put(None)
        try:
            self.written, self.errors = self.outbox.get(timeout=60)
        except queue.Empty:
            log.error("worker: Feast online writer did not finish; its last rows may be missing online")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def _online_writer(
    settings: Settings, flush_s: float, inbox: mp.Queue[list[dict[str, Any]] | None],
    outbox: mp.Queue[tuple[int, int]], parent: int, *, ready: Any,
) -> None:  # fmt: skip
    """The writer process: coalesce per card, write every ``flush_s``; exit with the worker."""
    logging.basicConfig(
        level=settings.log_level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    store = feature_store(settings, apply=False)
    writer = OnlineWriter(store, CARD_VIEW, "card_id", FEATURE_NAMES)
    ready.set()
    pending: dict[str, dict[str, Any]] = {}
    written = errors = 0
    due = time.monotonic() + flush_s

    def flush() -> None:
        nonlocal written, errors
        if not pending:
            return
        rows = list(pending.values())
        pending.clear()
        try:
            writer.write(rows)
            written += len(rows)
        except Exception:  # keep going; the next write of the card repairs it
            errors += 1
            log.exception("feast online write of %d rows failed", len(rows))

    while True:
        try:
            rows = inbox.get(timeout=max(0.0, due - time.monotonic()))
        except queue.Empty:
            rows = []
        if rows is None:
            break
        for row in rows:
            current = pending.get(row["card_id"])
            if current is None or current["event_time"] <= row["event_time"]:
                pending[row["card_id"]] = row
        if time.monotonic() >= due:
            flush()
            due = time.monotonic() + flush_s
            if os.getppid() != parent:  # the worker died without closing: stop too
                break
    flush()
    close_store(store)
    outbox.put((written, errors))
