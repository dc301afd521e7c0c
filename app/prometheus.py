"""Prometheus ``/metrics`` for a process (the worker's counters, the UI's queue), from a daemon thread."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("fraudstream")


def serve(collector: Collector, host: str, port: int, who: str) -> bool:
    """Serve ``collector`` at ``host:port/metrics``; False, with a warning, when the port cannot be had
    (a second process of the same kind on the host, say): the process goes on without."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("%s: no /metrics: %s:%d: %s", who, host, port, exc.strerror or exc)
        return False
    return True
