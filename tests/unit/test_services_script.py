"""scripts/services: the pure parts (config rendering, the Kafka readiness probe) without services."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import struct
import threading
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

from app.settings import Settings
from tests.services import ROOT


@pytest.fixture(scope="module")
def services() -> ModuleType:
    loader = SourceFileLoader("fraudstream_services", str(ROOT / "scripts" / "services"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_script_and_settings_agree_on_addresses(
    services: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "FRAUDSTREAM_KAFKA_BOOTSTRAP",
        "FRAUDSTREAM_PG_HOST",
        "FRAUDSTREAM_PG_PORT",
        "FRAUDSTREAM_PG_USER",
        "FRAUDSTREAM_PG_DB",
    ):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    host, port = services.kafka_address()
    assert f"{host}:{port}" == s.kafka_servers[0]
    assert services.pg_settings() == {
        "host": s.pg_host,
        "port": str(s.pg_port),
        "user": s.pg_user,
        "db": s.pg_db,
    }

    monkeypatch.setenv("FRAUDSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:29092,other:1")
    monkeypatch.setenv("FRAUDSTREAM_PG_PORT", "25432")
    assert services.kafka_address() == ("127.0.0.1", 29092)
    assert services.pg_settings()["port"] == "25432"


def test_kafka_config_is_single_node_kraft_with_fast_rebalance(services: ModuleType, tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in services.kafka_properties(tmp_path, "127.0.0.1", 19092, 19093).splitlines()
        if line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092,SASL_PLAINTEXT://127.0.0.1:19094"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "PLAIN"
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert 'user_fraudstream="fraudstream-local"' in jaas
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path)


def _serve_once(reply: bytes) -> tuple[int, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def handle() -> None:
        conn, _ = server.accept()
        with conn, server:
            size = struct.unpack(">i", conn.recv(4))[0]
            request = conn.recv(size)
            assert struct.unpack(">hh", request[:4]) == (18, 0), "expected ApiVersions v0"
            conn.sendall(reply)

    thread = threading.Thread(target=handle, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize(("error_code", "expected"), [(0, True), (35, False)])
def test_kafka_probe_reads_the_api_versions_error_code(
    services: ModuleType, error_code: int, expected: bool
) -> None:
    port, thread = _serve_once(struct.pack(">iih", 6, 1, error_code))
    assert services.kafka_api_versions_ok("127.0.0.1", port) is expected
    thread.join(timeout=5)


def test_kafka_probe_is_false_when_nothing_listens(services: ModuleType) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    assert services.kafka_api_versions_ok("127.0.0.1", port) is False


def test_kafka_nice_is_checked_before_the_broker_starts(
    services: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_NICE", raising=False)
    assert services.kafka_nice() == "10"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_NICE", " -5 ")
    assert services.kafka_nice() == "-5"
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_NICE", "low")
    with pytest.raises(services.ServiceError, match="FRAUDSTREAM_KAFKA_NICE must be a whole number"):
        services.kafka_nice()


@pytest.fixture
def memory(services: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A stand-in for /dev/shm with room to spare."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(services, "KAFKA_MEMORY", shm)
    monkeypatch.setattr(services, "KAFKA_MEMORY_MIN_FREE", 0)
    monkeypatch.delenv("FRAUDSTREAM_KAFKA_DATA_DIR", raising=False)
    return shm


def test_the_broker_log_goes_to_memory_and_stays_there(
    services: ModuleType, memory: Path, tmp_path: Path
) -> None:
    base = tmp_path / "services" / "kafka"
    data = services.kafka_data(base)
    assert data == base / "data"
    assert data.is_symlink()
    target = data.readlink()
    assert target.parent == memory
    assert target.name.startswith("fraudstream-kafka-")
    assert (target.stat().st_mode & 0o777) == 0o700
    (data / "meta.properties").write_text("formatted")
    assert services.kafka_data(base) == data  # kept
    assert (target / "meta.properties").read_text() == "formatted"
    other = services.kafka_data(tmp_path / "elsewhere" / "kafka").readlink()
    assert other != target  # another checkout's broker gets its own folder


def test_a_reboot_that_emptied_memory_gets_a_fresh_folder(
    services: ModuleType, memory: Path, tmp_path: Path
) -> None:
    base = tmp_path / "kafka"
    target = services.kafka_data(base).readlink()
    shutil.rmtree(target)  # what a reboot does to tmpfs
    data = services.kafka_data(base)
    assert target.is_dir()
    assert not (data / "meta.properties").exists()  # so `up` formats the storage again


def test_the_broker_log_stays_on_disk_without_room_in_memory(
    services: ModuleType, memory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "KAFKA_MEMORY_MIN_FREE", 1 << 62)
    assert services.kafka_memory_dir(tmp_path) is None
    monkeypatch.setattr(services, "KAFKA_MEMORY", tmp_path / "missing")
    monkeypatch.setattr(services, "KAFKA_MEMORY_MIN_FREE", 0)
    assert services.kafka_memory_dir(tmp_path) is None
    data = services.kafka_data(tmp_path / "kafka")
    assert data.is_dir()
    assert not data.is_symlink()


def test_the_broker_log_goes_where_the_variable_says(
    services: ModuleType, memory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_DATA_DIR", str(tmp_path / "disk" / "kafka-log"))
    data = services.kafka_data(tmp_path / "kafka")
    assert data.readlink() == tmp_path / "disk" / "kafka-log"
    assert data.readlink().is_dir()


def test_a_link_planted_in_memory_is_refused(services: ModuleType, memory: Path, tmp_path: Path) -> None:
    base = tmp_path / "kafka"
    target = services.kafka_memory_dir(base)
    (tmp_path / "theirs").mkdir()
    target.symlink_to(tmp_path / "theirs")
    with pytest.raises(services.ServiceError, match="not this user's folder"):
        services.kafka_data(base)


def test_forgetting_the_data_deletes_the_folder_in_memory(
    services: ModuleType, memory: Path, tmp_path: Path
) -> None:
    base = tmp_path / "kafka"
    data = services.kafka_data(base)
    target = data.readlink()
    (data / "segment.log").write_bytes(b"x")
    services.kafka_forget_data(base)
    assert not target.exists()
    assert not data.is_symlink()
    assert not data.exists()


def test_a_log_folder_that_cannot_be_made_is_one_line(
    services: ModuleType, memory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_DATA_DIR", str(tmp_path / "a-file" / "log"))
    with pytest.raises(services.ServiceError, match=r"cannot make the log folder .*a-file/log"):
        services.kafka_data(tmp_path / "kafka")
