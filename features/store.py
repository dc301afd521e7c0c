"""The Feast feature store: definitions (built from settings, never at import) and access."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.settings import Settings
from features.card import FEATURE_NAMES
from features.merchant import MERCHANT_FEATURES

if TYPE_CHECKING:
    from feast import FeatureStore

REPO = Path(__file__).resolve().parent / "repo"
CARD_VIEW = "card_features"
MERCHANT_VIEW = "merchant_features"


def skip_typeguard() -> None:
    """Import Feast without typeguard's instrumentation (call before the first ``import feast``).

    Feast wraps its classes in typeguard's ``@typechecked``, which re-parses a module's source for
    every decorated class: 242 parses, ~4.5 s of CPU on ``import feast``, in every process that
    opens the store (the worker, its online writer, each CLI command). They are Feast's checks of
    its own argument types; the decorator becomes a no-op so Feast's functions run as written.
    """
    if "feast" in sys.modules:
        return
    import typeguard  # noqa: PLC0415

    def typechecked(target: Any = None, **_: Any) -> Any:
        return target if target is not None else _identity

    typeguard.typechecked = typechecked


def _identity(target: Callable[..., Any]) -> Callable[..., Any]:
    return target


@contextmanager
def yaml_env(settings: Settings) -> Iterator[None]:
    """feature_store.yaml reads the same FRAUDSTREAM_* variables: set them from the settings while
    Feast loads its config, then restore the environment (no leak into later settings objects)."""
    values = {
        "FRAUDSTREAM_FEAST_DIR": str(settings.feast_dir.resolve()),
        "FRAUDSTREAM_PG_HOST": settings.pg_host,
        "FRAUDSTREAM_PG_PORT": str(settings.pg_port),
        "FRAUDSTREAM_PG_USER": settings.pg_user,
        "FRAUDSTREAM_PG_DB": settings.pg_db,
        "FRAUDSTREAM_PG_SSLMODE": settings.pg_sslmode,
        "FRAUDSTREAM_PG_PASSWORD": settings.pg_password.get_secret_value() if settings.pg_password else "",
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def definitions(settings: Settings) -> list[Any]:
    skip_typeguard()
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType  # noqa: PLC0415
    from feast.data_format import ParquetFormat  # noqa: PLC0415
    from feast.types import Float64  # noqa: PLC0415

    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING)
    merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.STRING)
    card_log = FileSource(
        name="card_features_log",
        path=str((settings.feature_log_dir / CARD_VIEW).resolve()),
        timestamp_field="event_time",
        file_format=ParquetFormat(),
    )
    card_push = PushSource(name="card_features_push", batch_source=card_log)
    card_view = FeatureView(
        name=CARD_VIEW,
        entities=[card],
        ttl=timedelta(days=30),
        schema=[Field(name=n, dtype=Float64) for n in FEATURE_NAMES],
        source=card_push,
        online=True,
        description="Per-card velocity and geo features, computed by the stream worker at each transaction.",
    )
    merchant_source = FileSource(
        name="merchant_features_daily",
        path=str((settings.feast_dir / "merchant_features.parquet").resolve()),
        timestamp_field="event_timestamp",
        file_format=ParquetFormat(),
    )
    merchant_view = FeatureView(
        name=MERCHANT_VIEW,
        entities=[merchant],
        ttl=timedelta(days=2),
        schema=[Field(name=n, dtype=Float64) for n in MERCHANT_FEATURES],
        source=merchant_source,
        online=True,
        description="Per-merchant volume and fraud rate, built daily in batch, shifted by the label delay.",
    )
    return [card, merchant, card_push, card_view, merchant_view]


def feature_store(settings: Settings, *, apply: bool = True) -> FeatureStore:
    skip_typeguard()
    from feast import FeatureStore  # noqa: PLC0415 - Feast takes seconds to import

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    yaml = REPO / (
        "feature_store.postgres.yaml" if settings.feast_config == "postgres" else "feature_store.yaml"
    )
    with yaml_env(settings):
        store = FeatureStore(repo_path=str(REPO), fs_yaml_file=yaml)
    if apply:
        store.apply(definitions(settings))
    return store


def close_store(store: FeatureStore) -> None:
    """Release the online store's connections (Feast has no synchronous close, and its Postgres
    online store keeps one connection or pool open for the store's lifetime)."""
    online = store._get_provider().online_store
    for attr in ("_conn", "_conn_pool"):
        conn = getattr(online, attr, None)
        if conn is not None:
            conn.close()
            setattr(online, attr, None)
    engine = getattr(store._registry, "engine", None)
    if engine is not None:
        engine.dispose()
