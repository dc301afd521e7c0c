"""``fraudstream worker``, ``ui`` and ``train --schedule`` as child processes: for the demo, the bench,
the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from app.errors import FraudstreamError
from app.settings import Settings

READY = b"feature store ready"
WORKER = "from app.cli import main; main()"  # ``python -c`` code that runs the CLI


def isolated_env(name: str, workdir: Path) -> dict[str, str]:
    """Environment for a worker with its own app id, topics and folders (nothing shared)."""
    return {
        "FRAUDSTREAM_APP_ID": name,
        "FRAUDSTREAM_TOPIC_TRANSACTIONS": f"{name}-tx",
        "FRAUDSTREAM_TOPIC_DLQ": f"{name}-dlq",
        "FRAUDSTREAM_TOPIC_SCORES": f"{name}-scores",
        "FRAUDSTREAM_TOPIC_FEEDBACK": f"{name}-fb",
        "FRAUDSTREAM_TOPIC_RETRAIN": f"{name}-retrain",
        "FRAUDSTREAM_DATA_DIR": str(workdir / "data"),
        "FRAUDSTREAM_FEAST_DIR": str(workdir / "feast"),
        "FRAUDSTREAM_FEATURE_LOG_DIR": str(workdir / "log"),
        "FRAUDSTREAM_FEATURE_LOG_FLUSH_S": "1",
    }


def settings_for(env: Mapping[str, str]) -> Settings:
    """The settings a process started with ``env`` sees (over this process's environment)."""
    return Settings.model_validate({k.removeprefix("FRAUDSTREAM_").lower(): v for k, v in env.items()})


def _answers_ok(url: str) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - a local http URL
            return bool(answer.read() == b"ok")
    except OSError:
        return False


@contextmanager
def running_ui(
    log: Path, port: int, env: Mapping[str, str] | None = None, ready_timeout_s: float = 60
) -> Iterator[str]:
    """Start ``fraudstream ui`` on 127.0.0.1:``port``; yield its URL once /healthz answers; stop it."""
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from app.cli import main; main()", "ui", "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _answers_ok(f"{url}/healthz"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise FraudstreamError(f"the UI did not start (log: {log})")
                time.sleep(0.5)
            yield url
        finally:
            _stop(proc)


@contextmanager
def running_worker(
    log: Path, env: Mapping[str, str] | None = None, *, loglevel: str = "info", ready_timeout_s: float = 180,
    code: str = WORKER,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Start the worker, wait until its feature store is ready, stop it (SIGTERM) on exit. ``code``:
    the ``python -c`` program that runs the CLI (tests run a worker with a fault injected)."""
    with running_workers([log], env, loglevel=loglevel, ready_timeout_s=ready_timeout_s, code=code) as procs:
        yield procs[0]


@contextmanager
def running_workers(
    logs: Sequence[Path], env: Mapping[str, str] | None = None, *, loglevel: str = "info",
    ready_timeout_s: float = 180, code: str = WORKER,
) -> Iterator[list[subprocess.Popen[bytes]]]:  # fmt: skip
    """Start one worker per log file all at once (they join the consumer group together), wait
    until every one's feature store is ready, stop them (SIGTERM) on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as files:
        try:
            for log in logs:
                log.parent.mkdir(parents=True, exist_ok=True)
                out = files.enter_context(log.open("wb"))
                proc = subprocess.Popen(
                    [sys.executable, "-c", code, "worker", "-l", loglevel],
                    stdout=out, stderr=subprocess.STDOUT,
                    env={"FRAUDSTREAM_FEATURE_LOG_FLUSH_S": "2", **os.environ, **(env or {})},
                )  # fmt: skip
                procs.append(proc)
            deadline = time.monotonic() + ready_timeout_s
            for proc, log in zip(procs, logs, strict=True):
                while READY not in log.read_bytes():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        last = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                        raise FraudstreamError(
                            f"the stream worker did not start: {last[0][:200]} (log: {log})"
                        )
                    time.sleep(0.5)
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)  # reaped: no process left running behind the caller


@contextmanager
def running_trainer(
    log: Path, history: Path, env: Mapping[str, str] | None = None, cron: str = "0 2 * * *"
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the scheduled trainer as compose runs it (``train --history H --schedule CRON``: on the
    cron and on every retrain request); stop it (SIGTERM) on exit, a run in progress with it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, "train", "--history", str(history), "--schedule", cron],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        try:
            yield proc
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
