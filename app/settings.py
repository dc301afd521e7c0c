"""The one settings object. Every value comes from an environment variable ``FRAUDSTREAM_<NAME>``.

Defaults match the local services started by ``scripts/services`` so that a fresh checkout works
without configuration; docker-compose sets the same variable names. Secrets have no default.
Build it with :func:`get_settings` (never at import time).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LIVE_REPORT_DAYS = 30  # `fraudstream models live`'s default window


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_", extra="ignore", frozen=True)

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="host:port[,host:port...]")
    topic_transactions: str = "transactions"
    topic_scores: str = "fraud-scores"
    topic_dlq: str = "transactions-dlq"
    topic_feedback: str = "fraud-feedback"
    topic_retrain: str = "retrain-requests"
    topic_partitions: int = Field(4, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for SSL/SASL_SSL (else system CAs)")

    # PostgreSQL (alerts, labels, decision audit, model registry)
    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "fraudstream"
    pg_password: SecretStr | None = None
    pg_db: str = "fraudstream"
    pg_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"

    # Files
    data_dir: Path = Path("data")
    models_dir: Path = Path("models")
    reports_dir: Path = Path("reports")

    # Feature store (Feast) and the stream's offline feature log
    feast_config: Literal["sqlite", "postgres"] = "sqlite"
    feast_dir: Path = Path("data/feast")
    feature_log_dir: Path = Path("data/feature_log")
    label_delay_days: int = Field(
        7,
        ge=0,
        description="Labels take this long: merchant fraud rates use only labels this old; a day joins the"
        " history (export) this long after it ended",
    )
    audit_keep_days: int = Field(
        180,
        ge=0,
        description="Decisions scored this long ago leave PostgreSQL for Parquet files once the history holds"
        " their day and their alert is closed (archive; 0: the database keeps every decision)",
    )
    audit_archive_dir: Path = Field(Path("data/audit_archive"), description="Where the archive writes")
    train_days: int = Field(
        120,
        ge=0,
        description="A training run reads the history's last this many days before its cut-off, the card"
        " states before them from a snapshot (0: every day)",
    )

    # Worker
    app_id: str = "fraudstream"
    worker_threads: int = Field(1, ge=1, description="OpenMP/XGBoost threads per worker process")
    lateness_s: float = Field(300.0, ge=0, description="How far behind a card's latest event an event may be")
    batch_size: int = Field(500, ge=1, description="Micro-batch size of the stream agents")
    # 10 ms (session 11, docs/performance.md): paced p50 / p99 at 500 txn/s 22 / 40 -> 13 / 28 ms, at
    # 1,000 25-26 / 54-63 -> 14-15 / 30-40, at 2,300 37-70 / 100-321 -> 23-40 / 87-553. 5 ms fell behind
    # at 2,300 txn/s in one run of two (the stage's fixed cost a batch); 20 ms was the default from session 8.
    batch_within_s: float = Field(0.01, gt=0, description="Longest wait to fill a micro-batch")
    fetch_max_wait_s: float = Field(
        0.1, gt=0, le=1.5, description="Longest a Kafka fetch waits at the broker for new data (Faust: 1.5 s)"
    )
    batch_trace_dir: Path | None = Field(
        None, description="Write each micro-batch's step times here when the worker stops (the bench)"
    )
    feature_log_keep_days: int = Field(
        60,
        ge=0,
        description="The feature log keeps the days up to this many before its newest (0: every day); the"
        " scheduled trainer also merges each day's parts into one file",
    )
    feature_log_flush_rows: int = Field(20_000, ge=1)
    feature_log_flush_s: float = Field(10.0, gt=0)
    online_flush_s: float = Field(0.5, gt=0, description="Coalescing interval of Feast online writes")
    # The writer is off the scoring path, so it yields the cores to the stream process and the scorer
    # when they are short (session 12: backlog 3,735-4,192 -> 4,266-4,536 txn/s; behind, it coalesces more)
    feature_writer_nice: int = Field(
        10, ge=0, le=19, description="Niceness of the feature writer process (0: as the worker)"
    )
    state_cache_cards: int = Field(
        20_000, ge=0, description="Decoded card states a worker keeps in memory (0: decode every batch)"
    )
    worker_web_port: int = 6066
    metrics_port: int = Field(
        0, ge=0, le=65535, description="The worker's Prometheus /metrics port (0: none)"
    )
    metrics_host: str = Field("127.0.0.1", description="The address /metrics listens on")
    worker_session_timeout_s: float = Field(
        30.0, ge=6, description="A worker silent this long leaves the group; its partitions move"
    )
    recovery_stall_s: float = Field(
        30.0, gt=0, description="A table recovery that gets no changelog message this long is restarted"
    )

    # Scoring (champion model, decisions, explanations)
    scoring: bool = Field(True, description="Score transactions (false: features only)")
    review_threshold: float = Field(0.5, ge=0, le=1, description="Score from which a decision is review")
    decline_threshold: float = Field(0.9, ge=0, le=1, description="Score from which a decision is decline")
    explain_all: bool = Field(False, description="Explain approved decisions too (flagged ones always are)")
    reason_count: int = Field(5, ge=1, description="Reason codes per decision (top-k by |SHAP|)")
    amount_limit: float | None = Field(10_000.0, gt=0, description="Hard limit: above it, decline")
    explore_rate: float = Field(
        0.0, ge=0, le=1,
        description="Share of the model's would-be declines let through (as review) to measure them; 0: none,"
        " 1: all (a new model watched before it may decline)",
    )  # fmt: skip
    explore_max_amount: float | None = Field(
        500.0, gt=0, description="No would-be decline above this amount is let through"
    )
    model_poll_s: float = Field(5.0, gt=0, description="How often workers look for a new champion")
    shadow_model: str | None = Field(None, description="Registry version scored beside the champion")
    merchant_cache_s: float = Field(300.0, ge=0, description="Merchant feature cache in the worker")
    drift_every_s: float = Field(3600.0, gt=0, description="Trainer's drift check period (and window)")
    features_refresh_s: float = Field(
        60.0,
        ge=0,
        description="How often the trainer looks for a new audit day to build merchant features for; 0: off",
    )
    drift_threshold: float = Field(
        0.3, ge=0, le=1, description="Drifted-column share that requests a retrain"
    )
    drift_max_decisions: int = Field(
        100_000, gt=0, description="A drift window of more decisions is sampled evenly to about this many"
    )
    retrain_fraud_count: int = Field(
        50, ge=1, description="Confirmed frauds since the cut-off that request a retrain"
    )
    promote_max_alert_growth: float = Field(
        2.0,
        ge=0,
        description="A retrained model flagging more than this many times the champion's decisions a day"
        " at the review threshold (on the same holdout) is not promoted on its own; 0: no such check",
    )
    review_capacity_per_day: float = Field(
        100.0,
        ge=0,
        description="Alerts the analysts can review a day: each training run reports the threshold that"
        " fills that queue on its holdout and what it catches, for the model and the champion;"
        " 0: not reported",
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="XGBoost predict and TreeSHAP device")

    # Analyst UI
    ui_host: str = "127.0.0.1"
    ui_port: int = 8080
    ui_secure_cookies: bool = Field(False, description="Set Secure on cookies (serve over HTTPS)")
    ui_login_max_failures: int = Field(
        5, ge=1, description="Failed logins for a name, within the lockout, before it must wait"
    )
    ui_login_lockout_s: float = Field(900.0, gt=0, description="The failed logins' window, and the wait")
    ui_login_max_failures_per_address: int = Field(
        20, ge=0, description="Failed logins from one client address, any names, within the lockout, before"
        " it must wait; 0: no such limit",
    )  # fmt: skip
    ui_forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For gives the client address (comma-separated, or *);"
        " uvicorn's forwarded_allow_ips",
    )
    ui_assignment_s: float = Field(
        1800.0, gt=0, description="An alert an analyst took is theirs this long (then free for the next)"
    )
    ui_alert_target_s: float = Field(
        3600.0, gt=0, description="An alert should have its verdict within this long: the queue counts those"
        " waiting longer, and those closed later",
    )  # fmt: skip
    ui_metrics_port: int = Field(
        0, ge=0, le=65535, description="The UI's Prometheus /metrics port, the queue's health (0: none);"
        " on FRAUDSTREAM_METRICS_HOST",
    )  # fmt: skip
    ui_live_window_s: float = Field(
        7 * 86400.0, gt=0, description="The models page's live performance: decisions of this last window"
    )
    ui_live_max_decisions: int = Field(
        200_000, gt=0, description="A live window holding more decisions is sampled evenly to about this many"
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.decline_threshold < self.review_threshold:
            raise ValueError("decline_threshold must not be below review_threshold")
        return self

    @model_validator(mode="after")
    def _keeps_the_report_windows(self) -> Settings:
        # the live performance reports read the decisions of their window from the database
        least = max(LIVE_REPORT_DAYS, math.ceil(self.ui_live_window_s / 86400))
        if 0 < self.audit_keep_days < least:
            raise ValueError(
                f"audit_keep_days must be 0 (keep every decision) or at least {least}: the live performance"
                f" reports read the last {least} days of decisions from the database"
            )
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            protocol = self.kafka_security_protocol
            raise ValueError(f"kafka_security_protocol {protocol} needs a SASL username and password")
        return self

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def kafka_security(self) -> dict[str, object]:
        """kafka-python client options for the broker's security protocol (empty for PLAINTEXT)."""
        protocol = self.kafka_security_protocol
        options: dict[str, object] = {}
        if protocol != "PLAINTEXT":
            options["security_protocol"] = protocol
        if protocol.startswith("SASL"):
            assert self.kafka_sasl_password is not None  # checked by _sasl_complete
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if protocol.endswith("SSL") and self.kafka_ssl_cafile is not None:
            options["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return options

    def pg_conninfo(self, *, reveal: bool = False) -> str:
        """libpq URL; the password is masked unless ``reveal`` (never log a revealed one)."""
        password = ""
        if self.pg_password is not None:
            secret = quote(self.pg_password.get_secret_value(), safe="")
            password = ":" + (secret if reveal else "***")
        return (
            f"postgresql://{quote(self.pg_user, safe='')}{password}@{self.pg_host}:{self.pg_port}"
            f"/{quote(self.pg_db, safe='')}?sslmode={self.pg_sslmode}"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
