"""``fraudstream bench``: measured numbers, written as JSON (never a pass/fail test).

Suite ``features`` (issue #4): the card-feature service alone (in process), the card fold alone
(compiled and source, session 17), Feast online write and read latency, and the CPU of the worker's
own online writer. The worker end to end (Kafka, features,
scoring, every sink) is the pipeline suite, ``app.bench_pipeline``: ``--rate 0`` drains a
pre-filled topic. (The feature agent alone no longer exists: since the worker scores every
transaction it holds each batch until a champion model exists, and this suite trains none.)
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.schema import TRANSACTION_FIELDS, encode
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.worker.card_features import Raw, decode, process_batch, to_txn
from features import card as fold_source
from features import fold
from features.backfill import card_feature_frame
from features.card import FEATURE_NAMES
from features.online_write import OnlineWriter
from features.store import CARD_VIEW, feature_store


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def cpu_calibration(chunks: int = 100) -> dict[str, float]:
    """CPU milliseconds of a fixed pure-Python workload, ``chunks`` times (~1 s): how fast this
    machine's cores run now. On the shared 2-core VM the same bench run cost 1,010-1,130 µs of CPU per
    transaction in one hour and 1,710-1,890 in the next (session 10), and the workload itself takes
    either ~5.5 or ~11 ms a chunk (a core at half speed much of the time): compare runs whose median
    is alike."""
    times = []
    for _ in range(chunks):
        started = time.process_time()
        table: dict[int, int] = {}
        for i in range(40_000):
            table[i & 1023] = table.get(i & 1023, 0) + i * i
        times.append((time.process_time() - started) * 1000)
    return {"min_ms": round(min(times), 2), "median_ms": round(float(np.median(times)), 2)}


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {f"p{p}": round(float(np.percentile(arr, p)), 3) for p in (50, 95, 99)} | {
        "max": round(float(arr.max()), 3)
    }


def simulated_raws(config: SimConfig) -> list[Raw]:
    """A simulated history as the worker reads it: JSON messages keyed by card, in event order."""
    return [
        Raw(r["card_id"].encode(), encode(r))
        for r in simulate(config)[list(TRANSACTION_FIELDS)].to_dict("records")
    ]


def bench_feature_service(raws: list[Raw], batch_size: int) -> dict[str, Any]:
    table: dict[bytes, bytes | None] = {}
    started = time.perf_counter()
    for i in range(0, len(raws), batch_size):
        table.update(process_batch(raws[i : i + batch_size], table, lateness_s=300).states)
    seconds = time.perf_counter() - started
    return {
        "events": len(raws),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(raws) / seconds),
        "what": "decode + validate + features + state (de)serialisation, one process, no Kafka",
    }


def bench_fold(raws: list[Raw], lateness_s: float, rounds: int = 3) -> dict[str, Any]:
    """The card fold alone, µs an event for ``card_features``, ``update`` and the state's ``to_bytes``,
    over a simulated history in event order: the fold the worker runs (features/fold.py) and, when
    that is the compiled build, the Python source as well, in turns (this host's speed drifts), best
    of ``rounds``. Validation and decoding happen before the clock starts."""
    events = fold_events(raws)
    builds = {"python": fold_source} | ({fold.KIND: fold.FOLD} if fold.KIND != "python" else {})
    best = {name: [math.inf] * 3 for name in builds}
    for _ in range(rounds):
        for name, module in builds.items():
            once = _fold_once(module, events, lateness_s)
            best[name] = [min(a, b) for a, b in zip(best[name], once, strict=True)]
    per_event = {
        name: {
            "card_features_us": round(f / len(events) * 1e6, 2),
            "update_us": round(u / len(events) * 1e6, 2),
            "to_bytes_us": round(e / len(events) * 1e6, 2),
            "total_us": round((f + u + e) / len(events) * 1e6, 2),
        }
        for name, (f, u, e) in best.items()
    }
    return {"events": len(events), "rounds": rounds, "worker_runs": fold.KIND, "per_event": per_event}


def fold_events(raws: list[Raw]) -> list[tuple[str, tuple[Any, ...]]]:
    """(card id, ``Txn`` fields) of each valid message, decoded and validated as the worker does."""
    events = []
    for raw in raws:
        txn = decode(raw)
        if not isinstance(txn, str):
            events.append((txn.card_id, tuple(to_txn(txn))))
    return events


def _fold_once(module: Any, events: list[tuple[str, tuple[Any, ...]]], lateness_s: float) -> list[float]:
    """Seconds spent in ``card_features``, ``update`` and ``to_bytes`` over one pass of ``events``."""
    states: dict[str, Any] = {}
    clock = time.perf_counter
    features = updating = encoding = 0.0
    for card, fields in events:
        state = states.get(card)
        if state is None:
            state = states[card] = module.CardState()
        txn = module.Txn(*fields)
        t0 = clock()
        module.card_features(state, txn)
        t1 = clock()
        module.update(state, txn, lateness_s)
        t2 = clock()
        state.to_bytes()
        t3 = clock()
        features, updating, encoding = features + t1 - t0, updating + t2 - t1, encoding + t3 - t2
    return [features, updating, encoding]


def bench_feast(settings: Settings, config: SimConfig) -> dict[str, Any]:
    store = feature_store(settings)
    features = card_feature_frame(simulate(config))
    latest = features.drop_duplicates("card_id", keep="last").drop(columns=["txn_id"])
    writes = []
    for lo in range(0, min(len(latest), 2_000), 100):
        started = time.perf_counter()
        store.write_to_online_store(CARD_VIEW, latest.iloc[lo : lo + 100])
        writes.append((time.perf_counter() - started) * 1000)
    bulk = bench_online_writer(store, latest.iloc[:2_000].to_dict("records"))
    refs = [f"{CARD_VIEW}:{n}" for n in FEATURE_NAMES]
    card = latest["card_id"].iloc[0]
    reads = []
    for i in range(520):
        started = time.perf_counter()
        store.get_online_features(features=refs, entity_rows=[{"card_id": card}]).to_dict()
        if i >= 20:  # warm-up
            reads.append((time.perf_counter() - started) * 1000)
    return {
        "online_store": settings.feast_config,
        "write_100_rows_ms": _percentiles(writes),
        "worker_online_writer_100_cards_cpu_ms": bulk,
        "read_one_card_ms": _percentiles(reads) | {"reads": len(reads), "features": len(refs)},
    }


def bench_online_writer(store: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU of the worker's own online write (``OnlineWriter``) per 100 cards, twice over cards already
    in the table (Feast's own write above stored them): one upsert of one row per card."""
    writer = OnlineWriter(store, CARD_VIEW, "card_id", FEATURE_NAMES)
    ms = []
    for _ in range(2):
        for lo in range(0, len(rows), 100):
            started = time.process_time()
            writer.write(rows[lo : lo + 100])
            ms.append((time.process_time() - started) * 1000)
    return _percentiles(ms) | {"cards": len(rows), "writes": len(ms)}


def run_features_bench(settings: Settings, out: Path, customers: int, days: int) -> dict[str, Any]:
    raws = simulated_raws(SimConfig(customers=customers, merchants=2 * customers, days=days, seed=1))
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        feast_settings = Settings(feast_dir=Path(tmp) / "feast", feature_log_dir=Path(tmp) / "log")
        result = {
            "suite": "features",
            "machine": machine(),
            "settings": {"customers": customers, "days": days, "lateness_s": settings.lateness_s},
            "feature_service": bench_feature_service(raws, settings.batch_size),
            "card_fold": bench_fold(raws, settings.lateness_s),
            "feast": bench_feast(feast_settings, SimConfig(customers=2_000, merchants=4_000, days=2, seed=2)),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result
