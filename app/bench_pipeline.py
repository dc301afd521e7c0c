"""``fraudstream bench --suite pipeline``: the real pipeline end to end, and the model's own costs.

A champion is registered in a private PostgreSQL database (trained on a simulated history, or
``--model DIR`` from an earlier training run); worker processes consume a private topic; the bench
replays simulated traffic into it (pre-encoded, through aiokafka record batches: ``replay``) at
``--rate`` (0 = as fast as the producer can) for ``--duration`` seconds, waits until the workers
have committed everything, then reads every ``fraud-scores`` event back (afterwards, so that the
bench's consumer does not compete for the CPU). ``--rate 0`` measures saturation without the
bench's own producer competing for the CPU either: the input is all in Kafka before the workers
start, and throughput is how fast they drain it. Reported:

- ``event_to_score_ms``: the transaction's produce timestamp -> the score event's timestamp (both
  stamped by Kafka clients on this machine), p50/p95/p99/max;
- ``steady_event_to_score_ms``: the same for the transactions produced from 10 s after every
  worker was up (None when fewer than 1,000), without the start-up;
- ``decision_ms``: produce timestamp -> decision made (the event's own ``latency_ms``);
- throughput (scored events / s between the first and last score; ``steady_scored_per_s`` from
  10 s after every worker is up, without start-up and rebalances), the consumer group's lag on the
  input topic (sampled every second: max and last), CPU and memory of the workers (with their
  feature writers), the whole machine's CPU and the share of it the hypervisor stole
  (``machine_steal_percent``), the workers' CPU µs per transaction, per-stage seconds from the
  workers' in-process timers;
- ``cpu_calibration``: a fixed pure-Python workload's CPU time (min and median of 100 chunks) before
  and after the run, because the speed of this machine's cores varies by up to 2x;
- ``wall_clock_jumps``: times the wall clock leapt ahead of the monotonic clock during the run.
  This machine is a virtual machine that its host pauses now and then: its monotonic clock stops,
  and on resume its wall clock is stepped forward. The latencies are wall-clock differences, so a
  pause shows in them as if the pipeline had waited (one of 95 s, another of 2.3 s, in session 10);
  a run with a jump is flagged, and its figures are not the pipeline's;
- ``batch_stages_ms``: where the latency goes, per micro-batch, from the workers' own stamps
  (app/worker/batch_trace.py): Kafka and the fetch, the batch window, the features, the wait for
  the scoring stage, the scoring process, the send, Kafka's acknowledgement; and
  ``batch_stages_ms_over_time``, the same steps' [p50, p99] per 5 s of produce time;
- micro-benchmarks: predict and exact TreeSHAP µs/row by batch size (``--device`` cpu or cuda).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import psutil

from app.bench import _percentiles, cpu_calibration, machine
from app.errors import FraudstreamError
from app.history import read_history, write_history
from app.model_bench import micro_bench
from app.pg import scratch_database
from app.quiet_gc import quiet_gc
from app.schema import TRANSACTION_FIELDS, encode
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.worker import batch_trace
from app.worker.process import isolated_env, running_workers, settings_for
from features import fold

if TYPE_CHECKING:
    import pandas as pd

STAGES = re.compile(r"worker: stage times (\{.*\})")
TICK_S = 0.01  # the bench's paced sends: what is due goes out every 10 ms (2 ms cost twice the CPU)
STEADY_AFTER_S = 10.0  # steady_scored_per_s leaves out the first seconds after every worker is up


def prepare_champion(s: Settings, workdir: Path, model_dir: Path | None, customers: int) -> Path:
    """History for merchant features + traffic; a champion in the registry. Returns the history dir."""
    from features.jobs import build_merchant_features  # noqa: PLC0415 - Feast import is slow
    from training.jobs import train_job  # noqa: PLC0415
    from training.registry import Registry  # noqa: PLC0415

    history = workdir / "history"
    write_history(simulate(SimConfig(customers=customers, merchants=2 * customers, days=40, seed=3)), history)
    build_merchant_features(s, history)
    if model_dir is None:
        train_job(s, history, seed=0, report=workdir / "report")
        return history
    meta = json.loads((model_dir / "metadata.json").read_text())
    registry = Registry(s.pg_conninfo(reveal=True))
    registry.migrate()
    target = s.models_dir / model_dir.name
    shutil.copytree(model_dir, target)
    frame = read_history(history)
    registry.register(
        model_dir.name, meta.get("metrics", {}), meta.get("params", {}), str(target),
        frame["event_time"].min(), frame["event_time"].max(), None, str(meta.get("git_commit", "")),
    )  # fmt: skip
    registry.promote(model_dir.name)
    return history


def encoded(traffic: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """(key, value) of each transaction as ``fraudstream produce`` sends it, encoded before the run."""
    rows = traffic[list(TRANSACTION_FIELDS)].to_dict("records")
    return [(row["card_id"].encode(), encode(row)) for row in rows]


async def replay(
    s: Settings, messages: Sequence[tuple[bytes, bytes]], *, rate: float, duration_s: float
) -> int:
    """Send ``messages`` in order to the transactions topic at ``rate`` per second (0: at once) for at
    most ``duration_s``; returns how many were sent (all acknowledged).

    The bench's traffic source shares the machine with the pipeline, so it must cost little: the
    values are encoded beforehand and go out through aiokafka's record batches every ``TICK_S``
    (C code per message). ``fraudstream produce`` (kafka-python, pure Python per message) took
    ~0.4-0.5 ms of CPU per transaction: at 1,000 txn/s, 40-47 % of a core of the 2-core machine;
    this replay takes ~15 % there, and 10 µs per message for a backlog.
    Each message's timestamp (CreateTime) is stamped when it joins a batch, when it is due.
    """
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from app.worker.outbox import Message, Outbox  # noqa: PLC0415

    options: dict[str, Any] = dict(s.kafka_security())
    if s.kafka_security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=options.pop("ssl_cafile", None))
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_servers, acks="all", enable_idempotence=True, linger_ms=0,
        max_batch_size=512 * 1024, **options,
    )  # fmt: skip
    await producer.start()
    outbox, topic, acks, sent = Outbox(lambda: producer), s.topic_transactions, [], 0
    try:
        started = time.monotonic()
        while sent < len(messages) and (elapsed := time.monotonic() - started) < duration_s:
            due = len(messages) if rate <= 0 else min(len(messages), int(elapsed * rate) + 1)
            due = min(due, sent + 5_000)
            if due > sent:
                acks += await outbox.send(Message(topic, k, v) for k, v in messages[sent:due])
                sent = due
            else:
                await asyncio.sleep(TICK_S)
        for a in acks:
            await a.ack
    finally:
        await producer.stop()
    return sent


def read_scores(s: Settings) -> tuple[list[tuple[float, float, float]], set[str]]:
    """Every fraud-scores event, read once the run is over: (score event timestamp, txn produce
    time, latency_ms) per event, and the distinct txn_ids. Read afterwards, not during the run, so
    the bench's own consumer does not compete with the pipeline for the CPU; the latencies come
    from the timestamps Kafka clients stamped during the run, so they are the same either way."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(
        bootstrap_servers=s.kafka_servers, group_id=None, enable_auto_commit=False, **s.kafka_security()
    )
    tps = [
        TopicPartition(s.topic_scores, p) for p in sorted(consumer.partitions_for_topic(s.topic_scores) or ())
    ]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    rows: list[tuple[float, float, float]] = []
    txn_ids: set[str] = set()
    deadline = time.monotonic() + 120
    while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=10_000).values():
            for r in records:
                event = orjson.loads(r.value)
                txn_ids.add(event["txn_id"])
                produced = _epoch(event["scored_at"]) - event["latency_ms"] / 1000
                rows.append((r.timestamp / 1000, produced, event["latency_ms"]))
    consumer.close()
    return rows, txn_ids


