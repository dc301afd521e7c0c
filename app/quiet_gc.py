"""Shorter, rarer pauses of Python's garbage collector in a long-running process that has built its
big, long-lived objects (call it once they are built).

A full collection scans every tracked object. In the worker such collections paused the event loop
for 158-264 ms, 4 times in 30 s at 1,000 txn/s paced (session 8): those were the p99 outliers. In
the bench's traffic source they paused the sending for 273-376 ms (session 9). The messages went
out late, then all at once, and the pipeline's p99 measured the bench. ``quiet_gc`` freezes what
exists now, so the imports, the app, its clients and the bench's encoded messages are never scanned
again. It then sets a young generation of 10,000 objects, with full collections 20 x 100 young ones
apart, which makes them rare. A full collection over 50 ms is logged, so a long pause in the latency
figures can be matched to one.

The worker's two children call it too, once built (session 10): the scoring process's full
collections held a batch for ~150 ms, the feature writer's took 120-180 ms of a shared core.
"""

from __future__ import annotations

import gc
import logging
import time

GC_THRESHOLDS = (10_000, 20, 100)
GC_SLOW_S = 0.05


def quiet_gc(log: logging.Logger, who: str) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    started: list[float] = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2 and (paused := time.perf_counter() - started[0]) > GC_SLOW_S:
            log.warning("%s: a full garbage collection paused the %s for %.0f ms", who, who, paused * 1000)

    gc.callbacks.append(timed)
