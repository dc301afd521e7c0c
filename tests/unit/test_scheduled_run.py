"""The scheduled run's steps: a failed archive is logged and the training goes on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.audit_export import Export
from app.errors import FraudstreamError
from app.settings import Settings
from features.log_compaction import Compacted
from training import jobs


def _steps(monkeypatch: pytest.MonkeyPatch, archive: object) -> tuple[list[str], str]:
    calls: list[str] = []

    def step(name: str, line: str) -> object:
        def run(*_: object, **__: object) -> str:
            calls.append(name)
            return line

        return run

    clock = datetime(2026, 3, 20, tzinfo=UTC)
    monkeypatch.setattr("app.audit_export.export_audit", lambda *_: Export(clock, None, (), 0, 0, 0))
    monkeypatch.setattr("app.audit_archive.archive_audit", archive)
    monkeypatch.setattr("features.log_compaction.compact_feature_log", lambda *_: Compacted(1, 3, 40, 0, ()))
    monkeypatch.setattr(jobs, "train_job", step("train", "train: v1 ..."))
    monkeypatch.setattr("features.jobs.build_merchant_features", step("features", "merchants ..."))
    return calls, jobs.scheduled_train(Settings(), Path("history"))


def test_a_failed_archive_is_logged_and_the_run_trains_all_the_same(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def busy(*_: object) -> None:
        raise FraudstreamError("archive: another archive run is in progress; try again when it ends")

    with caplog.at_level(logging.ERROR, logger="fraudstream.trainer"):
        calls, line = _steps(monkeypatch, busy)
    assert calls == ["train", "features"]
    assert line == (
        "export: nothing new: settled through None (audit clock 2026-03-20 00:00); the history is unchanged;"
        " archive: another archive run is in progress; try again when it ends (logged; the run goes on);"
        " feature log: 3 parts of 1 day(s) merged into one file a day (40 rows); train: v1 ...; merchants ..."
    )
    assert [r.getMessage() for r in caplog.records] == [
        "trainer: archive: another archive run is in progress; try again when it ends"
    ]


def test_any_other_failure_of_the_archive_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        _steps(monkeypatch, broken)