def read_scores_and_delete_topics(s: Settings) -> tuple[list[tuple[float, float, float]], set[str]]:
    """``read_scores``, then the finished run's topics deleted, Faust's own included (all named after
    its app id): the local broker keeps its log in memory (scripts/services), and every run makes new
    topics."""
    from app.kafka_admin import delete_topics  # noqa: PLC0415

    found = read_scores(s)
    delete_topics(s, f"{s.app_id}-")
    return found


class LagSampler(threading.Thread):
    """Every second: the workers' consumer lag on the input topic (log end minus committed offset).

    One client for the whole run, in the workers' group but never joining it (it only reads the
    group's committed offsets), so sampling costs a few small requests a second.
    """

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True, name="lag-sampler")
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_servers, group_id=s.app_id, enable_auto_commit=False,
            **s.kafka_security(),
        )  # fmt: skip
        self.tps = [TopicPartition(s.topic_transactions, p) for p in range(s.topic_partitions)]
        self.samples: list[int] = []
        self.times: list[float] = []  # monotonic time of each sample
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                ends = self.consumer.end_offsets(self.tps)
                behind = [end - (self.consumer.committed(tp) or 0) for tp, end in ends.items()]
            except Exception:  # noqa: S112 - a missed sample is not a failed bench
                continue
            self.samples.append(sum(max(0, b) for b in behind))
            self.times.append(time.monotonic())
        self.consumer.close(autocommit=False)

    def wait_drained(self, since: float, deadline: float) -> bool:
        """Wait for a sample taken after ``since`` (monotonic) with nothing left to commit."""
        while time.monotonic() < deadline:
            if any(t > since and lag == 0 for t, lag in zip(self.times, self.samples, strict=False)):
                return True
            time.sleep(0.2)
        return False

    def summary(self) -> dict[str, int | None]:
        return {
            "max": max(self.samples, default=None),
            "end": self.samples[-1] if self.samples else None,
            "samples": len(self.samples),
        }


