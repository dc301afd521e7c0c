from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from features.store import yaml_env


def test_defaults_point_at_the_local_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FRAUDSTREAM_KAFKA_BOOTSTRAP", "FRAUDSTREAM_PG_PORT", "FRAUDSTREAM_PG_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.kafka_servers == ["127.0.0.1:19092"]
    assert s.pg_port == 15432
    assert s.pg_password is None
    assert s.pg_conninfo() == "postgresql://fraudstream@127.0.0.1:15432/fraudstream?sslmode=prefer"


def test_environment_overrides_and_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    monkeypatch.setenv("FRAUDSTREAM_PG_PASSWORD", "p@ss/word")
    monkeypatch.setenv("FRAUDSTREAM_PG_SSLMODE", "require")
    s = Settings()
    assert s.kafka_servers == ["k1:9092", "k2:9092"]
    assert "p@ss" not in s.pg_conninfo()
    assert "***" in s.pg_conninfo()
    assert s.pg_conninfo(reveal=True).startswith("postgresql://fraudstream:p%40ss%2Fword@")
    assert s.pg_conninfo(reveal=True).endswith("sslmode=require")
    assert "p@ss" not in repr(s)


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_PG_SSLMODE", "sometimes")
    with pytest.raises(ValidationError):
        Settings()


def test_the_feast_config_environment_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDSTREAM_PG_DB", raising=False)
    with yaml_env(Settings(pg_db="elsewhere")):
        assert os.environ["FRAUDSTREAM_PG_DB"] == "elsewhere"
    assert "FRAUDSTREAM_PG_DB" not in os.environ
    assert Settings().pg_db == "fraudstream"


def test_kafka_security_options_for_sasl_and_ssl(tmp_path: Path) -> None:
    assert Settings().kafka_security() == {}
    sasl = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="svc",
        kafka_sasl_password="s3cret", kafka_ssl_cafile=tmp_path / "ca.pem",
    )  # fmt: skip
    assert sasl.kafka_security() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret", "ssl_cafile": str(tmp_path / "ca.pem"),
    }  # fmt: skip
    assert "s3cret" not in repr(sasl)
    with pytest.raises(ValidationError, match="needs a SASL username and password"):
        Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="svc")
