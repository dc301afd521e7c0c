"""Simulation as a job: simulate, write partitions with a progress bar, summarise in one line."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from app.errors import FraudstreamError
from app.history import read_history, write_history
from app.kafka_admin import ensure_topics
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.simulator.producer import KafkaSink, Pacer, ProduceSummary, produce


def simulate_history(config: SimConfig, out: Path, *, show_progress: bool = True) -> str:
    started = time.perf_counter()
    with tqdm(total=4 + config.days, desc="simulate", unit="step", disable=not show_progress) as bar:

        def stage(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        frame = simulate(config, progress=stage)
        bar.set_postfix_str("writing parquet")
        files = write_history(frame, out, on_written=lambda _: bar.update(1))
    frauds = frame.loc[frame["is_fraud"] == 1, "fraud_scenario"].value_counts()
    mix = ", ".join(f"{name} {count}" for name, count in frauds.items())
    return (
        f"simulate: {len(frame)} transactions, {frame['card_id'].nunique()} cards, {len(files)} days "
        f"-> {out} in {time.perf_counter() - started:.1f}s; fraud rate {frame['is_fraud'].mean():.3%} ({mix})"
    )


def produce_transactions(
    settings: Settings,
    *,
    source: Path | None,
    rate: float,
    limit: int | None = None,
    live: bool = False,
    duration_s: float | None = None,
    customers: int = 1_000,
    seed: int = 0,
    live_from: date | None = None,
    labels: bool = True,
    on_status: Callable[[ProduceSummary, float], None] | None = None,
) -> ProduceSummary:
    """Replay ``source`` history (or simulate live traffic) into Kafka; see ``producer.produce``.

    Live traffic begins at 00:00 UTC of ``live_from`` (default today: where a history simulated
    up to today ends) or, where the workers have scored later transactions, of the day after the
    latest (``resume_day``): a restarted producer goes on from there; one that began again at the
    history's end would send transactions older than the cards' states."""
    if live == (source is not None):
        raise FraudstreamError("give either --from DIR (replay) or --live")
    frames: Iterable[pd.DataFrame]
    if source is not None:
        history = read_history(source)
        frames = [history.iloc[:limit] if limit is not None else history]
    else:
        began = datetime.now(UTC)
        first_day = resume_day(settings.pg_conninfo(reveal=True), live_from or began.date())

        def period(k: int) -> pd.DataFrame:
            # the world of a history simulated with ``seed`` (same cards, homes, merchants, compromised
            # terminals and cards) going on a week at a time from ``live_from``; ids of this run's own
            # (a restart must not resend ids the worker has already seen)
            cfg = SimConfig(
                customers=customers, merchants=2 * customers, days=7, start=first_day + timedelta(days=7 * k),
                seed=seed + 1 + k, world_seed=seed, id_salt=began.isoformat(), continues=True,
            )  # fmt: skip
            return simulate(cfg)

        frames = (period(k) for k in itertools.count())
        if limit is not None:
            frames = _limited(frames, limit)
    ensure_topics(settings, [settings.topic_transactions, settings.topic_feedback])
    sink = KafkaSink(settings.kafka_servers, **settings.kafka_security())
    try:
        return produce(
            frames,
            sink,
            topic=settings.topic_transactions,
            feedback_topic=settings.topic_feedback,
            pacer=Pacer(rate),
            live=live,
            labels=labels,
            duration_s=duration_s,
            on_status=on_status,
        )
    finally:
        sink.close()


def resume_day(conninfo: str, not_before: date) -> date:
    """``not_before``, or the day after the latest transaction in the decision audit if that is later
    (no audit yet, or no database: ``not_before``)."""
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            (latest,) = conn.execute("select max(event_time) from decisions").fetchone() or (None,)
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return not_before
    return not_before if latest is None else max(not_before, (latest + timedelta(days=1)).date())


def _limited(frames: Iterable[pd.DataFrame], limit: int) -> Iterator[pd.DataFrame]:
    left = limit
    for frame in frames:
        if left <= 0:
            return
        yield frame.iloc[:left]
        left -= len(frame)
