"""The worker's /metrics (``app.worker.metrics``): the latency histogram and what a scrape reads."""

from __future__ import annotations

import socket

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from app.worker.faust_app import Counters
from app.worker.metrics import LatencyHistogram, WorkerCollector, serve_metrics


def test_latencies_land_in_prometheus_buckets_at_or_below_their_bound() -> None:
    h = LatencyHistogram()
    h.observe([0.001, 0.005, 0.03, 0.03, 20.0])
    cumulative = dict(h.cumulative())
    assert (cumulative["0.005"], cumulative["0.01"], cumulative["0.05"], cumulative["10.0"]) == (2, 2, 4, 4)
    assert cumulative["+Inf"] == 5
    assert (h.n, round(h.total_s, 3)) == (5, 20.066)


def test_a_scrape_reads_the_counters_as_they_are_then() -> None:
    counters = Counters(processed=7, scored=6, flagged=1, dead=2, late=1, batches=3)  # the worker's own
    registry = CollectorRegistry()
    registry.register(WorkerCollector(counters, waiting=lambda: 42))
    counters.latency.observe([0.02])
    text = generate_latest(registry).decode()
    for line in (
        "fraudstream_transactions_processed_total 7.0", "fraudstream_decisions_total 6.0",
        "fraudstream_decisions_flagged_total 1.0", "fraudstream_dead_letters_total 2.0",
        "fraudstream_source_messages_waiting 42.0", "fraudstream_event_to_score_seconds_count 1.0",
        'fraudstream_event_to_score_seconds_bucket{le="0.025"} 1.0',
    ):  # fmt: skip
        assert line in text.splitlines(), line
    counters.processed += 5
    counters.lag = {3: 0, 1: 250}  # the worker replaces it each second
    counters.stage_s.update(features=0.5, score_explain=1.25)
    text = generate_latest(registry).decode()
    assert "fraudstream_transactions_processed_total 12.0" in text
    lags = [line for line in text.splitlines() if line.startswith("fraudstream_consumer_lag_messages{")]
    assert lags == [
        'fraudstream_consumer_lag_messages{partition="1"} 250.0',
        'fraudstream_consumer_lag_messages{partition="3"} 0.0',
    ]
    assert 'fraudstream_stage_seconds_total{stage="features"} 0.5' in text.splitlines()
    assert 'fraudstream_stage_seconds_total{stage="score_explain"} 1.25' in text.splitlines()


def test_a_port_in_use_leaves_the_worker_without_metrics_not_down() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_metrics(Counters(), "127.0.0.1", port, waiting=lambda: 0) is False
