"""The trainer's schedule on the real broker: retrain requests on the topic start exactly one run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.kafka_admin import ensure_topics
from app.settings import Settings
from tests.kafka_helpers import produce_json
from tests.services import unique
from training.schedule import KafkaRequests, run_schedule


def test_requests_on_the_topic_start_one_run_each_burst(settings: Settings) -> None:
    s = settings.model_copy(update={"topic_retrain": unique("it-retrain")})
    ensure_topics(s, [s.topic_retrain])
    requests = KafkaRequests(s.kafka_servers, s.topic_retrain, unique("it-trainer"))
    deadline = time.monotonic() + 90  # a fresh broker creates __consumer_offsets first
    while not requests.consumer.assignment():  # joined the group
        requests.poll(0.2)
        assert time.monotonic() < deadline, "the trainer's consumer got no partition"
    for tp in requests.consumer.assignment():
        requests.consumer.position(tp)  # the topic is new and empty: the position is its start
    reasons: list[str] = []

    def run(reason: str) -> str:
        reasons.append(reason)
        time.sleep(1.0)  # a request arriving during the run is served by it
        if len(reasons) == 1:
            produce_json(s.kafka_servers, s.topic_retrain, [("k", {"reason": "during the run"})])
        return "trained"

    produce_json(s.kafka_servers, s.topic_retrain, [("k", {"reason": "drift: amount"}),
                                                    ("k", {"reason": "confirmed fraud: 25"})])  # fmt: skip
    never = "0 0 1 1 *"  # the cron time does not come during the test
    started = datetime.now(UTC)
    assert run_schedule(never, run, requests, max_runs=1, poll_s=0.5, drain_s=3.0) == 1
    assert len(reasons) == 1
    assert "drift: amount" in reasons[0]
    assert "confirmed fraud: 25" in reasons[0] or len(reasons) == 1
    assert requests.poll(2.0) == [], "the request that came during the run was drained by it"
    produce_json(s.kafka_servers, s.topic_retrain, [("k", {"reason": "later"})])
    assert run_schedule(never, run, requests, max_runs=1, poll_s=0.5) == 1
    assert reasons[1] == "retrain request: later"
    assert (datetime.now(UTC) - started).total_seconds() < 60
    requests.consumer.close()