class ClockWatch(threading.Thread):
    """Every 100 ms: how far the wall clock moved beyond the monotonic clock (see the module doc)."""

    JUMP_S = 0.05

    def __init__(self) -> None:
        super().__init__(daemon=True, name="clock-watch")
        self.jumps: list[tuple[float, float]] = []  # (wall clock at the jump, seconds leapt)
        self.stop = threading.Event()

    @classmethod
    def started(cls) -> ClockWatch:
        watch = cls()
        watch.start()
        return watch

    def run(self) -> None:
        wall, mono = time.time(), time.monotonic()
        while not self.stop.wait(0.1):
            now_wall, now_mono = time.time(), time.monotonic()
            if (leap := clock_leap(now_wall - wall, now_mono - mono)) > self.JUMP_S:
                self.jumps.append((now_wall, round(leap, 3)))
            wall, mono = now_wall, now_mono


def clock_leap(wall_elapsed: float, mono_elapsed: float) -> float:
    """Seconds the wall clock moved beyond the monotonic one (0 when it did not)."""
    return max(0.0, wall_elapsed - mono_elapsed)


def _epoch(iso: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(iso).timestamp()


def run_pipeline_bench(
    settings: Settings, out: Path, *, rate: float, duration_s: float, workers: int = 1,
    model_dir: Path | None = None, customers: int = 2_000, warm_s: float = 5.0,
    keep_model: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One run; ``keep_model``: a folder to copy the champion's own into (under its version) when
    this run trains it, so that later runs can take it as ``model_dir`` (app/bench_repeat.py)."""
    from app.kafka_admin import ensure_topics  # noqa: PLC0415
    from app.scoring.model import Model  # noqa: PLC0415
    from training.registry import Registry  # noqa: PLC0415

    name = f"bench_{int(time.time())}"
    with (
        tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp,
        scratch_database(settings, name) as db,
    ):
        workdir = Path(tmp)
        env = {**isolated_env(name.replace("_", "-"), workdir), "FRAUDSTREAM_PG_DB": db,
               "FRAUDSTREAM_MODELS_DIR": str(workdir / "models"),
               "FRAUDSTREAM_BATCH_TRACE_DIR": str(workdir / "batches")}  # fmt: skip
        s = settings_for(env)
        history_dir = prepare_champion(s, workdir, model_dir, customers)
        champion = Registry(s.pg_conninfo(reveal=True)).champion()
        assert champion is not None
        model = Model.load(Path(champion.artefact_dir), champion.version)
        if keep_model is not None and model_dir is None:
            shutil.copytree(champion.artefact_dir, keep_model / champion.version)
        ensure_topics(s)
        history = read_history(history_dir)
        traffic = history[history["event_time"] >= history["event_time"].max() - timedelta(days=14)]
        lag = LagSampler(s)
        clock = ClockWatch.started()
        backlog = rate == 0  # saturation: the input is all in Kafka before the workers start
        messages = encoded(traffic)
        # the traffic source must not pause: its full collections (273-376 ms, scanning the history
        # and the encoded messages) held the sending, then let it all go at once, and the p99 measured it
        quiet_gc(logging.getLogger("fraudstream.bench"), "bench")

        def send() -> int:
            return asyncio.run(replay(s, messages, rate=rate, duration_s=duration_s))

        speed_before = cpu_calibration()
        sent = send() if backlog else 0
        with running_workers([workdir / f"worker-{i}.log" for i in range(workers)], env) as procs:
            ready_at = time.time()  # every worker is up (wall clock, like the Kafka timestamps)
            lag.start()
            time.sleep(0 if backlog else warm_s)  # paced: the group joined, partitions assigned
            # CPU from the first transaction sent (a backlog: from the workers up) to the drain; counting
            # the idle warm-up too put the machine at 62-65 % in paced runs that saturated it (session 26)
            measured = RunUsage([p.pid for p in procs])
            if not backlog:
                sent = send()
            drained = lag.wait_drained(time.monotonic(), time.monotonic() + 300)
            usage = measured.finish()
        for sampler in (lag, clock):
            sampler.stop.set()
            sampler.join(timeout=10)
        rows_read, txn_ids = read_scores_and_delete_topics(s)
        logs = _keep_logs(workdir, workers, out)
        traced = batch_trace.read(workdir / "batches")
        stages = batch_trace.stage_latencies(traced)
        stages_over_time = batch_trace.stages_over_time(traced, TIMELINE_S)
    if not rows_read:
        raise FraudstreamError(
            f"no fraud-scores event was read ({sent:,} sent): the workers failed, see {out.stem}-worker-*.log"
        )
    rows = np.array(rows_read)
    e2e = (rows[:, 0] - rows[:, 1]) * 1000
    span = float(rows[:, 0].max() - rows[:, 0].min()) if len(rows) > 1 else 0.0
    result = {
        "suite": "pipeline",
        "machine": machine(),
        "settings": {
            "rate": rate,
            "mode": "backlog (input produced before the workers start)" if rate == 0 else "paced",
            "duration_s": duration_s,
            "workers": workers,
            "batch_size": s.batch_size,
            "batch_within_s": s.batch_within_s,
            "worker_threads": s.worker_threads,
            "partitions": s.topic_partitions,
            "review_threshold": s.review_threshold,
            "explain_all": s.explain_all,
            "device": s.device,  # FRAUDSTREAM_DEVICE: where the workers predict and explain
            "card_fold": fold.KIND,  # features/fold.py: compiled with mypyc, or the Python source
            "online_store": s.feast_config,  # features/repo: sqlite (default) or postgres (docker-compose)
        },
        "model": {"version": model.version, **model.shape(), "features": len(model.features)},
        "sent": sent,
        "scored": len(txn_ids),
        "score_events": len(rows),
        "lost": sent - len(txn_ids),
        "missing_txn_ids": sorted(set(traffic["txn_id"].iloc[:sent]) - txn_ids)[:100],
        "drained": drained,  # the workers committed everything before the 300 s deadline
        "scored_per_s": round(len(rows) / span, 1) if span > 0 else None,
        # the same from STEADY_AFTER_S after every worker was up until the last score: without the
        # first worker's head start and the group's rebalances as the others join (None: too short)
        "steady_scored_per_s": _steady_rate(rows[:, 0], ready_at + STEADY_AFTER_S) if len(rows) else None,
        "event_to_score_ms": _percentiles(list(e2e)),
        # the same for transactions produced from STEADY_AFTER_S after every worker was up: without
        # the start-up (the first batches' fetch stall, the scoring process's first batches)
        "steady_event_to_score_ms": _steady_percentiles(rows[:, 1], e2e, ready_at + STEADY_AFTER_S),
        "decision_ms": _percentiles(list(rows[:, 2])),
        "event_to_score_ms_over_time": _timeline(rows[:, 1], e2e) if len(rows) else [],
        "cpu_calibration": {"before": speed_before, "after": cpu_calibration()},
        "wall_clock_jumps": [{"at": at, "seconds": leap} for at, leap in clock.jumps],
        "consumer_lag": lag.summary(),  # committed lag of the input topic, sampled every second
        **usage,
        "worker_cpu_us_per_txn": round(
            sum(u.get("cpu_s", 0.0) for u in usage["workers"]) / max(1, len(txn_ids)) * 1e6, 1
        ),
        "stage_seconds": (
            stage_seconds := [json.loads(m.group(1)) for log in logs for m in STAGES.finditer(log)]
        ),
        "predict_us_per_row": predict_us_per_row(stage_seconds),
        # per micro-batch: ms spent reaching each step from the previous one (app/worker/batch_trace.py)
        "batch_stages_ms": stages,
        "batch_stages_ms_over_time": stages_over_time,
        "micro": micro_bench(model, batches=(1, 10, 100, 500, 2_000)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def predict_us_per_row(stage_seconds: Sequence[dict[str, Any]]) -> float | None:
    """The scoring process's XGBoost predict, µs per row over the run: the host's speed under the run's
    own load. The work is the same in every paced run at one rate (the bench's model, ~45-row batches),
    yet it took 26-27 µs in session 27's fast phase (p99 22-26 ms) and 43-91 µs otherwise (p99 43-123
    ms); the idle calibration before a run read 4.2-4.6 ms in both (session 30)."""
    rows = sum(s.get("rows", 0) for s in stage_seconds)
    return round(sum(s.get("predict", 0.0) for s in stage_seconds) / rows * 1e6, 1) if rows else None


def _keep_logs(workdir: Path, workers: int, out: Path) -> list[str]:
    """The workers' logs and their batch traces (JSON lines, one batch's stamps each), copied beside
    the results."""
    logs = [(workdir / f"worker-{i}.log").read_text() for i in range(workers)]
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(logs):
        (out.parent / f"{out.stem}-worker-{i}.log").write_text(text)
    for i, trace in enumerate(sorted((workdir / "batches").glob("batches-*.jsonl"))):
        shutil.copyfile(trace, out.parent / f"{out.stem}-batches-{i}.jsonl")
    return logs


TIMELINE_S = 5.0  # event->score latency per window of produce time: a queue at the start vs. a standing one


def _timeline(produced: np.ndarray, e2e: np.ndarray) -> list[dict[str, float]]:
    """p50/p99 event->score (ms) of the transactions produced in each TIMELINE_S window of the run."""
    window = ((produced - produced.min()) // TIMELINE_S).astype(int)
    return [
        {"from_s": w * TIMELINE_S, "n": int((window == w).sum()),
         "p50": round(float(np.percentile(e2e[window == w], 50)), 1),
         "p99": round(float(np.percentile(e2e[window == w], 99)), 1)}
        for w in np.unique(window)
    ]  # fmt: skip


def _steady_rate(stamps: np.ndarray, start: float) -> float | None:
    """Score events per second stamped from ``start`` until the last one (None: under 5 s of it)."""
    late = stamps[stamps >= start]
    if len(late) < 2 or late.max() - start < 5:
        return None
    return round(float(len(late) / (late.max() - start)), 1)


def _steady_percentiles(produced: np.ndarray, e2e: np.ndarray, start: float) -> dict[str, float] | None:
    """Event->score percentiles of the transactions produced from ``start`` (None: fewer than 1,000)."""
    late = e2e[produced >= start]
    return _percentiles(list(late)) | {"n": len(late)} if len(late) >= 1_000 else None


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the worker, its scoring process and its feature writer)."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    except psutil.NoSuchProcess:
        pass
    return total


class RunUsage:
    """CPU and memory of a run, from its creation (as the first transaction is sent) to ``finish``."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.workers = [_cpu_seconds(pid) for pid in self.pids]
        self.since = time.time()  # processes created after this ran wholly within the run
        self.roles = cpu_by_process(self.pids)
        self.machine = psutil.cpu_times()
        self.started = time.monotonic()

    def finish(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            # each worker process with its children (scoring, feature writer)
            "workers": [_usage(pid, cpu, elapsed) for pid, cpu in zip(self.pids, self.workers, strict=True)],
            # all cores together (100 = every core busy), the run's span
            "machine_cpu_percent": _busy_share(self.machine, now := psutil.cpu_times()),
            # of all cores' time, what the hypervisor gave to others while this VM wanted to run (in
            # the busy share above); its 0.5 s windows went with the slowest batches (session 21)
            "machine_steal_percent": _steal_share(self.machine, now),
            # % of one core by role: who shares the machine with the pipeline, and how much
            "cpu_by_process_percent": _role_percent(
                self.roles, cpu_by_process(self.pids), elapsed, since=self.since
            ),
        }


def cpu_by_process(workers: Sequence[int]) -> dict[int, tuple[str, float, float]]:
    """CPU seconds so far of every process that shares the machine with the pipeline, with its role
    and creation time: ``worker`` (the stream process), its children by name (``fs-scoring``,
    ``fs-features``), ``kafka`` (the broker), ``postgresql`` (every server process) and ``bench``
    (this process: the load generator and the samplers)."""
    seen: dict[int, tuple[str, float, float]] = {}

    def add(p: psutil.Process, role: str) -> None:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            seen[p.pid] = (role, t.user + t.system, p.create_time())

    for pid in workers:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            add(proc, "worker")
            for child in proc.children(recursive=True):
                name = child.name()
                add(child, name if name.startswith("fs-") else "worker child")
    for p in psutil.process_iter(["name", "cmdline"]):
        if (p.info["name"] or "").startswith("postgres"):
            add(p, "postgresql")
        elif "kafka.Kafka" in (p.info["cmdline"] or ()):
            add(p, "kafka")
    add(psutil.Process(), "bench")
    return seen


def _role_percent(
    before: dict[int, tuple[str, float, float]], after: dict[int, tuple[str, float, float]], elapsed: float,
    since: float,
) -> dict[str, float]:  # fmt: skip
    """% of one core by role: the processes present at both readings, and those created after
    ``since`` (all their CPU is the run's: e.g. the PostgreSQL backend of a connection opened at
    the first online write). A process that exited in between is not counted."""
    busy: dict[str, float] = {}
    for pid, (role, cpu, created) in after.items():
        first = before.get(pid)
        if first is not None and first[2] == created:
            busy[role] = busy.get(role, 0.0) + cpu - first[1]
        elif created >= since:
            busy[role] = busy.get(role, 0.0) + cpu
    return {role: round(100 * s / elapsed, 1) for role, s in sorted(busy.items(), key=lambda kv: -kv[1])}


def _usage(pid: int, before: float, elapsed: float) -> dict[str, float]:
    try:
        rss = psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return {}
    busy = _cpu_seconds(pid) - before
    return {
        "cpu_percent": round(100 * busy / elapsed, 1),
        "cpu_s": round(busy, 2),
        "rss_mb": round(rss / 2**20, 1),
    }


def _steal_share(before: Any, after: Any) -> float:
    """Share of all cores' time stolen by the hypervisor between two ``psutil.cpu_times()`` readings, in %."""
    total = sum(after) - sum(before)
    stolen = getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
    return round(100 * stolen / total, 1) if total > 0 else 0.0


def _busy_share(before: Any, after: Any) -> float:
    """Share of all cores' time spent busy between two ``psutil.cpu_times()`` readings, in %."""
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    total = sum(after) - sum(before)
    return round(100 * (1 - idle / total), 1) if total > 0 else 0.0
