"""The Faust application: agents of a few lines that hand micro-batches to the services.

``create_app(settings)`` builds everything and opens the sinks (nothing happens at import). The
card agent consumes ``transactions`` (keyed by card_id; handed over by the fetch loop in lists,
app/worker/batches.py), keeps card state in the ``card-state``
table (changelogged, partitioned like the source by the same key partitioner), scores each
transaction with the champion (decisions to PostgreSQL, events to ``fraud-scores``), writes
features to Feast and the offline log, and sends what it cannot process to the dead-letter topic
with the reason.

Order within a batch (at-least-once, nothing lost, nothing duplicated in PostgreSQL): the agent
computes the features and sets the new card states in the in-memory table (the next batch reads
them) -> the scoring stage, one batch at a time in arrival order, has the scoring process
(app/worker/scoring_process.py: champion, SHAP) persist the decisions (retried until PostgreSQL
answers) and return the score events -> queues the score events and dead letters with the producer,
in record batches (``Outbox``) -> once they are delivered, queues the card states (changelog), in
batch order -> *all of them delivered* -> batch acknowledged (Faust commits offsets of acknowledged
messages only). The agent goes on with the next batch's features while the stage scores the previous
one (two stages overlap; at most ``SCORE_QUEUE`` batches wait between them). A crash anywhere loses
only the in-memory table, which is rebuilt from the changelog: a state reaches the changelog only
after its batch's decisions are persisted and its events delivered. Waiting for delivery matters:
Faust's commit-time producer flush gives up after 0.1 s without progress, so without it a crash
could leave committed offsets whose card state never reached the changelog (found by the kill -9
test in tests/integration/test_faults.py). The wait is pipelined: the agent holds a reference on
each message of the batch (so Faust cannot acknowledge it) and goes on; a task releases the batch
once Kafka has all its outputs (at most ``MAX_IN_FLIGHT`` batches wait at once). What is committed
for the source topic is ``SourceOffsets``' number (app/worker/offsets.py): the offset below which
every message is finished, so a later batch delivered first commits nothing early, and no offset
Faust skipped is ever processed past or committed. A batch that cannot be scored or delivered stops
the worker: every batch not yet delivered is then let go of unfinished (not committed, replayed
after the restart), so Faust's shutdown does not wait for messages the worker still holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
import orjson

from app.errors import FraudstreamError
from app.feedback import FeedbackService
from app.feedback import parse as parse_feedback
from app.kafka_admin import CARD_TABLE
from app.quiet_gc import quiet_gc
from app.schema import Transaction
from app.settings import Settings
from app.worker import changelog_pause, drain
from app.worker.batch_trace import BatchTrace, Stamps, mark
from app.worker.batches import SourceBatches
from app.worker.card_features import BatchResult, DeadLetter, DecodedStates, Raw, process_batch
from app.worker.handoff import Columns, pack
from app.worker.metrics import LatencyHistogram, serve_metrics
from app.worker.offsets import SourceOffsets, seek_on_consumer_thread
from app.worker.outbox import Message, Outbox, Sent
from app.worker.recovery_watch import RecoveryWatch, describe_consumer
from app.worker.scoring_process import GIL_SWITCH_S, RemoteScorer
from app.worker.sinks import FeatureWriter
from features import fold
from features.store import close_store, feature_store

log = logging.getLogger("fraudstream.worker")


@dataclass
class Counters:
    processed: int = 0
    scored: int = 0
    flagged: int = 0
    explored: int = 0
    dead: int = 0
    late: int = 0
    duplicates: int = 0
    batches: int = 0
    states_reused: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # for /metrics
    lag: dict[int, int] = field(default_factory=dict)  # source partition -> unfinished messages, each second
    stage_s: dict[str, float] = field(default_factory=dict)  # seconds per pipeline stage, summed (/metrics)

    def line(self) -> str:
        return (
            f"worker: {self.processed} processed, {self.scored} scored ({self.flagged} flagged), "
            f"{self.dead} dead letters ({self.late} late), {self.duplicates} duplicates, "
            f"{self.batches} batches, {self.states_reused} card states reused"
        )


MAX_IN_FLIGHT = 4  # batches processed whose outputs Kafka has not acknowledged yet
SCORE_QUEUE = 1  # batches with features computed, waiting for the scoring stage
SOURCE_WAITING = 4  # batches' worth of fetched source messages that may wait for the card agent
DELIVERY_TIMEOUT_S = 150.0  # beyond the producer's own retries (2 min): stop and replay


class DurableTable(faust.Table[bytes, bytes | None]):
    """The card-state table, written in two steps: ``set_local`` now, ``changelog`` messages later.

    ``table[key] = value`` queues the changelog message in Faust's producer buffer at once, with
    nothing to wait on. The worker instead sets the value in the store as soon as a batch's
    features are computed (the next batch reads it) and publishes the changelog message only after
    the batch's decisions are persisted, through the ``Outbox`` (awaitable, acknowledged before the
    batch's offsets are committed). ``partition`` is the source partition the card's transactions
    came from: Faust recovers changelog partition N for whoever owns source partition N, so the
    state lands there whatever partitioner the transactions' producer used (None: by key).
    """

    def set_local(self, key: bytes, value: bytes | None) -> None:
        self.data[key] = value

    def changelog(self, key: bytes, value: bytes | None, partition: int | None) -> Message:
        return Message(self.changelog_topic.get_topic_name(), key, value, partition)


# Drops the agent's reference on a batch's messages: True once Kafka has all its outputs (they may be
# committed); False when the worker is stopping without them (not committed: replayed after restart).
Release = Callable[[bool], None]


@dataclass(frozen=True)
class Processed:
    """A micro-batch whose features are computed, on its way to scoring and delivery."""

    result: BatchResult
    features: bytes  # its card features, packed for the child processes (app/worker/handoff.py)
    release: Release | None
    stamps: Stamps | None = None  # where its time goes (app/worker/batch_trace.py), when traced

    def settle(self, finished: bool) -> None:
        if self.release is not None:
            self.release(finished)


@dataclass
class Pipeline:
    """What one micro-batch goes through; ``prepare`` opens the sinks before the worker starts."""

    settings: Settings
    states: MutableMapping[bytes, bytes | None]
    producer: Any  # the app's (aiokafka) producer
    topics: Sequence[Any] = ()  # the output topics, declared (created if missing) when the sinks open
    counters: Counters = field(default_factory=Counters)
    scorer: RemoteScorer | None = None  # the scoring process
    feedback: FeedbackService | None = None
    features: FeatureWriter | None = None  # the online store and the offline log
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    crash: Callable[[BaseException], Awaitable[None]] | None = None  # the app's: stop, replay on restart
    in_flight: deque[asyncio.Task[None]] = field(default_factory=deque)
    # whether the latest batch's card states were queued for the changelog (False: they never will be)
    states_queued: asyncio.Future[bool] | None = None
    known: DecodedStates = field(init=False)
    outbox: Outbox = field(init=False)
    to_score: asyncio.Queue[Processed] = field(init=False)
    scoring: asyncio.Task[None] | None = None  # the scoring stage, started with the first batch
    failed: bool = False  # a batch could not be scored or delivered: the worker is stopping
    stopping: asyncio.Future[None] | None = None  # the app's crash, once asked for

    def __post_init__(self) -> None:
        self.known = DecodedStates(self.settings.state_cache_cards)
        self.outbox = Outbox(self.producer._ensure_producer)  # Faust's aiokafka producer, once started
        self.to_score = asyncio.Queue(maxsize=SCORE_QUEUE)

    def prepare(self) -> None:
        """Open the sinks: the scoring process (registry, champion, PostgreSQL), the Feast
        definitions, the feature writer process (online store, offline log). Blocking and slow (~5-15 s of
        imports and connections): ``create_app`` runs it before the worker joins the consumer
        group, so that a worker joining takes partitions only once it can process them (joining
        first left the partitions it took unprocessed meanwhile, and the messages Faust fetched for
        them were refused after the next rebalance and read again)."""
        s = self.settings
        # kafka-python, for the offset lookups (committed_offsets at each assignment, first_offset at a
        # gap), imported now: its import holds the GIL 150-215 ms, which a fresh group's first batch
        # waited for when the lookup came with it (session 20)
        import kafka  # noqa: F401, PLC0415

        if s.scoring:
            self.feedback = build_feedback(s)  # migrates the schema: before the scoring process starts
            self.scorer = RemoteScorer(s)  # loads the model and Feast beside what follows
        close_store(feature_store(s))  # apply the definitions once
        self.features = FeatureWriter(s)
        if not self.features.ready.wait(120):
            log.error("worker: the feature writer has not opened the store after 120 s; going on")
        if self.scorer is not None:
            self.scorer.wait_ready()

    async def open(self) -> None:
        """Once the app runs: declare the output topics, then let batches through."""
        for topic in self.topics:
            await topic.maybe_declare()
        self.ready.set()
        log.info("worker: feature store ready (%s)", self.settings.feast_config)
        log.info("worker: card fold: %s (compiled build %s; scripts/build-native)", fold.KIND, fold.STATE)

    async def handle(
        self, batch: Sequence[Raw], release: Release | None = None, stamps: Stamps | None = None
    ) -> None:
        """Features of one micro-batch now; scoring and delivery in the scoring stage, in order.
        ``release(True)`` runs once Kafka has all its outputs, ``release(False)`` if the worker stops."""
        if self.failed:  # stopping: let go at once, so Faust's shutdown does not wait for these messages
            if release is not None:
                release(False)
            return
        t0 = time.perf_counter()
        result = process_batch(list(batch), self.states, self.settings.lateness_s, self.known)
        stages = self.counters.stage_s
        stages["features"] = stages.get("features", 0.0) + time.perf_counter() - t0
        mark(stamps, "features")
        for dead in result.dead:
            log.warning("worker: dead letter: %s", dead.reason)
        await self.ready.wait()  # the first batch can arrive before the output topics are declared
        for key, value in result.states.items():  # the next batch reads them; the changelog waits
            if isinstance(self.states, DurableTable):
                self.states.set_local(key, value)
            else:
                self.states[key] = value
        assert self.features is not None
        features = pack(Columns.of(result.features))  # once, for both child processes
        try:
            if result.features:
                await self.features.write(features)  # waits while the writer is behind
        except FraudstreamError as exc:
            log.error("worker: %s; stopping so the batch is replayed", exc)
            if release is not None:
                release(False)
            self._stop(exc)
            return
        c = self.counters
        c.processed += len(result.features)
        c.dead += len(result.dead)
        c.late += result.late
        c.duplicates += result.duplicates
        c.batches += 1
        c.states_reused = self.known.hits
        if self.scoring is None:
            self.scoring = asyncio.ensure_future(self._scoring_stage())
        await self.to_score.put(Processed(result, features, release, stamps))  # waits while the stage is busy
        mark(stamps, "queued")

    async def _scoring_stage(self) -> None:
        """Batches in arrival order: scored, their score events and dead letters queued with the
        producer while the scoring process persists the decisions, then (both done) their card
        states; released once Kafka has them all."""
        while True:
            item = await self.to_score.get()
            try:
                if self.failed:  # stopping: let go of the batches still queued (the agent may wait to queue)
                    item.settle(False)
                else:
                    await self._deliver(item)
            except Exception as exc:
                log.exception("worker: scoring a batch failed; stopping so it is replayed")
                item.settle(False)
                self._stop(exc)
            finally:
                self.to_score.task_done()

    async def _deliver(self, item: Processed) -> None:
        result = item.result
        mark(item.stamps, "scoring")
        messages = [self._dead_letter(dead) for dead in result.dead]
        persisted: asyncio.Future[float | None] | None = None
        if self.scorer is not None and result.features:
            batch = (item.features, result.transactions, result.produced_at)
            scored, persisted = await self._score(self.scorer, *batch)
            messages += scored
        mark(item.stamps, "scored")
        changelog: list[Message] = []
        if isinstance(self.states, DurableTable):
            table = self.states
            changelog = [table.changelog(k, v, result.partitions.get(k)) for k, v in result.states.items()]
        sent = await self.outbox.send(messages)
        mark(item.stamps, "sent")
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait([self.in_flight[0]])
            self.in_flight.popleft()
        before, self.states_queued = self.states_queued, asyncio.get_running_loop().create_future()
        task = self._release_when_delivered(
            sent, changelog, before, self.states_queued, item, persisted=persisted
        )
        self.in_flight.append(asyncio.ensure_future(task))

    async def _release_when_delivered(
        self, sent: list[Sent], changelog: list[Message], before: asyncio.Future[bool] | None,
        queued: asyncio.Future[bool], item: Processed, *,
        persisted: asyncio.Future[float | None] | None = None,  # its result: the child's persist seconds
    ) -> None:  # fmt: skip
        """Acknowledge the batch once Kafka has every output: first its score events and dead
        letters (and PostgreSQL its decisions: ``persisted``), only then its card states. A state on
        the changelog tells a replay that its events were processed (``redelivered``), and the
        replay skips them, so a crash between the two must never leave a state there whose batch's
        events or decisions are not (the kill -9 test found score events missing after a restart:
        the changelog's record batch had been delivered and the scores' had not). The states go to
        the changelog in batch order (``before``). No time limit on ``persisted``: the scoring
        process retries PostgreSQL for as long as it is down, and holds the next batch meanwhile."""
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(s.ack for s in sent)), DELIVERY_TIMEOUT_S)
            if persisted is not None and (persist_s := await persisted) is not None:
                self.counters.stage_s["persist"] = persist_s
            if before is not None and not await before:
                raise FraudstreamError("an earlier batch's card states were not queued")
            states = await self.outbox.send(changelog)
            queued.set_result(True)
            sent = [*sent, *states]
            await asyncio.wait_for(asyncio.gather(*(s.ack for s in states)), DELIVERY_TIMEOUT_S)
        except Exception as exc:
            log.error(
                "worker: a batch's outputs were not delivered (%s; %s); stopping so it is replayed",
                type(exc).__name__, pending(sent),
            )  # fmt: skip
            item.settle(False)
            self._stop(exc)
            raise
        finally:  # failed or cancelled before its states were queued: later batches must not queue theirs
            if not queued.done():
                queued.set_result(False)
        stages = self.counters.stage_s  # waiting for Kafka's acknowledgements, summed
        stages["deliver"] = stages.get("deliver", 0.0) + time.perf_counter() - t0
        mark(item.stamps, "acked")
        item.settle(True)

    def _stop(self, exc: BaseException) -> None:
        """Stop the worker (its batches let go of unfinished, so they are replayed), without waiting here:
        the shutdown drains this very task, so awaiting the app's crash in it would deadlock."""
        self.failed = True
        if self.crash is not None and self.stopping is None:
            self.stopping = asyncio.ensure_future(self.crash(exc))

    async def drain(self) -> None:
        """Wait for the batches still being scored and delivered (on shutdown, before the final commit)."""
        if self.failed:  # stopping: nothing more is finished, so the restart replays it all
            return
        if self.scoring is not None and not self.scoring.done():
            await self.to_score.join()
        while self.in_flight:
            await asyncio.wait([self.in_flight.popleft()])

    def _dead_letter(self, dead: DeadLetter) -> Message:
        return Message(self.settings.topic_dlq, dead.masked_key(), orjson.dumps(dead.record()))

    async def _score(
        self,
        scorer: RemoteScorer,
        features: bytes,
        txns: Sequence[Transaction],
        produced_at: Sequence[float | None],
    ) -> tuple[list[Message], asyncio.Future[float | None]]:
        """The batch's score events, and a future done once its decisions are persisted."""
        scored, persisted = await scorer.score(features, txns, produced_at)
        if scored.stage_s:
            self.counters.stage_s.update(scored.stage_s)
        self.counters.scored += len(scored.events)
        self.counters.flagged += scored.flagged
        self.counters.explored += scored.explored
        now = time.time()
        self.counters.latency.observe(now - p for p in produced_at if p)
        topic = self.settings.topic_scores
        return [Message(topic, key, value) for key, value in scored.events], persisted

    async def handle_feedback(self, batch: Sequence[Raw]) -> None:
        """Chargebacks and verdicts -> labels; enough confirmed fraud -> one retrain request."""
        await self.ready.wait()
        good, dead = [], []
        for raw in batch:
            parsed = parse_feedback(raw.value)
            if isinstance(parsed, str):
                log.warning("worker: dead letter: feedback: %s", parsed)
                dead.append(self._dead_letter(DeadLetter(raw.key, f"feedback: {parsed}", raw)))
            else:
                good.append(parsed)
        if self.feedback is not None and good:
            await asyncio.to_thread(self.feedback.handle, good)
        await asyncio.gather(*(s.ack for s in await self.outbox.send(dead)))

    def close(self) -> None:
        if self.features is not None:
            self.features.close()
            f = self.features
            log.info("worker: feature writer: %d rows logged, %d online writes (%d failed)",
                     f.logged, f.written, f.errors)  # fmt: skip
        if self.scorer is not None:
            times = {**self.scorer.close(), "deliver": round(self.counters.stage_s.get("deliver", 0.0), 4)}
            log.info("worker: stage times %s", json.dumps(times))


