"""`fraudstream models live` on real PostgreSQL: decisions written as the worker writes them, labels as
the UI (verdicts, an undo) and the feedback agent (chargebacks) write them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.live_performance import live_job
from app.schema import Feedback
from app.scoring.decide import Decision, Policy
from app.scoring.store import migrate as migrate_audit
from app.settings import Settings
from app.ui.store import UiStore
from app.ui.web import create_app
from tests.e2e.cli import fraudstream
from tests.integration.test_ui import PASSWORD, analyst_desk, login
from tests.services import fresh_database
from tests.ui_data import populate

# (score, shadow score) of 8 decisions, review at 0.5 and decline at 0.9: the unit test's case
SCORES = [(0.95, 0.90), (0.70, 0.20), (0.60, 0.30), (0.40, 0.80), (0.30, 0.10), (0.20, 0.05), (0.10, 0.04),
          (0.05, 0.03)]  # fmt: skip


def _outcomes(decisions: list[Decision]) -> list[Decision]:
    thresholds = {"review": 0.5, "decline": 0.9}
    return [
        replace(d, score=s, decision="decline" if s >= 0.9 else "review" if s >= 0.5 else "approve",
                thresholds=thresholds, shadow_version="v-challenger", shadow_score=w)
        for d, (s, w) in zip(decisions, SCORES, strict=True)
    ]  # fmt: skip


def test_live_report_from_verdicts_and_chargebacks(settings: Settings, tmp_path: Path) -> None:
    with fresh_database(settings, "it_live") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui, feedback = analyst_desk(conninfo)
        d = populate(conninfo, tmp_path / "model", n=len(SCORES), adjust=_outcomes)
        since = datetime.now(UTC)
        ui.verdict(d[0].txn.txn_id, "ana", True, "", fraud_type="card_testing")
        ui.verdict(d[1].txn.txn_id, "ana", False, "")
        ui.verdict(d[2].txn.txn_id, "ana", True, "wrong button")
        ui.undo(d[2].txn.txn_id, "ana", since)  # retracted: no label
        feedback.handle([
            Feedback(txn_id=d[3].txn.txn_id, card_id=d[3].txn.card_id, is_fraud=1, label_time=since,
                     source="chargeback", fraud_scenario="compromised_card"),
        ])  # fmt: skip

        out = tmp_path / "live.json"
        run = fraudstream(
            "models", "live", "--window", "1d", "--out", str(out), env={"FRAUDSTREAM_PG_DB": db}
        )
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(out.read_text())
        model = report["models"]["v-ui-test"]
        counted = ("decisions", "flagged", "labelled", "confirmed_frauds", "frauds_flagged",
                   "flagged_settled",
                   "recall", "precision", "precision_settled")  # fmt: skip
        assert {k: model[k] for k in counted} == {
            "decisions": 8, "flagged": 3, "labelled": 3, "confirmed_frauds": 2, "frauds_flagged": 1,
            "flagged_settled": 2, "recall": 0.5, "precision": 0.3333, "precision_settled": 0.5,
        }  # fmt: skip
        (shadow,) = report["shadows"]
        assert (shadow["champion_version"], shadow["shadow_version"]) == ("v-ui-test", "v-challenger")
        assert shadow["equal_volume"] == {"flagged": 3, "champion_frauds": 1, "shadow_frauds": 2}
        lines = run.stdout.splitlines()
        assert lines[0].startswith(
            "live: v-ui-test: 8 decisions, 3 flagged; 2 confirmed frauds, recall 0.500 (95 % 0.095-0.905),"
            " precision 0.333 (95 % 0.061-0.792),"
        )
        assert lines[0].endswith("precision 0.500 (95 % 0.095-0.905) over the 2 flagged with a label")
        assert (model["recall_95"], model["precision_95"]) == ([0.0945, 0.9055], [0.0615, 0.7923])
        by_type = "live: v-ui-test: frauds flagged by type: card_testing 1/1, compromised_card 0/1"
        assert lines[1] == by_type, "which kinds of fraud the model misses"
        assert model["recall_by_type"]["compromised_card"] == {
            "frauds": 1, "flagged": 0, "recall": 0.0, "recall_95": [0.0, 0.7935],
        }  # fmt: skip
        assert lines[2].startswith("shadow: v-challenger beside v-ui-test on 8 decisions")
        assert "the shadow would catch 2, the champion caught 1" in lines[2]

        settled = fraudstream(
            "models", "live", "--window", "1d", "--settle", "2d", env={"FRAUDSTREAM_PG_DB": db}
        )
        assert settled.returncode != 0
        assert "no decisions scored between" in settled.stderr

        # the UI's live page shows the same figures to whoever decides on a promotion
        client = TestClient(create_app(ui, lambda _: None, tmp_path / "reports"), follow_redirects=False)
        login(client, "ana")
        registry_page = client.get("/models").text
        assert 'href="/models/live"' in registry_page
        assert "<title>Models · fraudstream</title>" in registry_page
        page = client.get("/models/live").text
        assert (
            "v-ui-test, confirmed frauds flagged by type: Card testing (small probing payments) 1 of 1; "
            "Card details stolen, used without the card (online) 0 of 1."
        ) in page
        table = page[page.index('<table id="live">') :]
        cells = re.findall(
            r'<td class="num"[^>]*>([^<]*)</td>', table[: table.index("</tr>", table.index("<tbody>"))]
        )
        assert cells == ["8", "3", "2", "0.5", "0.3333", "0.5", "0.8333", "0.75"], cells
        assert (
            "v-ui-test, what the shares could be given how few decisions they rest on (95 % Wilson"
            " intervals): recall 0.095 to 0.905 on 2 confirmed frauds; precision 0.061 to 0.792 on 3 flags;"
            " precision, settled 0.095 to 0.905 on 2 labelled flags."
        ) in page
        assert "With the champion's 3 flags it would have caught <strong>2</strong>" in page
        assert "the champion caught <strong>1</strong>" in page


def test_models_commands_on_a_database_without_tables_fail_in_one_line(settings: Settings) -> None:
    with fresh_database(settings, "it_live_empty") as db:
        for args in (("models", "list"), ("models", "live")):
            run = fraudstream(*args, env={"FRAUDSTREAM_PG_DB": db})
            assert run.returncode == 1, run.stderr
            assert run.stderr.startswith("fraudstream: error: PostgreSQL: relation "), run.stderr
            assert run.stderr.rstrip().endswith("(no tables yet: run fraudstream init)"), run.stderr
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_window_holding_more_than_at_most_is_sampled_evenly_over_its_time(
    settings: Settings, tmp_path: Path
) -> None:
    """40,000 decisions over the last week; every 20th a confirmed fraud, flagged in the first half of
    the week and missed in the second: recall 0.5. Read about 4,000 of them, the sample must say the
    same (the latest 4,000 alone would say 0, the first 4,000 1)."""
    n, every = 40_000, 20
    with fresh_database(settings, "it_live_sample") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui = UiStore(conninfo)
        ui.migrate()
        ui.add_user("ana", PASSWORD, "analyst")
        migrate_audit(conninfo)
        with psycopg.connect(conninfo) as conn:
            conn.execute(
                "insert into decisions (txn_id, card_id, merchant_id, event_time, amount, txn, scored_at,"
                " model_version, score, decision, thresholds, features, reasons, rules)"
                " select 's-' || i, 'c-' || i %% 300, 'm', now(), 1, '{}',"
                " now() - interval '7 days' + (i + 0.5) / %(n)s * interval '7 days', 'v-live',"
                " case when i %% %(every)s = 0 and i < %(n)s / 2 then 0.9 else 0.1 + (i %% 7) / 100.0 end,"
                " case when i %% %(every)s = 0 and i < %(n)s / 2 then 'review' else 'approve' end,"
                " '{\"review\": 0.5, \"decline\": 0.95}', '{}', '[]', '[]'"
                " from generate_series(0, %(n)s - 1) i",
                {"n": n, "every": every},
            )
            conn.execute(
                "insert into labels (txn_id, card_id, is_fraud, source, label_time)"
                " select 's-' || i, 'c-' || i %% 300, true, 'chargeback', now()"
                " from generate_series(0, %s - 1, %s) i",
                (n, every),
            )
            conn.execute("analyze")

        whole = live_job(conninfo, timedelta(days=8), timedelta(0), None, at_most=None)
        assert whole[0].startswith(f"live: v-live: {n:,} decisions, {n // every // 2:,} flagged; "
                                   f"{n // every:,} confirmed frauds, recall 0.500"), whole  # fmt: skip
        out = tmp_path / "sampled.json"
        run = fraudstream("models", "live", "--window", "8d", "--at-most", "4000", "--out", str(out),
                          env={"FRAUDSTREAM_PG_DB": db})  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(out.read_text())
        sample, model = report["sample"], report["models"]["v-live"]
        assert 3_000 <= sample["decisions_read"] == model["decisions"] <= 5_000, sample
        assert abs(sample["decisions_in_window"] - n) <= n / 10, sample
        assert sample["fraction"] == pytest.approx(
            sample["decisions_read"] / sample["decisions_in_window"], 1e-3
        )
        assert model["recall"] == pytest.approx(0.5, abs=0.05), model
        assert model["confirmed_frauds"] == pytest.approx(sample["fraction"] * n / every, rel=0.1), model
        lines = run.stdout.splitlines()
        assert lines[0].startswith(f"live: a sample: {sample['decisions_read']:,} of ~"), lines
        assert lines[1].startswith(f"live: v-live: {model['decisions']:,} decisions"), lines

        client = TestClient(create_app(ui, lambda _: None, tmp_path / "reports", live_at_most=4_000),
                            follow_redirects=False)  # fmt: skip
        login(client, "ana")
        page = client.get("/models/live").text
        assert '<p class="muted" id="sampled">Measured on a sample: ' in page, page
        client = TestClient(create_app(ui, lambda _: None, tmp_path / "reports", live_at_most=n),
                            follow_redirects=False)  # fmt: skip
        login(client, "ana")
        assert 'id="sampled"' not in client.get("/models/live").text, "a window within at_most is read whole"


def test_would_be_declines_let_through_measure_the_declines_precision(
    settings: Settings, tmp_path: Path
) -> None:
    """A declined payment brings no chargeback: only the would-be declines let through
    (``FRAUDSTREAM_EXPLORE_RATE``) say how many of the model's declines were good customers'."""
    policy = Policy(0.5, 0.9, explore_rate=0.05)

    def declines(decisions: list[Decision]) -> list[Decision]:  # 7 would-be declines, 5 let through
        shift = {3: timedelta(days=10)}  # past the chargeback window of the audit's clock
        return [
            replace(d, score=0.95, decision="review" if i < 5 else "decline",
                    reasons=[policy.explore_reason(), *d.reasons] if i < 5 else d.reasons,
                    thresholds=policy.thresholds(),
                    txn=d.txn.model_copy(update={"event_time": d.txn.event_time - shift.get(i, timedelta())}))
            for i, d in enumerate(decisions)
        ]  # fmt: skip

    with fresh_database(settings, "it_live_explore") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui, feedback = analyst_desk(conninfo)
        d = populate(conninfo, tmp_path / "model", n=7, adjust=declines)  # nobody labels the 7th
        now = datetime.now(UTC)
        # 3 of the 5 let through were charged back; the 4th, 10 days before the audit's clock, is presumed
        # genuine; the 5th, unlabelled within the chargeback window, is too recent to tell
        feedback.handle([
            Feedback(txn_id=x.txn.txn_id, card_id=x.txn.card_id, is_fraud=1, label_time=now,
                     source="chargeback")
            for x in d[:3]
        ])  # fmt: skip
        feedback.handle([  # a decline labelled (an analyst's call, say) is not a measurement
            Feedback(txn_id=d[5].txn.txn_id, card_id=d[5].txn.card_id, is_fraud=1, label_time=now,
                     source="chargeback")
        ])  # fmt: skip
        out = tmp_path / "live.json"
        run = fraudstream(
            "models", "live", "--window", "1d", "--out", str(out), env={"FRAUDSTREAM_PG_DB": db}
        )
        assert run.returncode == 0, run.stderr[-3000:]
        measured = json.loads(out.read_text())["models"]["v-ui-test"]["declines_measured"]
        assert measured == {"explored": 5, "pending": 1, "frauds": 3, "decline_precision": 0.75,
                            "decline_precision_95": [0.3006, 0.9544]}  # fmt: skip
        assert (
            "live: v-ui-test: 5 would-be declines let through to measure them (1 too recent to tell),"
            " 3 fraud: the declines' precision 0.750 (95 % 0.301-0.954)"
        ) in run.stdout
        # the 4 whose outcome is known stand for the 2 that are not (the 5th, too recent, and the 7th)
        weighted = json.loads(out.read_text())["models"]["v-ui-test"]["weighted"]
        assert {k: weighted[k] for k in ("let_through", "left_out", "decisions", "confirmed_frauds",
                                         "recall", "precision")} == {
            "let_through": 4, "left_out": 2, "decisions": 7.0, "confirmed_frauds": 5.5, "recall": 1.0,
            "precision": round(5.5 / 7, 4),
        }  # fmt: skip
        assert (
            "live: v-ui-test: counting each one let through for the declines nobody labelled (2 left out)"
            in run.stdout
        )
        client = TestClient(create_app(ui, lambda _: None, tmp_path / "reports"), follow_redirects=False)
        login(client, "ana")
        page = client.get("/models/live").text
        assert (
            "were let through to measure its declines (1 too recent to tell: unlabelled, their chargeback may"
            " still come); 3 turned out fraud: its declines' precision is 0.750"
        ) in page
        assert "about 25 % of what it declines are good customers' payments" in page
        assert 'id="weighted-live"' in page
        assert "recall <strong>1.0</strong>" in page
        assert 'id="explored"' in client.get(f"/alerts/{d[3].txn.txn_id}").text, "the analyst is told why"
        assert 'id="explored"' not in client.get(f"/alerts/{d[5].txn.txn_id}").text
