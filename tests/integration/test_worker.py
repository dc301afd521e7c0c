"""The Faust worker on the real broker: stream/batch parity, Feast online features, dead letters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from app.dlq import kind_of
from app.history import read_history, write_history
from app.schema import encode
from app.settings import Settings
from app.simulator.jobs import produce_transactions
from app.simulator.model import SimConfig, simulate
from app.worker.process import isolated_env, running_worker, settings_for
from features.backfill import card_feature_frame
from features.store import CARD_VIEW, feature_store
from tests.e2e.cli import fraudstream
from tests.integration.worker_features import Worker, assert_batch_features
from tests.kafka_helpers import drain, produce_json
from tests.services import free_port, scrape, unique


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("worker")
    env = {**isolated_env(unique("it-worker"), tmp), "FRAUDSTREAM_SCORING": "false",  # features only
           "FRAUDSTREAM_METRICS_PORT": str(free_port())}  # fmt: skip
    log = tmp / "worker.log"
    with running_worker(log, env):
        yield Worker(settings_for(env), log)


def test_stream_features_equal_batch_backfill(worker: Worker, tmp_path: Path) -> None:
    history_dir = tmp_path / "history"
    write_history(simulate(SimConfig(customers=250, merchants=500, days=7, seed=17)), history_dir)
    history = read_history(history_dir)
    summary = produce_transactions(worker.settings, source=history_dir, rate=0, labels=False)
    assert summary.transactions == len(history)

    stream = worker.wait_for_rows(len(history)).set_index("txn_id")
    assert stream.index.is_unique, "every transaction's features are logged exactly once"
    batch = card_feature_frame(history).set_index("txn_id")
    assert_batch_features(stream.loc[batch.index], batch)

    # the online store serves each card's features as of its latest transaction; its writer runs
    # in the background (coalesced every FRAUDSTREAM_ONLINE_FLUSH_S), so it may trail the log
    store = feature_store(worker.settings, apply=False)
    latest = batch.reset_index().sort_values("event_time").drop_duplicates("card_id", keep="last")
    cards = latest.sample(5, random_state=0)
    names = ["card_count_24h", "card_sum_30d", "km_from_prev", "card_prev_txns"]
    deadline = time.monotonic() + 60
    while True:
        online = store.get_online_features(
            features=[f"{CARD_VIEW}:{n}" for n in names],
            entity_rows=[{"card_id": c} for c in cards["card_id"]],
        ).to_df()
        fresh = np.allclose(online[names].to_numpy(float), cards[names].to_numpy(float), equal_nan=True)
        if fresh or time.monotonic() > deadline:
            break
        time.sleep(1)
    np.testing.assert_allclose(online[names].to_numpy(float), cards[names].to_numpy(float), equal_nan=True)


def test_bad_messages_go_to_the_dlq_and_the_worker_keeps_going(worker: Worker) -> None:
    s = worker.settings
    before = len(worker.feature_log())
    good = {"txn_id": unique("ok"), "event_time": "2026-03-02T12:00:00+00:00", "card_id": "card-dlq-1",
            "merchant_id": "m1", "amount": 12.5, "currency": "EUR", "mcc": "5411", "channel": "ecommerce",
            "lat": 48.1, "lon": 11.5, "country": "DE"}  # fmt: skip
    poison: list[tuple[str, object]] = [
        ("card-dlq-2", {**good, "card_id": "card-dlq-2", "amount": -3}),
        ("card-dlq-3", {**good, "card_id": "card-dlq-3", "mcc": None}),
        ("4111111111111111", {**good, "card_id": "4111111111111111"}),
    ]
    produce_json(s.kafka_servers, s.topic_transactions, poison)  # type: ignore[arg-type]
    raw = KafkaProducer(bootstrap_servers=s.kafka_servers)
    raw.send(s.topic_transactions, key=b"card-dlq-4", value=b"\x00\xffnot json at all")
    raw.send(s.topic_transactions, key=b"card-dlq-5", value=b"{" * 100_000)
    raw.send(s.topic_transactions, key=b"card-dlq-1", value=encode(good))
    raw.flush()
    raw.close()

    dead = drain(s.kafka_servers, s.topic_dlq, expected=5, timeout_s=60)
    reasons = sorted(orjson.loads(r.value)["reason"] for r in dead)
    assert len(reasons) == 5, reasons
    assert any(r.startswith("invalid amount") for r in reasons)
    assert any(r.startswith("invalid mcc") for r in reasons)
    assert any("card number" in r for r in reasons)
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any(r.startswith("payload too large") for r in reasons)
    assert not any(b"4111111111111111" in (r.key or b"") + r.value for r in dead), (
        "PANs are masked in the DLQ"
    )
    assert any(b"411111******1111" in r.value for r in dead)

    after = worker.wait_for_rows(before + 1, timeout_s=60)
    assert good["txn_id"] in set(after["txn_id"]), "the good message after the poison ones was processed"

    # the operator's view of the same dead letters: per kind, with the newest example, PANs masked
    listed = fraudstream("dlq", "--since", "1h", env={"FRAUDSTREAM_TOPIC_DLQ": s.topic_dlq})
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"dlq: 5 dead letters in {s.topic_dlq} since "), lines
    counted = sorted(line.split("  (from ")[0].split(None, 1)[1] for line in lines[1::2])
    assert counted == sorted(kind_of(r) for r in reasons), lines
    assert all(line.lstrip().startswith("1  ") for line in lines[1::2]), "one of each kind"
    assert all(f"(from {s.topic_transactions}; " in line for line in lines[1::2])
    assert "4111111111111111" not in listed.stdout
    assert "411111******1111" in listed.stdout


def test_the_worker_counts_for_prometheus(worker: Worker) -> None:
    s = worker.settings
    before = scrape(s.metrics_port)
    good = {"txn_id": unique("metrics"), "event_time": "2026-03-02T12:00:00+00:00", "card_id": "card-metrics",
            "merchant_id": "m1", "amount": 7.5, "currency": "EUR", "mcc": "5411", "channel": "ecommerce",
            "lat": 48.1, "lon": 11.5, "country": "DE"}  # fmt: skip
    produce_json(s.kafka_servers, s.topic_transactions, [("card-metrics", {**good, "amount": -1}),
                                                          ("card-metrics", good)])  # fmt: skip
    deadline = time.monotonic() + 60
    while (now := scrape(s.metrics_port))["fraudstream_transactions_processed_total"] < (
        before["fraudstream_transactions_processed_total"] + 1
    ) or now["fraudstream_dead_letters_total"] < before["fraudstream_dead_letters_total"] + 1:
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    assert (
        now["fraudstream_transactions_processed_total"]
        == before["fraudstream_transactions_processed_total"] + 1
    )
    assert now["fraudstream_dead_letters_total"] == before["fraudstream_dead_letters_total"] + 1
    assert now["fraudstream_batches_total"] > before["fraudstream_batches_total"]
    assert now["fraudstream_decisions_total"] == 0, "scoring is off in this worker"
    assert "fraudstream_source_messages_waiting" in now