def create_app(settings: Settings) -> faust.App:  # noqa: PLR0915 - the app's wiring, in one place
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_servers],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.worker_web_port,
        web_enabled=False,
        datadir=str(datadir),
        producer_acks=-1,
        producer_linger=0.005,  # batch changelog, score and DLQ sends instead of one request per message
        producer_max_batch_size=512 * 1024,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=settings.worker_session_timeout_s / 10,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(settings.topic_transactions, **raw)
    states = DurableTable(
        app,
        name=CARD_TABLE,
        default=lambda: None,
        beacon=app.tables.beacon,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        use_partitioner=True,  # only for Faust's own writes; ``put`` names the source partition
    )
    app.tables.add(states)
    # Table writes and score events queue in the producer buffer; Faust pauses the stream while it
    # holds more than max_messages (default 100, i.e. less than one micro-batch).
    app.producer.buffer.max_messages = 4 * settings.batch_size
    outputs = [app.topic(settings.topic_dlq, **raw), app.topic(settings.topic_scores, **raw)]
    offsets = SourceOffsets(
        app.consumer, settings.topic_transactions, partial(first_offset_in_log, settings),
        current=lambda m: m.generation_id == app.consumer_generation_id and app.flow_control.is_active(),
        committed=partial(committed_offsets, settings),
    )  # fmt: skip
    offsets.install()
    seek_on_consumer_thread(app.consumer)
    changelog_pause.install(app.consumer)  # the card-state changelog's records must not stall the fetch
    app.topics.add(source)  # subscribed; its messages bypass Faust's streams (app/worker/batches.py)
    batches = SourceBatches(settings.topic_transactions, limit=SOURCE_WAITING * settings.batch_size)
    offsets.waiting = batches.__len__  # messages waiting for the agent: the worker is not idle
    drain.install(app.consumer, batches)  # one flow-control wait per fetched batch, not per message

    async def crash(exc: BaseException) -> None:  # a batch failed: stop, letting go of the rest unfinished
        offsets.give_up()
        await app.crash(exc)

    pipeline = Pipeline(settings, states, app.producer, outputs, crash=crash)
    trace = BatchTrace(settings.batch_trace_dir)
    if settings.metrics_port:
        serve_metrics(pipeline.counters, settings.metrics_host, settings.metrics_port, batches.__len__)

    @app.on_partitions_revoked.connect
    async def forget_revoked(_sender: Any, /, *args: Any, **_kwargs: Any) -> None:
        offsets.forget(args[0])  # the revoked partitions
        batches.clear()  # fetched before the rebalance: read again from the committed offsets

    watch = RecoveryWatch(
        app.tables.recovery,  # type: ignore[attr-defined]  # faust's TableManager has it
        partial(describe_consumer, app), crash, stall_s=settings.recovery_stall_s,
    )  # fmt: skip

    @app.on_partitions_assigned.connect
    async def watch_assigned(_sender: Any, /, *args: Any, **_kwargs: Any) -> None:
        offsets.assigned(args[0])  # the whole assignment; those not started yet are watched
        watch.start()  # once: a recovery follows every assignment, the first one too

    @app.task
    async def open_sinks() -> None:
        await pipeline.open()

    @app.task
    async def card_agent() -> None:
        await run_card_agent(app, settings, batches, offsets, pipeline, crash=crash, trace=trace)

    heartbeat = settings.data_dir / "health" / f"worker-{socket.gethostname()}"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)

    @app.agent(app.topic(settings.topic_feedback, **raw))
    async def feedback_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=1.0):
            await pipeline.handle_feedback([raw_of(e.message) for e in events])

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info(pipeline.counters.line())
        heartbeat.write_text(pipeline.counters.line())  # the container healthcheck reads its age

    @app.timer(interval=1.0)
    async def reseek() -> None:
        await offsets.reseek_stalled()
        await offsets.seek_stalled(lambda tps: app.consumer.highwaters(*tps))

    if settings.metrics_port:  # a timer of its own: a slow answer from Kafka never holds the reseeks

        @app.timer(interval=1.0)
        async def measure_lag() -> None:
            async def ends(tps: list[Any]) -> Mapping[Any, int]:
                return await asyncio.wait_for(app.consumer.highwaters(*tps), 5.0)

            pipeline.counters.lag = await offsets.lag(app.consumer.highwater, ends)  # replaced whole

    @app.on_before_shutdown.connect
    async def flush_on_stop(_sender: Any, /, *_args: Any, **_kwargs: Any) -> None:
        watch.stop()
        await pipeline.drain()
        pipeline.close()
        if (written := trace.write()) is not None:
            log.info("worker: %d batches' stamps written to %s", len(trace.batches), written)

    pipeline.prepare()  # before the app starts and joins the consumer group
    return app


