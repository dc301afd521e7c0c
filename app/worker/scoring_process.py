"""The scoring stage in a process of its own: champion + SHAP + decisions, beside the stream worker.

In a thread of the worker, scoring competed with the event loop for one GIL: at 1,000 txn/s paced
the stage timers showed predict + SHAP at ~230 µs a row against ~5 µs in the micro-benchmark, and
the pipeline fell behind with the machine at 60 %. ``RemoteScorer`` hands each micro-batch
(features, transactions, produce times) to a spawned child that owns the ``Scorer`` (registry,
champion, Feast merchant reads, PostgreSQL decisions). The child answers each batch twice: its
encoded ``fraud-scores`` events as soon as it is scored, then "persisted" once its decisions and
alerts are in PostgreSQL (the ``Recorder`` thread writes them while the child scores the next
batch). Each kind of answer comes in batch order; the events of batch n+1 may come before batch n
is persisted. The worker sends the events to Kafka while the child writes the audit, and holds the
batch's card states and offsets until both are done (the COPY took ~6 ms of a 2,300 txn/s batch's
~13 ms in the scoring process, all of it before the events could leave). One batch scored at a
time: the worker's scoring stage waits for the first answer, so the order of batches and the
at-least-once rules stay those of app/worker/faust_app.py.

Failures: an error in the child comes back as one line and the worker stops (the batch is
replayed); a child that dies (or a worker that dies) closes the pipe, and the other side stops.
While no champion exists, or PostgreSQL is down, the child holds the batch (as the thread did).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

import orjson

from app.errors import FraudstreamError, first_line
from app.proc_name import name_process
from app.quiet_gc import quiet_gc
from app.worker.handoff import transactions, txn_values, unpack

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from app.schema import Transaction
    from app.scoring.decide import Decision
    from app.scoring.service import Scorer
    from app.settings import Settings

log = logging.getLogger("fraudstream.worker")
SCORING_NAME = "fs-scoring"  # the process name ps and top show
# The GIL switch interval of the worker and of this child. A thread that gives up the GIL (at every
# I/O call) waits, with Python's default 5 ms interval, up to 5 ms to get it back from a busy thread.
# Measured in session 6, when the scoring stage ran in a thread of the worker: 1 ms took the backlog
# from 1,236 to 1,331 txn/s. In the worker it governs Faust's consumer thread, the feature writer's
# hand-off and the big batches sent from a thread; here, the recorder after each PostgreSQL answer.
GIL_SWITCH_S = 0.001
INLINE_SEND_BYTES = 64 * 1024  # below a Unix socket's default send buffer (~208 KB)


@dataclass(frozen=True)
class Scored:
    """What the worker needs back: the score events (JSON bytes, in input order) and counts."""

    events: list[tuple[bytes, bytes]]  # (key = card_id, value)
    flagged: int
    stage_s: dict[str, float] | None = None  # the child's stage timers so far (seconds, summed), for /metrics
    explored: int = 0  # would-be declines let through to be measured (``Policy.explores``)


class RemoteScorer:
    """Starts the child at once; ``wait_ready`` before the first batch (it loads the model, Feast)."""

    def __init__(self, settings: Settings) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(settings, child, os.getpid()), name="fraudstream-scorer", daemon=True
        )
        self.process.start()
        child.close()
        # futures the child's answers settle, per kind of answer: each kind comes in batch order
        self.answers: dict[str, deque[asyncio.Future[Any]]] = {"scored": deque(), "persisted": deque()}

    def wait_ready(self, ready_timeout_s: float = 180) -> None:
        if not self.conn.poll(ready_timeout_s):
            raise FraudstreamError(f"the scoring process did not start within {ready_timeout_s:.0f} s")
        kind, detail = self._receive()
        if kind != "ready":
            raise FraudstreamError(f"the scoring process did not start: {detail}")

    def _receive(self) -> tuple[str, Any]:
        try:
            return self.conn.recv()  # type: ignore[no-any-return]  # pickled by our own child
        except (EOFError, OSError) as exc:
            raise self._died() from exc

    def _died(self) -> FraudstreamError:
        return FraudstreamError(f"the scoring process died (exit code {self.process.exitcode})")

    async def score(
        self, features: bytes, txns: Sequence[Transaction], produced_at: Sequence[float | None]
    ) -> tuple[Scored, asyncio.Future[float | None]]:
        """The batch's score events, and a future done once its decisions are persisted (the child
        records them after answering, so the events can go to Kafka meanwhile); ``features``: its
        ``Columns``, packed (app/worker/handoff.py). Answers are read on the event loop, once the
        pipe is readable: a thread per batch (``asyncio.to_thread``) had to win the GIL back from
        the busy loop at each step (session 9: p99 at 500 txn/s paced 106 -> 75-87 ms)."""
        loop = asyncio.get_running_loop()
        scored: asyncio.Future[Any] = loop.create_future()
        persisted: asyncio.Future[float | None] = loop.create_future()  # the child's persist seconds so far
        if not self.waiting():  # nothing was expected: listen again
            loop.add_reader(self.conn.fileno(), self._answer)
        self.answers["scored"].append(scored)
        self.answers["persisted"].append(persisted)
        data = ForkingPickler.dumps(("score", (features, txn_values(txns), list(produced_at))))
        try:
            if len(data) <= INLINE_SEND_BYTES:  # fits the empty socket buffer: the write cannot wait
                self.conn.send_bytes(data)
            else:  # a big batch: from a thread, so a child busy refreshing its model cannot stall the loop
                await asyncio.to_thread(self.conn.send_bytes, data)
        except OSError as exc:  # a broken pipe: the child died between two batches
            died = self._died()
            self._fail(died)
            raise died from exc
        return await scored, persisted

    def waiting(self) -> int:
        """Answers still expected from the child."""
        return sum(map(len, self.answers.values()))

    def _answer(self) -> None:
        """The pipe is readable: the child's next answer settles the oldest future of its kind."""
        try:
            kind, detail = self._receive()
        except FraudstreamError as exc:
            self._fail(exc)
            return
        waiting = self.answers.get(kind)
        if not waiting:
            why = f"scoring failed: {detail}" if kind == "failed" else f"unexpected answer {kind!r}"
            self._fail(FraudstreamError(why))
            return
        future = waiting.popleft()
        if not future.done():
            future.set_result(detail)
        if not self.waiting():
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    def _fail(self, exc: FraudstreamError) -> None:
        """Every answer still awaited fails with ``exc`` (the worker stops; its batches are replayed)."""
        if self.waiting():
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        for waiting in self.answers.values():
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: a batch nobody awaits any more logs nothing

    def close(self) -> dict[str, Any]:
        """Stop the child; returns its stage times (empty if it did not answer)."""
        times: dict[str, Any] = {}
        try:
            self.conn.send(("close", None))
            if self.conn.poll(30):
                kind, detail = self._receive()
                times = detail if kind == "closed" else {}
        except (OSError, FraudstreamError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        return times


def _serve(settings: Settings, conn: Connection, parent: int) -> None:
    """The child: build the scorer, answer batches until told to close or the worker is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the worker closes us
    from app.scoring import pin_threads  # noqa: PLC0415

    logging.basicConfig(
        level=settings.log_level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    pin_threads(settings.worker_threads)
    name_process(SCORING_NAME)
    sys.setswitchinterval(GIL_SWITCH_S)
    sending = threading.Lock()  # two threads answer: the scoring loop and the recorder

    def send(kind: str, detail: Any) -> None:
        with sending:
            conn.send((kind, detail))

    try:
        scorer = build_scorer(settings, f"{socket.gethostname()}:{parent}")
    except Exception as exc:
        send("failed", _line(exc))
        return
    quiet_gc(log, "scoring process")  # its full collections held a batch for ~150 ms (session 10)
    recorder = Recorder(scorer, send)
    log.info("scorer: scoring process %d ready", os.getpid())
    send("ready", None)
    refreshed = time.monotonic()
    while True:
        if time.monotonic() - refreshed >= settings.model_poll_s:  # a new champion, rules, merchants
            scorer.refresh()
            refreshed = time.monotonic()
        if not conn.poll(settings.model_poll_s):
            if os.getppid() != parent:  # the worker died without closing: stop too
                return
            continue
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        if kind == "close":
            recorder.close()  # the batches still being recorded first
            scorer.store.close()
            send("closed", scorer.times.as_dict())
            return
        try:
            while scorer.champion.current is None:  # hold the batch, unacknowledged, until a model exists
                log.warning("scorer: no champion model yet (run fraudstream train); waiting")
                time.sleep(settings.model_poll_s)
                scorer.refresh()
            features, txns, produced_at = payload
            decisions = scorer.decide(unpack(features), transactions(txns), produced_at)
            events = [(d.txn.card_id.encode(), orjson.dumps(d.event())) for d in decisions]
            stage_s = {"merchant_read": scorer.times.merchant_read, "score_explain": scorer.times.predict}
            flagged = [d for d in decisions if d.flagged]
            send("scored", Scored(events, len(flagged), stage_s, sum(d.explored for d in flagged)))
            if not recorder.put(decisions):  # meanwhile the worker sends the events, the next batch comes
                return  # the recorder ended: the worker is gone
        except Exception as exc:
            log.exception("scorer: a batch failed")
            send("failed", _line(exc))


class Recorder:
    """Persists scored batches in a thread of the scoring process, in order, answering "persisted"
    for each; the scoring loop goes on to the next batch meanwhile.

    In the loop itself, a batch's COPY held the next batch: at 5,000 txn/s paced, ~20 ms a 340-row
    batch, most of it waiting for PostgreSQL (session 26). At most ``depth`` batches wait here; the
    worker holds each batch's offsets and card states until its "persisted" comes (at most
    MAX_IN_FLIGHT batches), so a PostgreSQL outage still holds the pipeline, not the audit.
    """

    def __init__(self, scorer: Scorer, send: Callable[[str, Any], None], depth: int = 4) -> None:
        self.scorer = scorer
        self.send = send
        self.batches: queue.Queue[list[Decision] | None] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="fs-recorder", daemon=True)
        self.thread.start()

    def put(self, decisions: list[Decision] | None) -> bool:
        """Queue a batch (None: no more), waiting while ``depth`` batches wait; False once the thread
        has ended (the worker is gone), instead of waiting for ever on a queue nobody empties."""
        while self.thread.is_alive():
            try:
                self.batches.put(decisions, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (decisions := self.batches.get()) is not None:
            try:
                self.scorer.persist(decisions)  # retried for as long as PostgreSQL is down
                answer: tuple[str, Any] = ("persisted", self.scorer.times.persist)
            except Exception as exc:
                log.exception("scorer: a batch could not be recorded")
                answer = ("failed", _line(exc))
            try:
                self.send(*answer)
            except OSError:  # the worker is gone (the scoring loop sees it too, and ends the process)
                return


def build_scorer(settings: Settings, worker: str) -> Scorer:
    """Wire the scoring service: registry champion, Feast merchant reads, PostgreSQL decisions."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    from app.scoring.champion import Champion  # noqa: PLC0415 - xgboost import only when scoring
    from app.scoring.decide import Policy  # noqa: PLC0415
    from app.scoring.merchants import MerchantCache, feast_lookup  # noqa: PLC0415
    from app.scoring.model import check_device  # noqa: PLC0415
    from app.scoring.service import Scorer  # noqa: PLC0415
    from app.scoring.store import DecisionStore, migrate  # noqa: PLC0415
    from features.store import feature_store  # noqa: PLC0415
    from training.registry import Registry  # noqa: PLC0415

    check_device(settings.device)  # before anything waits on it: a clear line, not held batches
    conninfo = settings.pg_conninfo(reveal=True)
    registry = Registry(conninfo, keep_connection=True)  # polled every model_poll_s
    registry.migrate()
    migrate(conninfo)
    champion = Champion(
        registry.champion, registry.get, threads=settings.worker_threads, device=settings.device,
        shadow_version=settings.shadow_model,
        on_refused=lambda version, reason: registry.refuse(version, worker, reason),
    )  # fmt: skip
    policy = Policy(
        settings.review_threshold, settings.decline_threshold, settings.explain_all, settings.reason_count,
        settings.explore_rate, settings.explore_max_amount,
    )  # fmt: skip
    if policy.explore_rate:
        log.info("scorer: letting %g of the model's would-be declines through (up to %s) to measure them",
                 policy.explore_rate, policy.explore_max_amount)  # fmt: skip
    # the scoring process's own Feast store, for merchant reads
    merchants = MerchantCache(feast_lookup(feature_store(settings, apply=False)), settings.merchant_cache_s)
    daily = settings.feast_dir / "merchant_features.parquet"
    if daily.exists():  # every merchant with batch features, read once now rather than one by one
        known = pq.read_table(daily, columns=["merchant_id"]).column(0).unique().to_pylist()
        log.info("scorer: %d merchants' features loaded", merchants.preload(known))
    scorer = Scorer(champion, merchants, DecisionStore(conninfo), policy, settings.amount_limit)
    scorer.refresh()
    return scorer


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, 300)}"
