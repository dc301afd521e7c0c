"""Validate Parquet history with a Great Expectations suite stored as JSON in ``expectations/suites``.

``validate_history`` runs the suite over every partition (as written on disk, no coercion), builds
GX data docs into ``<report>/gx``, writes ``<report>/summary.json`` and, when rows fail row-level
expectations (or whole files do not match the schema), ``<report>/quarantine.parquet`` with the
offending rows and their reasons: bad data is kept, never silently dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from app.errors import FraudstreamError
from app.history import iter_history
from app.schema import HISTORY_SCHEMA, WEIGHT

SUITES = Path(__file__).resolve().parent / "suites"


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str
    why: str
    unexpected_count: int | None
    observed: str


@dataclass
class ValidationSummary:
    suite: str
    rows: int
    partitions: int
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    quarantined_rows: int = 0
    data_docs: str = ""
    quarantine: str = ""

    @property
    def success(self) -> bool:
        return not self.failures

    def one_line(self) -> str:
        if self.success:
            return (
                f"validate: ok: {self.rows} rows in {self.partitions} partitions passed "
                f"{self.evaluated} expectations of suite {self.suite!r}"
            )
        worst = "; ".join(
            f"{f.column or 'table'}: {f.why}"
            + (f" ({f.unexpected_count} rows)" if f.unexpected_count else "")
            for f in self.failures[:4]
        )
        more = f"; +{len(self.failures) - 4} more" if len(self.failures) > 4 else ""
        return (
            f"validate: FAILED {len(self.failures)} of {self.evaluated} expectations on {self.rows} rows "
            f"({self.quarantined_rows} quarantined): {worst}{more}"
        )


def load_suite(name: str) -> dict[str, Any]:
    path = SUITES / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SUITES.glob("*.json")))
        raise FraudstreamError(f"unknown suite {name!r} (known: {known})")
    suite: dict[str, Any] = json.loads(path.read_text())
    return suite


def _schema_problems(table_schema: pa.Schema) -> list[str]:
    problems = []
    for expected in HISTORY_SCHEMA:
        if expected.name == WEIGHT and WEIGHT not in table_schema.names:
            continue  # written before the column: its rows weigh 1 (app.history.iter_history)
        if expected.name not in table_schema.names:
            problems.append(f"missing column {expected.name}")
            continue
        actual = table_schema.field(expected.name).type
        if actual != expected.type:
            problems.append(f"{expected.name} is {actual}, expected {expected.type}")
    return problems


def load_for_validation(root: Path, since: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """All partitions (from day ``since``) concatenated as stored, with derived partition_date and
    event_date columns.

    Returns (frame, schema_quarantine, partitions): rows of files whose Parquet schema does not
    match the contract are also copied to the quarantine with the reason.
    """
    frames, bad = [], []
    count = 0
    for part, stored in iter_history(root, since):
        count += 1
        frame = stored.copy()
        frame["partition_date"] = part.day
        event_time = pd.to_datetime(frame.get("event_time"), utc=True, errors="coerce")
        frame["event_date"] = event_time.dt.strftime("%Y-%m-%d")
        problems = _schema_problems(pq.read_schema(part.path))
        if problems:
            rejected = frame.copy()
            rejected["_reason"] = "schema: " + "; ".join(problems)
            rejected["_partition"] = str(part.path)
            bad.append(rejected)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    quarantine = pd.concat(bad, ignore_index=True) if bad else pd.DataFrame()
    return data, quarantine, count


def _gx_run(data: pd.DataFrame, suite_json: dict[str, Any], project: Path) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx  # noqa: PLC0415 - heavy import (10 s), only when validating
    from great_expectations.checkpoint.actions import UpdateDataDocsAction  # noqa: PLC0415
    from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: PLC0415
    from great_expectations.expectations.expectation_configuration import (  # noqa: PLC0415
        ExpectationConfiguration,
    )

    context = gx.get_context(mode="file", project_root_dir=str(project))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.variables.save()
    batch = (
        context.data_sources.add_or_update_pandas("history")
        .add_dataframe_asset(suite_json["name"])
        .add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(name=suite_json["name"], meta=suite_json.get("meta", {}))
    for exp in suite_json["expectations"]:
        suite.add_expectation_configuration(
            ExpectationConfiguration(type=exp["type"], kwargs=exp["kwargs"], meta=exp.get("meta", {}))
        )
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite_json["name"], data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite_json["name"],
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": data})
    docs = context.get_docs_sites_urls()
    return next(iter(result.run_results.values())), (docs[0]["site_url"] if docs else "")


def validate_history(
    root: Path, report: Path, suite_name: str = "transactions", since: str | None = None
) -> ValidationSummary:
    """The history's partitions (from day ``since``: what a training run reads) against the suite."""
    data, quarantine, partitions = load_for_validation(root, since)
    return validate_frame(data, report, suite_name, partitions=partitions, schema_quarantine=quarantine)


def validate_frame(
    data: pd.DataFrame, report: Path, suite_name: str, *, partitions: int = 1,
    schema_quarantine: pd.DataFrame | None = None,
) -> ValidationSummary:  # fmt: skip
    """Run a suite over a DataFrame: data docs, summary.json and the quarantine of failing rows."""
    suite_json = load_suite(suite_name)
    quarantine = schema_quarantine if schema_quarantine is not None else pd.DataFrame()
    data = data.reset_index(drop=True)
    report.mkdir(parents=True, exist_ok=True)
    validation, docs_url = _gx_run(data, suite_json, report)

    summary = ValidationSummary(
        suite=suite_name, rows=len(data), partitions=partitions, evaluated=len(validation.results)
    )
    reasons: dict[int, list[str]] = {}
    for res in validation.results:
        cfg = res.expectation_config
        column = cfg.kwargs.get("column") or cfg.kwargs.get("column_A") or ""
        indices = res.result.get("unexpected_index_list") or []
        for idx in indices:
            reasons.setdefault(int(idx), []).append(f"{cfg.type}({column})")
        if res.success:
            continue
        raised = res.exception_info.get("raised_exception")
        observed = res.result.get("observed_value")
        summary.failures.append(
            Failure(
                expectation=cfg.type,
                column=column,
                why=(cfg.meta or {}).get("why", cfg.type),
                unexpected_count=res.result.get("unexpected_count") or (len(indices) or None),
                observed="error: " + str(res.exception_info.get("exception_message"))[:200]
                if raised
                else repr(observed)[:200],
            )
        )
    if len(quarantine):
        why = "partition files do not match the history schema"
        summary.failures.insert(0, Failure("parquet_schema", "", why, len(quarantine), ""))
    if reasons:
        rows = data.loc[sorted(reasons)].copy()
        rows["_reason"] = ["; ".join(reasons[i]) for i in sorted(reasons)]
        rows["_partition"] = rows.get("partition_date", "")
        quarantine = pd.concat([quarantine, rows], ignore_index=True)
    summary.quarantined_rows = len(quarantine)
    if len(quarantine):
        path = report / "quarantine.parquet"
        # stored as text: a quarantined row may hold values of the wrong type
        pq.write_table(pa.Table.from_pandas(quarantine.astype(str), preserve_index=False), path)
        summary.quarantine = str(path)
    summary.data_docs = docs_url
    (report / "summary.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    return summary