async def run_card_agent(
    app: faust.App, settings: Settings, batches: SourceBatches, offsets: SourceOffsets, pipeline: Pipeline,
    *, crash: Callable[[BaseException], Awaitable[None]], trace: BatchTrace | None = None,
) -> None:  # fmt: skip
    """Micro-batches of source messages (handed over by the fetch loop) -> the pipeline: features
    now; scoring, delivery and the release of the messages in its stages. ``trace``: stamps each
    batch on its way, when tracing is on."""
    try:
        while True:
            taken = await batches.take(settings.batch_size, settings.batch_within_s)
            set_fetch_wait(app.consumer, settings.fetch_max_wait_s)  # once: after the recovery's seek
            admitted = await offsets.admit(taken)
            held = [m for m, ok in zip(taken, admitted, strict=True) if ok]
            if held:
                offsets.track(held)  # what a rebalance or the shutdown waits for, until released
                stamps = None
                if trace is not None and trace.on:
                    stamps = trace.start((m.timestamp for m in held), batches.taken_from, len(held))
                await pipeline.handle([raw_of(m) for m in held], partial(offsets.release, held), stamps)
    except Exception as exc:  # nothing is expected here: stop (to be restarted) rather than sit idle
        log.exception("worker: the card agent failed")
        await crash(exc)


