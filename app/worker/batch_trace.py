"""Where a micro-batch's latency goes: wall-clock stamps at each step of the card agent's batch.

Event -> score latency is a sum of waits in different places (Kafka and the fetch, the batch
window, the features, the queue before the scoring stage, the scoring process, the send), and the
stage timers only say how busy each place is, not how long a transaction waited there. With
``FRAUDSTREAM_BATCH_TRACE_DIR`` set, the worker stamps every batch at each step and writes the
stamps as JSON lines (``batches-<pid>.jsonl``) when it stops; ``fraudstream bench`` sets it and
reports the time between consecutive steps (``batch_stages_ms``). Stamps are ``time.time()``, the
clock of the Kafka timestamps they are compared with; the first, ``produced``, is the produce
time of the batch's oldest message, so each batch counts for its worst-off transaction.

Off by default; when on it costs a few clock reads a batch and at most ``limit`` small dicts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

# in order: what each stamp marks (the interval up to it is named after it)
STEPS = (
    "produced",  # the oldest message's produce (Kafka) timestamp
    "fetched",  # its fetched batch was handed to the card agent's queue (app/worker/batches.py)
    "taken",  # the agent took it into a micro-batch (the batch window is over)
    "features",  # card features computed, states updated in memory
    "queued",  # handed to the feature writer, and accepted by the scoring stage's queue
    "scoring",  # the scoring stage began on it (the previous batch was done)
    "scored",  # the scoring process answered with the score events (it persists the decisions next)
    "sent",  # score events, dead letters and card states queued with the producer
    "acked",  # Kafka acknowledged all of them
)

Stamps = dict[str, float]


class BatchTrace:
    """Per-batch stamps, kept in memory (at most ``limit`` batches) and written once at the end."""

    def __init__(self, folder: Path | None, limit: int = 100_000) -> None:  # ~60 MB at most
        self.folder = folder
        self.limit = limit
        self.batches: list[Stamps] = []

    @property
    def on(self) -> bool:
        return self.folder is not None

    def start(self, produced: Iterable[float | None], fetched_monotonic: float, size: int) -> Stamps | None:
        """A new batch of ``size`` messages, taken now; ``fetched_monotonic``: when its oldest
        fetched list was queued (``time.monotonic()``). None when off, or when full."""
        if self.folder is None or len(self.batches) >= self.limit:
            return None
        now, mono = time.time(), time.monotonic()
        stamps: Stamps = {"n": size, "taken": now, "fetched": now - (mono - fetched_monotonic)}
        oldest = min((p for p in produced if p), default=None)
        if oldest is not None:
            stamps["produced"] = oldest
        self.batches.append(stamps)
        return stamps

    def write(self) -> Path | None:
        """Write the stamps (JSON lines) into the folder; returns the file, None when off."""
        if self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"batches-{os.getpid()}.jsonl"
        with path.open("w") as f:
            f.writelines(json.dumps(b) + "\n" for b in self.batches)
        return path


def mark(stamps: Stamps | None, step: str) -> None:
    if stamps is not None:
        stamps[step] = time.time()


def read(folder: Path) -> list[Stamps]:
    out: list[Stamps] = []
    for path in sorted(folder.glob("batches-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


def _finished(batches: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The batches stamped at every step (those the worker stopped without are left out)."""
    return [b for b in batches if all(step in b for step in STEPS)]


def stage_latencies(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Milliseconds spent before each step, from the previous one, over the batches that reached
    the end (p50/p90/p99/max); ``produced_to_sent`` is the oldest message's produce -> its score
    event queued, what the bench's event -> score latency is made of."""
    done = _finished(batches)
    if not done:
        return {"batches": 0}
    result: dict[str, Any] = {
        "batches": len(done),
        "messages_per_batch": round(float(np.mean([b["n"] for b in done])), 1),
    }
    spans = {last: (first, last) for first, last in pairwise(STEPS)}
    spans["produced_to_sent"] = ("produced", "sent")
    for name, (first, last) in spans.items():
        ms = np.array([(b[last] - b[first]) * 1000 for b in done])
        result[name] = {
            **{f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)},
            "max": round(float(ms.max()), 1),
        }
    return result


def stages_over_time(batches: Sequence[Mapping[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """``stage_latencies``' p50/p99 per step for the batches whose oldest message was produced in
    each ``window_s`` of the run: a start-up transient shows in which step it is spent."""
    done = _finished(batches)
    if not done:
        return []
    start = min(b["produced"] for b in done)
    windows: dict[int, list[Mapping[str, Any]]] = {}
    for b in done:
        windows.setdefault(int((b["produced"] - start) // window_s), []).append(b)
    out = []
    for w, group in sorted(windows.items()):
        spent = stage_latencies(group)
        steps = {step: [spent[step]["p50"], spent[step]["p99"]] for step in STEPS[1:]}
        out.append({"from_s": w * window_s, "batches": len(group), **steps})
    return out
