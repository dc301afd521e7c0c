"""The worker's Prometheus metrics (``FRAUDSTREAM_METRICS_PORT``): its counters, read when scraped.

Nothing is added to the hot path: a scrape reads the ``Counters`` the worker keeps for its log line
(plain ints, set on the event loop; read from the HTTP server's thread). The worker's two children
(scoring, feature writer) report through these counters: a decision is counted when its batch's
score events are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

COUNTERS = (
    ("processed", "transactions_processed", "Transactions read, featurised and written to the feature store"),
    ("scored", "decisions", "Decisions scored and sent to the fraud-scores topic"),
    ("flagged", "decisions_flagged", "Decisions at or above the review threshold, or declined by a rule"),
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
        for field, name, text in COUNTERS:
            yield CounterMetricFamily(f"fraudstream_{name}", text, value=getattr(self.counters, field))
        yield GaugeMetricFamily(
            "fraudstream_source_messages_waiting", "Fetched transactions waiting for the card agent",
            value=self.waiting(),
        )  # fmt: skip


def serve_metrics(counters: Any, host: str, port: int, waiting: Callable[[], int]) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(counters, waiting))
    start_http_server(port, addr=host, registry=registry)