def set_fetch_wait(consumer: Any, seconds: float) -> None:
    """Shorten the Kafka fetch long-poll of Faust's aiokafka consumer (hard-coded to 1.5 s).

    With 1.5 s, paced input at 1,000 txn/s settled, after any stall, into fetch rounds ~1.5 s
    apart: the worker kept up, but every transaction waited ~1.4 s in Kafka (p50 1,374 ms; the
    worker held nothing meanwhile). With 0.1 s: p50 83-105 ms, p99 311-426 ms (session 7). An idle
    worker then asks the broker every 0.1 s instead of every 1.5 s, which costs next to nothing.

    Set when the first batch arrives, i.e. after Faust's recovery and its seek to the committed
    offsets. Set at the assignment, before that seek, a restarted worker stalled once in clean-clone
    CI (4 batches, then nothing for 5 minutes); ``SourceOffsets.seek_stalled`` now also catches a
    partition that stops with messages waiting.
    """
    fetcher = consumer._thread._ensure_consumer()._fetcher  # started: a batch has arrived
    wait_ms = round(seconds * 1000)
    if fetcher._fetch_max_wait_ms != wait_ms:
        fetcher._fetch_max_wait_ms = wait_ms
        log.info("worker: Kafka fetches wait at most %d ms for new data", wait_ms)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust (aiokafka) credentials for the broker's security protocol; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = settings.kafka_ssl_cafile
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # checked by the settings
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username, password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context, mechanism=settings.kafka_sasl_mechanism,
    )  # fmt: skip


