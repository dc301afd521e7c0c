"""``fraudstream dlq``: what went to the dead-letter topic, by kind, with the newest examples.

Each dead letter is the JSON the worker wrote (``app.worker.card_features.DeadLetter.record``:
reason, source topic/partition/offset, failed_at, the payload with card numbers masked). Its kind is
the reason up to the first colon ("invalid amount", "late event", "feedback", "payload too large"):
the question in an incident is which kind surged, since when, and what one looks like. Reading is
outside any consumer group (nothing is committed), from the first record at or after ``since``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from app.errors import FraudstreamError, first_line
from app.settings import Settings

UNREADABLE = "unreadable dead letter"  # not the worker's JSON (another producer wrote to the topic)
SAMPLE_CHARS = 160


@dataclass
class Kind:
    name: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    sources: set[str] = field(default_factory=set)
    newest: list[dict[str, Any]] = field(default_factory=list)  # newest first


def kind_of(reason: str) -> str:
    return reason.split(":", 1)[0].strip() or UNREADABLE


@dataclass
class Summary:
    kinds: list[Kind]
    repeats: int  # dead letters of a source message counted already (a worker replayed it after a crash)


def summarize(letters: Iterable[tuple[datetime, bytes]], samples: int = 1) -> Summary:
    """(written at, value) of each dead letter -> its kinds, the most frequent first; each with its
    first and last time, the source topics, and its ``samples`` newest records. A source message is
    counted once: after a crash a worker replays its last batches, and their dead letters repeat
    (docs/guarantees.md), with the same source topic, partition and offset."""
    kinds: dict[str, Kind] = {}
    seen: set[tuple[Any, Any, Any]] = set()
    repeats = 0
    for at, value in letters:
        try:
            record = orjson.loads(value)
            reason = str(record["reason"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            record, reason = {"value": value[:SAMPLE_CHARS].decode("utf-8", "replace")}, UNREADABLE
        source = (record.get("topic"), record.get("partition"), record.get("offset"))
        if source[2] is not None:
            if source in seen:
                repeats += 1
                continue
            seen.add(source)
        name = kind_of(reason)
        kind = kinds.setdefault(name, Kind(name))
        kind.count += 1
        kind.first = at if kind.first is None else min(kind.first, at)
        kind.last = at if kind.last is None else max(kind.last, at)
        if source[0]:
            kind.sources.add(str(source[0]))
        newest = [*kind.newest, {**record, "_at": at}]
        kind.newest = sorted(newest, key=lambda r: r["_at"], reverse=True)[:samples]
    return Summary(sorted(kinds.values(), key=lambda k: (-k.count, k.name)), repeats)


def describe(summary: Summary, topic: str, since: datetime) -> list[str]:
    """The command's output: a head line, then per kind its count and times, and its samples."""
    total = sum(k.count for k in summary.kinds)
    again = f" ({summary.repeats:,} more repeated after a restart, counted once)" if summary.repeats else ""
    lines = [f"dlq: {total:,} dead letters in {topic} since {since:%Y-%m-%d %H:%M:%S} UTC{again}"]
    for k in summary.kinds:
        assert k.first is not None  # a kind exists once it has a record
        assert k.last is not None
        sources = ", ".join(sorted(k.sources)) or "-"
        lines.append(
            f"{k.count:>9,}  {k.name}  (from {sources}; {k.first:%Y-%m-%d %H:%M:%S} .. {k.last:%H:%M:%S} UTC)"
        )
        for r in k.newest:
            where = f"{r.get('topic', '?')}/{r.get('partition', '?')}@{r.get('offset', '?')}"
            value = str(r.get("value", ""))
            value = value if len(value) <= SAMPLE_CHARS else value[:SAMPLE_CHARS] + "..."
            lines.append(f"           {where}: {r.get('reason', UNREADABLE)} | {value}")
    return lines


def read_dead_letters(
    settings: Settings, since: datetime, timeout_s: float = 60.0
) -> Iterator[tuple[datetime, bytes]]:
    """The dead-letter topic's records written at or after ``since`` up to its end now: (timestamp,
    value). Outside any consumer group."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415
    from kafka.errors import KafkaError  # noqa: PLC0415

    topic = settings.topic_dlq
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_servers, enable_auto_commit=False, group_id=None,
            request_timeout_ms=30_000, **settings.kafka_security(),
        )  # fmt: skip
    except KafkaError as exc:
        servers = ",".join(settings.kafka_servers)
        raise FraudstreamError(f"dlq: Kafka at {servers}: {first_line(exc)}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise FraudstreamError(f"dlq: no topic {topic} on {','.join(settings.kafka_servers)}")
        parts = [TopicPartition(topic, p) for p in sorted(partitions)]
        end = consumer.end_offsets(parts)
        starts = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in parts})
        todo = {tp: end[tp] for tp in parts if starts.get(tp) is not None and starts[tp].offset < end[tp]}
        if not todo:
            return
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, starts[tp].offset)
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise FraudstreamError(f"dlq: {topic} not read to its end within {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    if r.offset < todo.get(tp, -1):
                        yield datetime.fromtimestamp(r.timestamp / 1000, UTC), r.value or b""
                if tp in todo and consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    except KafkaError as exc:
        raise FraudstreamError(f"dlq: reading {topic}: {first_line(exc)}") from exc
    finally:
        consumer.close()
