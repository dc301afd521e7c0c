"""The analyst UI's Prometheus metrics (``FRAUDSTREAM_UI_METRICS_PORT``): the queue's health, asked of
PostgreSQL when scraped (``UiStore.queue_health``), so that the fraud team's lead is paged when alerts
wait too long, not when someone opens the queue page."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.errors import first_line
from app.ui.store import UiStore

log = logging.getLogger("fraudstream.ui")

GAUGES = (
    ("open", "fraudstream_alerts_open", "Open alerts"),
    ("held", "fraudstream_alerts_held", "Open alerts an analyst holds"),
    ("late", "fraudstream_alerts_waiting_beyond_target",
     "Open alerts older than FRAUDSTREAM_UI_ALERT_TARGET_S"),
    ("closed", "fraudstream_alerts_closed_24h", "Alerts the analysts closed in the last 24 h"),
    ("fraud", "fraudstream_alerts_closed_fraud_24h", "Alerts the analysts closed as fraud in the last 24 h"),
    ("by_chargeback", "fraudstream_alerts_settled_by_chargeback_24h",
     "Open alerts a chargeback settled in the last 24 h (nobody had worked them)"),
    ("closed_late", "fraudstream_alerts_closed_beyond_target_24h",
     "Alerts closed in the last 24 h later than FRAUDSTREAM_UI_ALERT_TARGET_S after they were raised"),
)  # fmt: skip


class QueueCollector(Collector):
    def __init__(self, store: UiStore, target: timedelta) -> None:
        self.store, self.target = store, target

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("fraudstream_alerts_up", "1 when the queue's figures could be read, else 0")
        try:
            health = self.store.queue_health(self.target)
        except Exception as exc:  # a scrape reports the database down, it does not fail
            log.warning("ui: /metrics: the queue could not be read: %s", first_line(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for key, name, text in GAUGES:
            yield GaugeMetricFamily(name, text, value=health[key])
        oldest = health["oldest"]
        age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        yield GaugeMetricFamily(
            "fraudstream_alerts_oldest_open_age_seconds",
            "How long the oldest open alert has waited (0: none)", value=age,
        )  # fmt: skip
        for key, name in (("median_to_verdict_s", "median"), ("p90_to_verdict_s", "p90")):
            if health[key] is not None:
                yield GaugeMetricFamily(
                    f"fraudstream_alerts_{name}_to_verdict_seconds",
                    f"Alert raised -> verdict, {name} over the alerts closed in the last 24 h",
                    value=health[key],
                )
