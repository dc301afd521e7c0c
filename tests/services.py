"""Session helpers for tests that need the real local Kafka and PostgreSQL (scripts/services)."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.pg import scratch_database
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def ensure_services_up() -> None:
    """Start (or find running) the local services through the project's own script."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), "up"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/services up failed: {result.stderr.strip() or result.stdout.strip()}")


def unique(prefix: str) -> str:
    """A name no other test run uses (topics, consumer groups, tables)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings pointing at the real local services, started through scripts/services."""
    ensure_services_up()
    return Settings()


@contextmanager
def fresh_database(settings: Settings, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the local server (dropped afterwards); yields its name."""
    with scratch_database(settings, unique(prefix).replace("-", "_")) as db:
        yield db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """A worker's /metrics (``FRAUDSTREAM_METRICS_PORT``) as Prometheus parses it: sample name -> value
    (a histogram's buckets by their bound, as ``NAME_bucket{le}``; a partition's gauge as
    ``NAME{partition}``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name + "".join(f"{{{value}}}" for value in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
