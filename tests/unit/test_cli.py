from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import cli, main
from app.errors import FraudstreamError
from app.settings import Settings

CONTRACT_COMMANDS = ["simulate", "produce", "validate", "train", "worker", "ui", "drift", "demo", "bench"]
runner = CliRunner()


def test_help_lists_every_contract_command() -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in CONTRACT_COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", CONTRACT_COMMANDS)
def test_each_command_has_help(name: str) -> None:
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_main_turns_a_bad_setting_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FRAUDSTREAM_PG_PORT", "not-a-port")
    monkeypatch.setattr("app.cli.cli", lambda **_: Settings())
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("fraudstream: error: invalid setting FRAUDSTREAM_PG_PORT:")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUDSTREAM_AUDIT_KEEP_DAYS": "29"}, "keep every decision) or at least 30"),
        ({"FRAUDSTREAM_AUDIT_KEEP_DAYS": "30", "FRAUDSTREAM_UI_LIVE_WINDOW_S": "3888000"}, "at least 45"),
        ({"FRAUDSTREAM_REVIEW_THRESHOLD": "0.9", "FRAUDSTREAM_DECLINE_THRESHOLD": "0.5"}, "decline_thr"),
    ],
)
def test_main_turns_settings_that_do_not_fit_together_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("app.cli.cli", lambda **_: Settings())
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("fraudstream: error: invalid settings: Value error, "), err
    assert message in err


def test_retention_off_or_long_enough_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for days in ("0", "30", "3650"):
        monkeypatch.setenv("FRAUDSTREAM_AUDIT_KEEP_DAYS", days)
        assert Settings().audit_keep_days == int(days)


def test_main_turns_a_fraudstream_error_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(**_: object) -> None:
        raise FraudstreamError("history folder data/x does not exist")

    monkeypatch.setattr("app.cli.cli", boom)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "fraudstream: error: history folder data/x does not exist\n"


def test_bench_repeat_runs_the_protocol_and_prints_each_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    got: dict[str, Any] = {}

    def fake(settings: Settings, out: Path, **kwargs: Any) -> dict[str, Any]:
        got.update(out=out, **kwargs)
        row = {
            "file": "p-r1.json",
            "p50_ms": 22.0,
            "p99_ms": 46.0,
            "scored_per_s": 2300.1,
            "steal_percent": 0.1,
        }
        return {"runs": [row | {"lost": 0}], "p99_ms": {"median": 46.0, "min": 46.0, "max": 46.0},
                "runs_within_target": 1, "lost": 0}  # fmt: skip

    monkeypatch.setattr("app.bench_repeat.run_repeated", fake)
    out = tmp_path / "p.json"
    args = [
        "bench",
        "--rate",
        "2300",
        "--repeat",
        "2",
        "--warmup",
        "1",
        "--target-p99-ms",
        "40",
        "--out",
        str(out),
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert got == {
        "out": out, "repeat": 2, "warmup": 1, "target_p99_ms": 40.0, "model_dir": None, "rate": 2300.0,
        "duration_s": 30.0, "workers": 1, "customers": 2000,
    }  # fmt: skip
    assert "p-r1.json: event->score p50 22.0 ms p99 46.0 ms" in result.output
    assert "2 runs: p99 median 46.0 ms (min 46.0, max 46.0); 1 within 40 ms" in result.output


def test_bench_repeat_fails_when_a_run_lost_transactions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = {
        "runs": [],
        "p99_ms": {"median": 1.0, "min": 1.0, "max": 1.0},
        "runs_within_target": 0,
        "lost": 3,
    }
    monkeypatch.setattr("app.bench_repeat.run_repeated", lambda *a, **k: summary)
    result = runner.invoke(cli, ["bench", "--repeat", "2", "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0
    assert isinstance(result.exception, FraudstreamError)
    assert "3 transactions were not scored" in str(result.exception)


def test_bench_repeat_is_refused_for_the_features_suite(tmp_path: Path) -> None:
    result = runner.invoke(
        cli, ["bench", "--suite", "features", "--repeat", "3", "--out", str(tmp_path / "f.json")]
    )
    assert result.exit_code != 0
    assert "for the pipeline suite" in str(result.exception)
