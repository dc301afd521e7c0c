from __future__ import annotations

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
