"""The worker's Prometheus metrics (``FRAUDSTREAM_METRICS_PORT``): its counters, read when scraped.

A scrape reads the ``Counters`` the worker keeps for its log line (plain ints, set on the event loop;
read from the HTTP server's thread). The worker's two children (scoring, feature writer) report
through these counters: a decision is counted when its batch's score events are sent. What the hot
path does for them alone: the latency histogram's buckets (~0.2 µs a transaction), two clock reads
around each batch's card fold, the scoring process's three stage timers riding on the answers it
sends anyway, and once a second the lag per partition (replaced whole, so a scrape never sees it
half-written; a timer of its own, only with a metrics port: while partitions recover it asks Kafka
for their end offsets).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from app.prometheus import serve

# seconds; the last bucket (+Inf) is implicit
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LatencyHistogram:
    """Event -> score latencies (the transaction's produce time -> its score event handed to the
    producer), counted per bucket: a few microseconds a batch, on the event loop."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total_s: float = 0.0
    n: int = 0

    def observe(self, seconds: Iterable[float]) -> None:
        for s in seconds:
            self.counts[bisect_left(LATENCY_BUCKETS, s)] += 1
            self.total_s += s
            self.n += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (upper bound, observations at or below it), +Inf last."""
        out, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


COUNTERS = (
    ("processed", "transactions_processed", "Transactions read, featurised and written to the feature store"),
    ("scored", "decisions", "Decisions scored and sent to the fraud-scores topic"),
    ("flagged", "decisions_flagged", "Decisions at or above the review threshold, or declined by a rule"),
    ("explored", "declines_let_through", "Would-be declines let through to measure them (EXPLORE_RATE)"),
    ("dead", "dead_letters", "Messages sent to the dead-letter topic (unparsable, invalid, or late)"),
    ("late", "late_transactions", "Transactions older than the lateness window (dead letters too)"),
    (
        "duplicates",
        "duplicate_transactions",
        "Transactions seen before (a replayed batch), not counted twice",
    ),
    ("batches", "batches", "Micro-batches processed"),
)


class WorkerCollector(Collector):
    def __init__(self, counters: Any, waiting: Callable[[], int]) -> None:
        self.counters, self.waiting = counters, waiting

    def collect(self) -> Iterator[Any]:
        for attr, name, text in COUNTERS:
            yield CounterMetricFamily(f"fraudstream_{name}", text, value=getattr(self.counters, attr))
        yield GaugeMetricFamily(
            "fraudstream_source_messages_waiting", "Fetched transactions waiting for the card agent",
            value=self.waiting(),
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "fraudstream_consumer_lag_messages",
            "Messages in a source partition this worker has not finished (its highwater minus the offset "
            "it would commit), each second; a partition still recovering counts from the committed offset",
            labels=["partition"],
        )
        for partition, behind in sorted(self.counters.lag.items()):
            lag.add_metric([str(partition)], behind)
        yield lag
        stages = CounterMetricFamily(
            "fraudstream_stage_seconds",
            "Seconds spent per pipeline stage, summed: features (the card fold, event loop), merchant_read"
            " and score_explain (predict + SHAP + decision) and persist (decisions and alerts to PostgreSQL)"
            " in the scoring process, deliver (waiting for Kafka's acknowledgements)",
            labels=["stage"],
        )
        for stage, seconds in sorted(self.counters.stage_s.items()):
            stages.add_metric([stage], seconds)
        yield stages
        latency = self.counters.latency
        yield HistogramMetricFamily(
            "fraudstream_event_to_score_seconds",
            "A transaction's produce time -> its score event handed to the producer",
            buckets=latency.cumulative(), sum_value=latency.total_s,
        )  # fmt: skip


def serve_metrics(counters: Any, host: str, port: int, waiting: Callable[[], int]) -> bool:
    """The worker's ``/metrics`` (``app.prometheus.serve``): False, with a warning, without its port."""
    return serve(WorkerCollector(counters, waiting), host, port, "worker")
