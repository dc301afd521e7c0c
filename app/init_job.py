"""``fraudstream init``: make an empty deployment ready (the compose ``init`` service runs it).

Idempotent, each step skipped when already done: create the Kafka topics; migrate the PostgreSQL
tables (registry, decisions/alerts/block list, UI); apply the Feast definitions; if the registry
has no champion, simulate a history (unless one exists), validate it, build the merchant features
and train the first model; seed the card states from the history while the card-state changelog is
empty (``app/seed.py``: the first worker starts knowing every card's past; after a lost changelog,
with the decided transactions the history does not hold yet), validating the history
first when no training did (a replaced history must not put a card number into a topic's keys);
create the first admin when FRAUDSTREAM_ADMIN_PASSWORD is given and no admin exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.errors import FraudstreamError
from app.kafka_admin import ensure_topics
from app.seed import seed_card_states
from app.settings import Settings


def init_job(
    settings: Settings, *, history: Path, customers: int, days: int, admin: str = "admin",
    echo: Callable[[str], None] = print,
) -> None:  # fmt: skip
    from app.simulator.jobs import simulate_history  # noqa: PLC0415
    from app.simulator.model import SimConfig  # noqa: PLC0415
    from app.ui.store import UiStore  # noqa: PLC0415
    from expectations.validate import validate_history  # noqa: PLC0415 - GX import is slow
    from features.jobs import build_merchant_features, materialize_merchant_features  # noqa: PLC0415
    from features.store import close_store, feature_store  # noqa: PLC0415
    from training.jobs import train_job  # noqa: PLC0415
    from training.registry import Registry  # noqa: PLC0415

    created = ensure_topics(settings)
    echo(f"init: topics ready ({len(created)} created)")
    ui = UiStore(settings.pg_conninfo(reveal=True))
    ui.migrate()  # decisions, alerts, block list, registry, users, labels, action log
    echo("init: PostgreSQL tables ready")
    close_store(feature_store(settings, apply=True))
    echo(f"init: Feast definitions applied ({settings.feast_config})")

    def validate(root: Path, otherwise: str, since: str | None = None) -> None:
        result = validate_history(root, settings.reports_dir / "init" / "validation", since=since)
        echo(result.one_line())
        if not result.success:
            raise FraudstreamError(f"history in {root} failed validation; {otherwise}")

    registry = Registry(settings.pg_conninfo(reveal=True))
    champion = registry.champion()
    if champion is not None:
        echo(f"init: champion {champion.version} in the registry; not training")
        echo(f"init: {materialize_merchant_features(settings)}")
    else:
        if not any(history.glob("date=*/*.parquet")):
            start = (datetime.now(UTC) - timedelta(days=days)).date()
            config = SimConfig(customers=customers, merchants=2 * customers, days=days, start=start, seed=42)
            echo(simulate_history(config, history, show_progress=False))
        validate(history, "no model trained")
        echo(build_merchant_features(settings, history))
        echo(train_job(settings, history, report=settings.reports_dir / "training"))

    if any(history.glob("date=*/*.parquet")):
        unchecked = champion is not None  # a history this run has not validated (it trained no model)
        # the days the seed reads (from the trainer's snapshot on, if it has one)
        check = (lambda root, since: validate(root, "card states not seeded", since)) if unchecked else None
        echo(seed_card_states(settings, history, check=check, audit=settings.pg_conninfo(reveal=True)))
    else:
        echo(f"init: no history in {history}; the workers start without card states")

    password = os.environ.get("FRAUDSTREAM_ADMIN_PASSWORD")
    if password and not any(u["role"] == "admin" for u in ui.users()):
        ui.add_user(admin, password, "admin")
        ui.log("init", "add_user", admin, {"role": "admin"})
        echo(f"init: admin user {admin!r} created")
    echo("init: ready")
