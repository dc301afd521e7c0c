"""``fraudstream bench --suite pipeline``: the real pipeline end to end, and the model's own costs.

A champion is registered in a private PostgreSQL database (trained on a simulated history, or
``--model DIR`` from an earlier training run); worker processes consume a private topic; the
bench replays simulated traffic into it at ``--rate`` (0 = as fast as the producer can) for
``--duration`` seconds and reads every ``fraud-scores`` event back. ``--rate 0`` measures saturation
without the bench's own producer competing for the CPU: the input is all in Kafka before the
workers start, and throughput is how fast they drain it. Reported:

- ``event_to_score_ms``: the transaction's produce timestamp -> the score event's timestamp (both
  stamped by Kafka clients on this machine), p50/p95/p99/max;
- ``decision_ms``: produce timestamp -> decision made (the event's own ``latency_ms``);
- throughput (scored events / s between the first and last score), the consumer group's lag on the
  input topic (sampled every second: max and last), CPU and memory of the workers, per-stage
  seconds from the workers' in-process timers;
- micro-benchmarks: predict and exact TreeSHAP µs/row by batch size (``--device`` cpu or cuda).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

from app.bench import _percentiles, machine
from app.history import read_history, write_history
from app.model_bench import micro_bench
from app.pg import scratch_database
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.worker.process import isolated_env, running_worker, settings_for

STAGES = re.compile(r"worker: stage times (\{.*\})")


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


class ScoreReader(threading.Thread):
    """Reads fraud-scores from the beginning; keeps (score event timestamp, txn produce time, latency)."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True, name="score-reader")
        from kafka import KafkaConsumer  # noqa: PLC0415

        self.consumer = KafkaConsumer(
            s.topic_scores, bootstrap_servers=s.kafka_servers, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=20, **s.kafka_security(),
        )  # fmt: skip
        self.rows: list[tuple[float, float, float]] = []
        self.txn_ids: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                for r in records:
                    event = orjson.loads(r.value)
                    self.txn_ids.add(event["txn_id"])
                    scored = _epoch(event["scored_at"])
                    produced = scored - event["latency_ms"] / 1000
                    self.rows.append((r.timestamp / 1000, produced, event["latency_ms"]))
        self.consumer.close()


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
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                ends = self.consumer.end_offsets(self.tps)
                behind = [end - (self.consumer.committed(tp) or 0) for tp, end in ends.items()]
            except Exception:  # noqa: S112 - a missed sample is not a failed bench
                continue
            self.samples.append(sum(max(0, b) for b in behind))
        self.consumer.close(autocommit=False)

    def summary(self) -> dict[str, int | None]:
        return {
            "max": max(self.samples, default=None),
            "end": self.samples[-1] if self.samples else None,
            "samples": len(self.samples),
        }


def _epoch(iso: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(iso).timestamp()


def run_pipeline_bench(
    settings: Settings, out: Path, *, rate: float, duration_s: float, workers: int = 1,
    model_dir: Path | None = None, customers: int = 2_000, warm_s: float = 5.0,
) -> dict[str, Any]:  # fmt: skip
    from app.kafka_admin import ensure_topics  # noqa: PLC0415
    from app.scoring.model import Model  # noqa: PLC0415
    from app.simulator.producer import KafkaSink, Pacer, produce  # noqa: PLC0415
    from training.registry import Registry  # noqa: PLC0415

    name = f"bench_{int(time.time())}"
    with (
        tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp,
        scratch_database(settings, name) as db,
    ):
        workdir = Path(tmp)
        env = {**isolated_env(name.replace("_", "-"), workdir), "FRAUDSTREAM_PG_DB": db,
               "FRAUDSTREAM_MODELS_DIR": str(workdir / "models")}  # fmt: skip
        s = settings_for(env)
        history_dir = prepare_champion(s, workdir, model_dir, customers)
        champion = Registry(s.pg_conninfo(reveal=True)).champion()
        assert champion is not None
        model = Model.load(Path(champion.artefact_dir), champion.version)
        ensure_topics(s)
        history = read_history(history_dir)
        traffic = history[history["event_time"] >= history["event_time"].max() - timedelta(days=14)]
        reader = ScoreReader(s)
        reader.start()
        lag = LagSampler(s)
        backlog = rate == 0  # saturation: the input is all in Kafka before the workers start
        sink = KafkaSink(s.kafka_servers, **s.kafka_security())

        def send() -> int:
            summary = produce([traffic], sink, topic=s.topic_transactions, feedback_topic="unused",
                              pacer=Pacer(rate), labels=False, duration_s=duration_s)  # fmt: skip
            sink.close()
            return summary.transactions

        sent = send() if backlog else 0
        with ExitStack() as stack:
            procs = [
                stack.enter_context(running_worker(workdir / f"worker-{i}.log", env)) for i in range(workers)
            ]
            cpu_before = [psutil.Process(p.pid).cpu_times() for p in procs]
            started = time.monotonic()
            lag.start()
            if not backlog:
                time.sleep(warm_s)  # group joined, partitions assigned
                sent = send()
            deadline = time.monotonic() + 300
            while len(reader.txn_ids) < sent and time.monotonic() < deadline:
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            usage = [_usage(p.pid, before, elapsed) for p, before in zip(procs, cpu_before, strict=True)]
        for thread in (reader, lag):
            thread.stop.set()
            thread.join(timeout=10)
        logs = [(workdir / f"worker-{i}.log").read_text() for i in range(workers)]
        out.parent.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(logs):  # kept beside the results
            (out.parent / f"{out.stem}-worker-{i}.log").write_text(text)
    rows = np.array(reader.rows)
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
        },
        "model": {"version": model.version, **model.shape(), "features": len(model.features)},
        "sent": sent,
        "scored": len(reader.txn_ids),
        "score_events": len(rows),
        "lost": sent - len(reader.txn_ids),
        "missing_txn_ids": sorted(set(traffic["txn_id"].iloc[:sent]) - reader.txn_ids)[:100],
        "scored_per_s": round(len(rows) / span, 1) if span > 0 else None,
        "event_to_score_ms": _percentiles(list(e2e)),
        "decision_ms": _percentiles(list(rows[:, 2])),
        "consumer_lag": lag.summary(),  # committed lag of the input topic, sampled every second
        "workers": usage,
        "stage_seconds": [json.loads(m.group(1)) for log in logs for m in STAGES.finditer(log)],
        "micro": micro_bench(model, batches=(1, 10, 100, 500, 2_000)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _usage(pid: int, before: Any, elapsed: float) -> dict[str, float]:
    try:
        proc = psutil.Process(pid)
        now = proc.cpu_times()
        rss = proc.memory_info().rss
    except psutil.NoSuchProcess:
        return {}
    busy = (now.user - before.user) + (now.system - before.system)
    return {"cpu_percent": round(100 * busy / elapsed, 1), "rss_mb": round(rss / 2**20, 1)}
