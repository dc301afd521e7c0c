"""The ``fraudstream`` command line: a thin layer over typed job functions.

Every sub-command exits 0 on success and non-zero with a one-line cause on failure; a command
whose issue has not landed yet says so and exits 2.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from pydantic import ValidationError

from app.errors import FraudstreamError

cli = typer.Typer(
    name="fraudstream",
    help="Real-time card-fraud detection: Kafka + Faust features, Feast, XGBoost scores with SHAP reasons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NOT_IMPLEMENTED_EXIT = 2
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _not_implemented(command: str, issue: int) -> NoReturn:
    typer.echo(f"fraudstream {command}: not implemented yet (issue #{issue})", err=True)
    raise typer.Exit(NOT_IMPLEMENTED_EXIT)


def _placeholder(name: str, issue: int, summary: str) -> None:
    def command() -> None:
        _not_implemented(name, issue)

    command.__doc__ = f"{summary} (not implemented yet: issue #{issue})"
    cli.command(name=name, context_settings=_PASS_THROUGH)(command)


for _name, _issue, _summary in (
    ("simulate", 3, "Simulate card-transaction history as date-partitioned Parquet."),
    ("produce", 3, "Replay history (or live traffic) into the transactions topic."),
    ("validate", 3, "Validate Parquet history with the Great Expectations suites."),
    ("train", 5, "Train, evaluate and register an XGBoost model."),
    ("worker", 4, "Run the Faust stream worker: features, scores, explanations."),
    ("ui", 7, "Serve the analyst review UI."),
    ("drift", 8, "Report feature and score drift with Evidently."),
    ("demo", 9, "Run the whole system locally with live simulated traffic."),
    ("bench", 10, "Benchmark throughput, latency and explanation cost."),
):
    _placeholder(_name, _issue, _summary)


def main() -> None:
    """Console-script entry point: known failures become one line on stderr, never a traceback."""
    try:
        cli(standalone_mode=True)
    except FraudstreamError as exc:
        typer.echo(f"fraudstream: error: {exc}", err=True)
        sys.exit(1)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        typer.echo(
            f"fraudstream: error: invalid setting FRAUDSTREAM_{field.upper()}: {first['msg']}", err=True
        )
        sys.exit(1)