def pending(sent: Sequence[Sent]) -> str:
    """Which topics a batch still waits on, e.g. ``fraud-scores: 3, card-state-changelog: 1``."""
    waiting = Counter(s.topic for s in sent if not (isinstance(s.ack, asyncio.Future) and s.ack.done()))
    return ", ".join(f"{t}: {n}" for t, n in waiting.items()) or "nothing pending"


async def first_offset_in_log(settings: Settings, tp: Any, offset: int) -> int | None:
    """The offset a read of ``tp`` from ``offset`` starts with (a plain consumer, outside the group);
    None when nothing came back in time."""
    from app.kafka_admin import first_offset  # noqa: PLC0415

    return await asyncio.to_thread(first_offset, settings, tp.topic, tp.partition, offset)


async def committed_offsets(settings: Settings, tps: list[Any]) -> dict[Any, int]:
    """The worker group's committed offsets of ``tps``, asked of Kafka in one lookup (absent:
    nothing committed)."""
    from app.kafka_admin import group_offsets  # noqa: PLC0415

    offsets = await asyncio.to_thread(group_offsets, settings, settings.app_id)
    return {tp: offsets[tp.topic, tp.partition] for tp in tps if (tp.topic, tp.partition) in offsets}


def raw_of(m: Any) -> Raw:
    return Raw(m.key, m.value, m.topic, m.partition, m.offset, m.timestamp)


def build_feedback(settings: Settings) -> FeedbackService:
    from app.drift import request_retrain  # noqa: PLC0415

    service = FeedbackService(
        settings.pg_conninfo(reveal=True),
        settings.retrain_fraud_count,
        lambda r: request_retrain(settings, r),
    )
    service.migrate()
    return service


def run_worker(app: faust.App, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; Faust's worker flushes, commits and leaves the group on the way out."""
    sys.setswitchinterval(GIL_SWITCH_S)
    quiet_gc(log, "worker")
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
