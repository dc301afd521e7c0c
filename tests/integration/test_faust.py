"""A minimal Faust agent (with a changelogged table) runs against the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from app.settings import Settings
from tests.kafka_helpers import create_topics, drain, produce_json
from tests.services import ROOT, unique


def test_faust_agent_consumes_and_produces(settings: Settings, tmp_path: Path) -> None:
    source, sink, app_id = unique("it-faust-in"), unique("it-faust-out"), unique("it-faust-app")
    create_topics(settings.kafka_servers, [source, sink], partitions=4)
    sent = [(f"card-{i % 9}", {"n": i}) for i in range(200)]
    produce_json(settings.kafka_servers, source, sent)

    env = {
        **os.environ,
        "FRAUDSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ECHO_APP_ID": app_id,
        "ECHO_IN": source,
        "ECHO_OUT": sink,
        "ECHO_DATADIR": str(tmp_path / "faust"),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "integration" / "faust_echo.py"), "worker", "-l", "info"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            received = drain(settings.kafka_servers, sink, expected=200, timeout_s=120)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    assert len(received) == 200, f"got {len(received)} of 200; worker log:\n{log.read_text()[-3000:]}"
    values = [json.loads(r.value) for r in received]
    assert sorted(v["doubled"] for v in values) == [2 * i for i in range(200)]
    per_key: dict[str, list[int]] = defaultdict(list)
    for record, value in zip(received, values, strict=True):
        per_key[record.key.decode()].append(value["seen"])
    # the table counts per key in order: each key's counts run 1..n with no gaps
    assert all(sorted(seen) == list(range(1, len(seen) + 1)) for seen in per_key.values())
