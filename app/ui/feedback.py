"""Analyst verdicts to ``fraud-feedback`` (the same topic chargebacks arrive on), keyed by card_id."""

from __future__ import annotations

from typing import Any

from app.errors import FraudstreamError
from app.schema import encode
from app.settings import Settings
from app.ui.web import Feedback


def kafka_feedback(settings: Settings) -> Feedback:
    from kafka import KafkaProducer  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    producer: list[Any] = []

    def send(record: dict[str, Any]) -> None:
        try:
            if not producer:
                producer.append(
                    KafkaProducer(
                        bootstrap_servers=settings.kafka_servers,
                        acks="all",
                        retries=5,
                        **settings.kafka_security(),
                    )
                )
            future = producer[0].send(
                settings.topic_feedback, key=record["card_id"].encode(), value=encode(record)
            )
            future.get(timeout=10)  # the analyst sees a failure instead of a silently lost label
        except KafkaError as exc:
            raise FraudstreamError(f"verdict saved, but its feedback event was not delivered: {exc}") from exc

    return send
