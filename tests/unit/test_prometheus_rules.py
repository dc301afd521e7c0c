"""docs/prometheus/alerts.yml: well-formed rules that name only metrics the workers and the UI export."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import promql_parser
import yaml
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from app.ui.metrics import QueueCollector
from app.worker.faust_app import Counters
from app.worker.metrics import WorkerCollector

RULES = Path(__file__).parents[2] / "docs" / "prometheus" / "alerts.yml"


def exported() -> set[str]:
    """Every sample name the two collectors write, with figures in every optional series."""
    counters = Counters(lag={0: 3}, stage_s={"features": 1.0})
    health = {"open": 1, "held": 0, "oldest": datetime.now(UTC) - timedelta(hours=2), "late": 1,
              "closed": 2, "fraud": 1, "closed_late": 0, "by_chargeback": 1, "median_to_verdict_s": 60.0,
              "p90_to_verdict_s": 90.0}  # fmt: skip
    store = SimpleNamespace(queue_health=lambda target: health)  # a stub; the real one: test_ui
    registry = CollectorRegistry()
    registry.register(WorkerCollector(counters, waiting=lambda: 0))
    registry.register(QueueCollector(store, timedelta(hours=1)))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}


def test_every_rule_is_complete_and_names_only_exported_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 7
    names = exported()
    assert "fraudstream_consumer_lag_messages" in names
    assert "fraudstream_alerts_waiting_beyond_target" in names
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"page", "ticket", "team"}, rule
        assert rule["annotations"]["summary"], rule
        assert re.fullmatch(r"\d+m", rule["for"]), rule
        used = set(re.findall(r"\bfraudstream_[a-z0-9_]+", rule["expr"] + rule["annotations"]["summary"]))
        assert used or 'up{job="fraudstream-' in rule["expr"], rule["alert"]
        assert used <= names, (rule["alert"], used - names)
        promql_parser.parse(rule["expr"])  # raises on anything Prometheus would refuse to load
    assert len({r["alert"] for r in rules}) == len(rules), "alert names are unique"


def test_every_alert_has_its_runbook_section() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule["alert"] for group in groups for rule in group["rules"]]
    runbook = (RULES.parents[1] / "runbook.md").read_text()
    sections = re.findall(r"^## (\S+)$", runbook, re.MULTILINE)
    assert sections == alerts, "one section per alert, in the rules' order"


def test_every_alert_fires_after_its_for_with_its_labels_and_summary_and_not_on_healthy_series() -> None:
    """docs/prometheus/alerts_test.yml, run by Prometheus's own promtool: each alert's threshold,
    ``for:`` and rendered summary on synthetic series, and quiet on healthy ones."""
    promtool = Path(sys.prefix) / "bin" / "promtool"
    assert promtool.exists(), "no promtool in the virtualenv: run scripts/install"
    run = subprocess.run(
        [str(promtool), "test", "rules", "alerts_test.yml"], cwd=RULES.parent, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout
    cases = yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
    tested = {
        check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]
    }
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert tested == {rule["alert"] for group in groups for rule in group["rules"]}, "each alert seen firing"
