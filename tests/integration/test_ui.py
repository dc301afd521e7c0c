"""The analyst UI over HTTP on real PostgreSQL and Kafka: login, roles, CSRF, verdicts, labels, feedback."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from psycopg.rows import dict_row

from app.feedback import FeedbackService
from app.kafka_admin import ensure_topics
from app.schema import SCENARIOS, Feedback
from app.scoring.decide import Decision
from app.scoring.store import DecisionStore
from app.settings import Settings
from app.ui.feedback import kafka_feedback
from app.ui.metrics import QueueCollector
from app.ui.store import UiStore
from app.ui.web import create_app
from tests.e2e.cli import fraudstream
from tests.kafka_helpers import drain
from tests.services import fresh_database, unique
from tests.ui_data import T0, populate

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert(1)</script>'; drop table labels; -- \" ) or 1=1 -- %s {0}"
CARD = "4111 1111 1111 1111"  # an analyst pasting a card number into a note


@dataclass
class Ui:
    settings: Settings
    store: UiStore
    decisions: list[Decision]
    reports: Path

    def client(self) -> TestClient:
        app = create_app(self.store, kafka_feedback(self.settings), self.reports)
        return TestClient(app, follow_redirects=False)

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.store.conninfo, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def ui(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    tmp = tmp_path_factory.mktemp("ui")
    with fresh_database(settings, "it_ui") as db:
        s = settings.model_copy(update={"pg_db": db, "topic_feedback": unique("it-ui-fb")})
        ensure_topics(s, [s.topic_feedback])
        store = UiStore(s.pg_conninfo(reveal=True))
        store.migrate()
        store.add_user("ana", PASSWORD, "analyst")
        store.add_user("root-admin", PASSWORD, "admin")
        decisions = populate(store.conninfo, tmp / "model")
        reports = tmp / "reports"
        (reports / "gx" / "uncommitted" / "data_docs" / "local_site").mkdir(parents=True)
        (reports / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").write_text(
            "<h1>docs</h1>"
        )
        (tmp / "secret.txt").write_text("outside the reports folder")
        yield Ui(s, store, decisions, reports)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def analyst_desk(conninfo: str) -> tuple[UiStore, FeedbackService]:
    """The UI's tables with one analyst, ana, and the feedback service that records chargebacks."""
    ui = UiStore(conninfo)
    ui.migrate()
    ui.add_user("ana", PASSWORD, "analyst")
    feedback = FeedbackService(conninfo, threshold=1_000, request_retrain=lambda _: None)
    feedback.migrate()
    return ui, feedback


@dataclass
class Desk:
    """A fresh database with ana's desk and ``populate``'s decisions, a feedback topic of its own."""

    settings: Settings
    store: UiStore
    feedback: FeedbackService
    decisions: list[Decision]
    reports: Path

    @property
    def ids(self) -> list[str]:
        return [d.txn.txn_id for d in self.decisions]

    def client(self) -> TestClient:
        return TestClient(
            create_app(self.store, kafka_feedback(self.settings), self.reports), follow_redirects=False
        )


@contextmanager
def desk(settings: Settings, tmp_path: Path, name: str, n: int) -> Iterator[Desk]:
    with fresh_database(settings, f"it_ui_{name}") as db:
        s = settings.model_copy(update={"pg_db": db, "topic_feedback": unique(f"it-ui-{name}")})
        ensure_topics(s, [s.topic_feedback])
        store, feedback = analyst_desk(s.pg_conninfo(reveal=True))
        yield Desk(s, store, feedback, populate(store.conninfo, tmp_path / "model", n=n), tmp_path)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    form = client.get("/login")
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf": csrf_of(form.text)}
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


def test_everything_but_login_and_health_needs_a_session(ui: Ui) -> None:
    client = ui.client()
    assert client.get("/healthz").text == "ok"
    assert client.get("/favicon.ico").status_code == 204
    for path in (
        "/",
        "/alerts/ui-001",
        "/transactions/ui-001",
        "/search?q=ui-001",
        "/cards/card-ui-0",
        "/models",
        "/models/live",
        "/reports",
        "/reports/fraud",
        "/reports/fraud.csv",
        "/reports/analysts",
        "/admin/users",
        "/admin/block-list",
        "/reports/file/gx/x.html",
    ):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login"
    for path in (
        "/alerts/ui-001/verdict",
        "/alerts/ui-001/undo",
        "/transactions/ui-001/report",
        "/cards/card-ui-0/block",
        "/admin/block-list",
        "/admin/block-list/remove",
        "/admin/users/ana/disable",
        "/alerts/next",
        "/alerts/ui-001/take",
        "/alerts/ui-001/release",
        "/models/v1/promote",
        "/admin/users",
        "/logout",
    ):
        assert client.post(path, data={"csrf": "x", "verdict": "fraud"}).status_code == 401, path
    assert ui.sql("select count(*) as n from labels")[0]["n"] == 0
    assert not ui.sql("select 1 from block_list")


def test_login_needs_the_right_password_and_a_csrf_token(ui: Ui) -> None:
    client = ui.client()
    form = client.get("/login")
    token = csrf_of(form.text)
    assert (
        client.post("/login", data={"username": "ana", "password": PASSWORD, "csrf": "forged"}).status_code
        == 403
    )
    wrong = client.post("/login", data={"username": "ana", "password": "not it at all", "csrf": token})
    assert wrong.status_code == 401
    assert "Wrong username or password" in wrong.text
    hostile = client.post(
        "/login", data={"username": HOSTILE, "password": HOSTILE, "csrf": csrf_of(wrong.text)}
    )
    assert hostile.status_code == 401
    assert ui.sql("select count(*) as n from users")[0]["n"] == 2
    stored = ui.sql("select password_hash from users where username = 'ana'")[0]["password_hash"]
    assert stored.startswith("scrypt$")
    assert PASSWORD not in stored


def test_queue_is_sorted_and_filtered(ui: Ui) -> None:
    client = ui.client()
    login(client, "ana")
    page = client.get("/", params={"sort": "score"})
    ids = re.findall(r'class="alert-link">([^<]+)<', page.text)
    by_score = [d.txn.txn_id for d in sorted(ui.decisions, key=lambda d: (-d.score, d.txn.txn_id))]
    assert ids == by_score
    amounts = re.findall(r'class="alert-link">([^<]+)<', client.get("/", params={"sort": "amount"}).text)
    assert amounts == [d.txn.txn_id for d in sorted(ui.decisions, key=lambda d: -d.txn.amount)]
    declines = re.findall(
        r'class="alert-link">([^<]+)<', client.get("/", params={"decision": "decline"}).text
    )
    assert sorted(declines) == sorted(d.txn.txn_id for d in ui.decisions if d.decision == "decline")
    assert client.get("/", params={"status": "'; drop table alerts; --"}).status_code == 400

    # one row per card: each card's highest score among the alerts the filters keep
    cards = client.get("/", params={"by_card": "true", "sort": "amount"}).text
    top = {}
    for d in sorted(ui.decisions, key=lambda d: (-d.score, d.txn.txn_id)):
        top.setdefault(d.txn.card_id, d)
    expected = [d.txn.txn_id for d in sorted(top.values(), key=lambda d: -d.txn.amount)]
    assert re.findall(r'class="alert-link">([^<]+)<', cards) == expected
    assert '<span class="muted">(2 cards)</span>' in cards
    assert 'id="by-card" checked' in cards
    declines_by_card = client.get("/", params={"by_card": "true", "decision": "decline"}).text
    shown = re.findall(r'class="alert-link">([^<]+)<', declines_by_card)
    best_decline = {}
    for d in sorted(ui.decisions, key=lambda d: (-d.score, d.txn.txn_id)):
        if d.decision == "decline":
            best_decline.setdefault(d.txn.card_id, d.txn.txn_id)
    assert sorted(shown) == sorted(best_decline.values()), "the best of the alerts the filters keep"
    empties = {"by_card": "", "min_score": "", "decision": "", "assigned": ""}  # the form's, the page links'
    assert client.get("/", params=empties).status_code == 200
    assert client.get("/", params={"min_score": "lots"}).status_code == 400


def test_the_queue_says_how_long_alerts_wait_and_how_fast_they_are_closed(
    settings: Settings, tmp_path: Path
) -> None:
    with fresh_database(settings, "it_ui_health") as db:
        s = settings.model_copy(update={"pg_db": db})
        store = UiStore(s.pg_conninfo(reveal=True))
        store.migrate()
        store.add_user("ana", PASSWORD, "analyst")
        ids = [d.txn.txn_id for d in populate(store.conninfo, tmp_path / "model", n=8)]
        minutes_ago = [  # created, closed
            (5, None, "open"), (50, None, "open"), (150, None, "open"), (200, None, "open"),
            (100, 90, "fraud"), (100, 70, "legit"), (100, 20, "fraud"), (60 * 30, 60 * 26, "legit"),
        ]  # fmt: skip
        with psycopg.connect(store.conninfo) as conn:
            for txn_id, (created_min, closed_min, status) in zip(ids, minutes_ago, strict=True):
                conn.execute(
                    "update alerts set created_at = now() - make_interval(mins => %s),"
                    " closed_at = now() - make_interval(mins => %s), status = %s where txn_id = %s",
                    (created_min, closed_min, status, txn_id),
                )
        store.take(ids[1], "ana")
        health = store.queue_health(timedelta(hours=1))
        counts = [health[k] for k in ("open", "held", "late", "closed", "fraud", "closed_late")]
        assert counts == [4, 1, 2, 3, 2, 1], "closed 26 h ago: not counted; 80 min to its verdict: late"
        assert round(health["median_to_verdict_s"]) == 30 * 60  # 10, 30 and 80 minutes
        assert round(health["p90_to_verdict_s"]) == 70 * 60  # 30 + 0.8 * (80 - 30)
        registry = CollectorRegistry()  # the same figures for Prometheus, read when scraped
        registry.register(QueueCollector(store, timedelta(hours=1)))
        scraped = {
            sample.name: sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
        }
        assert scraped["fraudstream_alerts_up"] == 1
        assert [scraped[f"fraudstream_alerts_{name}"] for name in (
            "open", "held", "waiting_beyond_target", "closed_24h", "closed_fraud_24h",
            "closed_beyond_target_24h",
        )] == [4, 1, 2, 3, 2, 1]  # fmt: skip
        assert 200 * 60 <= scraped["fraudstream_alerts_oldest_open_age_seconds"] < 201 * 60
        assert round(scraped["fraudstream_alerts_median_to_verdict_seconds"]) == 30 * 60
        down = CollectorRegistry()
        nowhere = UiStore(s.model_copy(update={"pg_db": "no_such_db"}).pg_conninfo(reveal=True))
        down.register(QueueCollector(nowhere, timedelta(hours=1)))
        assert "fraudstream_alerts_up 0.0" in generate_latest(down).decode().splitlines()

        app = create_app(store, kafka_feedback(s), tmp_path, alert_target=timedelta(hours=1))
        client = TestClient(app, follow_redirects=False)
        login(client, "ana")
        page = client.get("/").text
        assert page.count('class="late"') == 3, "the two alerts waiting beyond the target, and their count"
        line = " ".join(re.search(r'id="queue-health">(.*?)</p>', page, re.S).group(1).split())  # type: ignore[union-attr]
        assert re.sub(r"<[^>]+>", "", line) == (
            "Queue: 4 open (1 held), the oldest 3 h 20 min, 2 waiting longer than 1 h. Last 24 h: 3 closed"
            " (2 fraud), alert to verdict 30 min median, 1 h 10 min 90th percentile, 1 beyond 1 h."
        )


def test_alert_page_shows_the_audit_explanation(ui: Ui) -> None:
    client = ui.client()
    login(client, "ana")
    decision = max(ui.decisions, key=lambda d: d.score)
    page = client.get(f"/alerts/{decision.txn.txn_id}")
    assert page.status_code == 200
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="waterfall"' in page.text
    assert f"score {decision.score:.3f}" in page.text, "the waterfall ends at the stored decision's score"
    for reason in decision.reasons[:3]:
        assert reason["text"].replace("'", "&#39;") in page.text
    assert client.get("/alerts/nope").status_code == 404


def test_verdict_becomes_a_label_and_a_feedback_event_and_can_be_undone(ui: Ui) -> None:
    client = ui.client()
    csrf = login(client, "ana")
    txn_id = ui.decisions[3].txn.txn_id
    assert client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "fraud"}).status_code == 422  # no token
    assert (
        client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "fraud", "csrf": "forged"}).status_code
        == 403
    )
    note = f"{HOSTILE} card {CARD}"
    done = client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "fraud", "note": note, "csrf": csrf})
    assert done.status_code == 303
    (label,) = ui.sql("select * from labels where txn_id = %s", txn_id)
    assert (label["is_fraud"], label["actor"], label["source"], label["note"]) == (
        True,
        "ana",
        "analyst",
        f"{HOSTILE} card 411111******1111",  # stored verbatim but for the card number, masked
    )
    assert CARD not in str(ui.sql("select detail from action_log"))
    assert ui.sql("select status from alerts where txn_id = %s", txn_id)[0]["status"] == "fraud"
    queue = client.get(done.headers["location"]).text
    assert f'class="alert-link">{txn_id}<' not in queue, "the alert left the queue"
    assert 'id="undo"' in queue
    page = client.get(f"/alerts/{txn_id}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert (
        client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "legit", "csrf": csrf}).status_code == 409
    )

    assert client.post(f"/alerts/{txn_id}/undo", data={"csrf": csrf}).status_code == 303
    assert ui.sql("select status from alerts where txn_id = %s", txn_id)[0]["status"] == "open"
    assert ui.sql("select retracted_at from labels where txn_id = %s", txn_id)[0]["retracted_at"] is not None
    client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "legit", "csrf": csrf})
    other = ui.client()
    other_csrf = login(other, "ana")
    assert other.post(f"/alerts/{txn_id}/undo", data={"csrf": other_csrf}).status_code == 409, (
        "undo is per session"
    )

    events = [orjson.loads(r.value) for r in drain(ui.settings.kafka_servers, ui.settings.topic_feedback, 3)]
    assert [(e["txn_id"], e["is_fraud"], e["retracted"], e["source"]) for e in events] == [
        (txn_id, 1, False, "analyst"), (txn_id, 1, True, "analyst"), (txn_id, 0, False, "analyst"),
    ]  # fmt: skip
    actions = [
        a["action"] for a in ui.sql("select action from action_log where target = %s order by id", txn_id)
    ]
    assert actions.count("verdict") == 2
    assert "undo" in actions


def test_a_fraud_verdict_or_report_can_say_which_kind_of_fraud(settings: Settings, tmp_path: Path) -> None:
    with desk(settings, tmp_path, "types", n=4) as d:
        store, feedback, decisions, ids, client = d.store, d.feedback, d.decisions, d.ids, d.client()
        csrf = login(client, "ana")
        form = client.get(f"/alerts/{ids[0]}").text
        assert set(re.findall(r'<option value="([a-z_]+)">', form)) == set(SCENARIOS), "every type offered"
        verdict = {"verdict": "fraud", "csrf": csrf}
        made_up = client.post(f"/alerts/{ids[0]}/verdict", data={**verdict, "fraud_type": "aliens"})
        assert made_up.status_code == 400
        assert not db_rows(store, ids[0]), "refused whole"
        done = client.post(f"/alerts/{ids[0]}/verdict", data={**verdict, "fraud_type": "card_testing"})
        assert done.status_code == 303
        legit = {"verdict": "legit", "csrf": csrf, "fraud_type": "card_testing"}
        assert client.post(f"/alerts/{ids[1]}/verdict", data=legit).status_code == 303
        assert client.post(f"/alerts/{ids[2]}/verdict", data={**verdict, "fraud_type": ""}).status_code == 303
        assert [db_rows(store, i)[0]["fraud_type"] for i in ids[:3]] == ["card_testing", None, None], (
            "a type only with a fraud verdict; none given: not known"
        )
        assert "Card testing (small probing payments)" in client.get(f"/transactions/{ids[0]}").text
        card_page = client.get("/cards/card-ui-0").text  # ids[0] and ids[2] are this card's
        assert "fraud: Card testing (small probing payments) <span" in card_page
        report = {"csrf": csrf, "fraud_type": "account_takeover"}
        assert client.post(f"/transactions/{ids[1]}/report", data=report).status_code == 303
        assert db_rows(store, ids[1])[-1]["fraud_type"] == "account_takeover"
        events = [
            orjson.loads(r.value) for r in drain(d.settings.kafka_servers, d.settings.topic_feedback, 4)
        ]
        assert [e.get("fraud_scenario") for e in events] == ["card_testing", None, None, "account_takeover"]
        chargebacks = [Feedback(txn_id=ids[3], card_id="card-ui-1", is_fraud=1, label_time=datetime.now(UTC),
                                source="chargeback", fraud_scenario="compromised_card")]  # fmt: skip
        feedback.handle(chargebacks)
        assert db_rows(store, ids[3])[0]["fraud_type"] == "compromised_card", "a chargeback's reason"
        verdicts = "select detail from action_log where target = %s and action = 'verdict'"
        action = db_rows(store, ids[0], verdicts)
        assert action[0]["detail"]["fraud_type"] == "card_testing"

        # the fraud team's report: confirmed fraud by type, what the decisions stopped and missed
        losses = store.fraud_losses(T0 - timedelta(days=1))
        decided = {d.txn.txn_id: d for d in decisions}
        assert sorted((r["fraud_type"] or "", r["frauds"], r["amount"]) for r in losses) == sorted(
            (kind, 1, decided[i].txn.amount)
            for kind, i in zip(["card_testing", "account_takeover", "", "compromised_card"], ids, strict=True)
        ), "one row each: all four in the week of 2026-03-02, in EUR"
        assert {r["week"] for r in losses} == {T0.date()}, "T0 is a Monday"
        assert sum(r["declined"] + r["reviewed"] + r["approved"] for r in losses) == 4
        stopped = sum(d.txn.amount for d in decisions if d.decision == "decline")
        assert sum(r["declined_amount"] for r in losses) == stopped
        assert store.fraud_losses(T0 + timedelta(days=7)) == [], "none since the next week"
        report = client.get("/reports/fraud", params={"weeks": 52}).text
        assert report.count("<tr><td>") == 8, "four types, four week rows"
        assert '<td>Account takeover</td><td>EUR</td><td class="num">1</td>' in report
        assert client.get("/reports/fraud", params={"weeks": 0}).status_code == 400
        sheet = client.get("/reports/fraud.csv", params={"weeks": 52})
        assert sheet.headers["content-type"].startswith("text/csv")
        assert 'filename="fraud-' in sheet.headers["content-disposition"]
        lines = sheet.text.splitlines()
        header = ["week", "fraud_type", "currency", "frauds", "amount", "declined", "declined_amount",
                  "reviewed", "approved", "approved_amount"]  # fmt: skip
        assert lines[0].split(",") == header
        assert len(lines) == 5, "a header and the four rows"
        assert any(line.startswith("2026-03-02,account_takeover,EUR,1,") for line in lines)


def db_rows(store: UiStore, txn_id: str, query: str = "select * from labels where txn_id = %s order by id"
              ) -> list[dict[str, Any]]:  # fmt: skip
    with psycopg.connect(store.conninfo, row_factory=dict_row) as conn:
        return conn.execute(query, (txn_id,)).fetchall()


def test_an_analyst_cannot_act_as_admin(ui: Ui) -> None:
    analyst = ui.client()
    csrf = login(analyst, "ana")
    assert analyst.get("/admin/users").status_code == 403
    assert analyst.post("/models/v-ui-test/promote", data={"csrf": csrf}).status_code == 403
    new = {"username": "mallory", "password": "0123456789ab", "role": "admin", "csrf": csrf}
    assert analyst.post("/admin/users", data=new).status_code == 403
    assert not ui.sql("select 1 from users where username = 'mallory'")
    admin = ui.client()
    admin_csrf = login(admin, "root-admin")
    assert admin.get("/admin/users").status_code == 200
    assert (
        admin.post(
            "/admin/users", data={**new, "username": "bob", "role": "analyst", "csrf": admin_csrf}
        ).status_code
        == 303
    )
    assert ui.sql("select role from users where username = 'bob'")[0]["role"] == "analyst"
    assert "forbidden" in {a["action"] for a in ui.sql("select action from action_log where actor = 'ana'")}


def test_reports_are_served_only_from_the_reports_folder(ui: Ui) -> None:
    client = ui.client()
    login(client, "ana")
    listing = client.get("/reports").text
    assert "gx/uncommitted/data_docs/local_site/index.html" in listing
    assert client.get("/reports/file/gx/uncommitted/data_docs/local_site/index.html").text == "<h1>docs</h1>"
    assert client.get("/reports/file/../secret.txt").status_code == 404
    assert client.get("/reports/file/%2e%2e/secret.txt").status_code == 404


def test_pages_are_never_framed_cached_or_scripted(ui: Ui) -> None:
    """A verdict or block button under a decoy page is clickjacking; customer data must not stay in a
    shared machine's cache; the app's pages run no script, so none injected could run either."""
    client = ui.client()
    anonymous = client.get("/login")
    login(client, "ana")
    report = client.get("/reports/file/gx/uncommitted/data_docs/local_site/index.html")
    for response in (anonymous, client.get("/"), client.get(f"/alerts/{ui.decisions[0].txn.txn_id}"), report):
        assert response.status_code == 200
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
    for response in (anonymous, client.get("/")):
        policy = dict(p.strip().split(" ", 1) for p in response.headers["content-security-policy"].split(";"))
        assert (policy["default-src"], policy["frame-ancestors"], policy["form-action"]) == (
            "'none'",
            "'none'",
            "'self'",
        )
    assert "content-security-policy" not in report.headers, "the reports' own scripts run (GX, Evidently)"


def test_hostile_strings_in_every_text_input_are_data_never_sql_or_html(ui: Ui) -> None:
    """Every query parameter, path segment and form field of the UI with SQL/HTML/format payloads:
    a clear 4xx or a page that shows them escaped, never a 500, and the tables stay intact."""
    client = ui.client()
    csrf = login(client, "root-admin")
    before = counts(ui)
    for params in ({"sort": HOSTILE}, {"status": HOSTILE}, {"decision": HOSTILE}, {"min_score": HOSTILE},
                   {"page_no": HOSTILE}):  # fmt: skip
        response = client.get("/", params=params)
        assert response.status_code in {200, 400, 422}, params
        assert "<script>alert(1)</script>" not in response.text
    for path in (
        f"/alerts/{HOSTILE}",
        f"/transactions/{HOSTILE}",
        f"/cards/{HOSTILE}",
        f"/reports/file/{HOSTILE}",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/transactions/{HOSTILE}/report", data={"csrf": csrf}).status_code == 404
    assert (
        client.post(f"/alerts/{HOSTILE}/verdict", data={"verdict": "fraud", "csrf": csrf}).status_code == 404
    )
    assert client.post(f"/alerts/{HOSTILE}/undo", data={"csrf": csrf}).status_code in {404, 409}
    assert client.post(f"/models/{HOSTILE}/promote", data={"csrf": csrf}).status_code in {404, 409}
    assert client.post(f"/cards/{HOSTILE}/notes", data={"csrf": csrf, "note": "x"}).status_code == 404
    noted = client.post("/cards/card-ui-1/notes", data={"csrf": csrf, "note": HOSTILE, "back": HOSTILE})
    assert (noted.status_code, noted.headers["location"]) == (303, "/cards/card-ui-1"), (
        "back: only its alerts"
    )
    card_page = client.get("/cards/card-ui-1").text
    assert "<script>alert(1)</script>" not in card_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card_page
    verdict = ui.decisions[5].txn.txn_id
    assert (
        client.post(f"/alerts/{verdict}/verdict", data={"verdict": HOSTILE, "csrf": csrf}).status_code == 400
    )
    created = client.post(
        "/admin/users", data={"username": HOSTILE, "password": PASSWORD, "role": "analyst", "csrf": csrf}
    )
    assert created.status_code in {303, 400}
    users_page = client.get("/admin/users").text
    assert "<script>alert(1)</script>" not in users_page
    bad_role = client.post(
        "/admin/users", data={"username": "mallory", "password": PASSWORD, "role": HOSTILE, "csrf": csrf}
    )
    assert bad_role.status_code == 400
    fresh = ui.client()
    form = fresh.get("/login")
    assert fresh.post("/login", data={"username": HOSTILE, "password": HOSTILE, "csrf": csrf_of(form.text)},
                      ).status_code == 401  # fmt: skip
    after = counts(ui)
    assert after["alerts"] == before["alerts"]
    assert after["labels"] == before["labels"]
    assert after["users"] - before["users"] == (1 if created.status_code == 303 else 0)


def counts(ui: Ui) -> dict[str, int]:
    row = ui.sql(
        "select (select count(*) from alerts) as alerts, (select count(*) from labels) as labels,"
        " (select count(*) from users) as users"
    )[0]
    return dict(row)


def test_search_opens_a_transaction_or_a_card_and_never_logs_a_card_number(ui: Ui) -> None:
    client = ui.client()
    login(client, "ana")
    assert 'id="search-q"' in client.get("/search").text
    found = client.get("/search", params={"q": " ui-003 "})
    assert (found.status_code, found.headers["location"]) == (303, "/transactions/ui-003")
    assert "Alert ui-003" in client.get(found.headers["location"]).text

    card = client.get("/search", params={"q": "card-ui-1"})
    assert (card.status_code, card.headers["location"]) == (303, "/cards/card-ui-1")
    listed = re.findall(r'class="txn-link">([^<]+)<', client.get(card.headers["location"]).text)
    newest_first = sorted((d for d in ui.decisions if d.txn.card_id == "card-ui-1"),
                          key=lambda d: d.txn.event_time, reverse=True)  # fmt: skip
    assert listed == [d.txn.txn_id for d in newest_first]
    second = ui.store.card_decisions("card-ui-1", page=2, per_page=2)
    assert [r["txn_id"] for r in second] == [d.txn.txn_id for d in newest_first[2:4]]
    assert client.get("/cards/card-nobody").status_code == 404

    nothing = client.get("/search", params={"q": "ui-999"})
    assert nothing.status_code == 200
    assert 'id="nothing"' in nothing.text
    assert client.get("/transactions/ui-999").text == "no decision ui-999 in the database"
    hostile = client.get("/search", params={"q": HOSTILE})
    assert hostile.status_code == 200
    assert "<script>alert(1)</script>" not in hostile.text

    pan = client.get("/search", params={"q": CARD})
    assert pan.status_code == 400
    assert pan.text == "card numbers are not stored: search by a card id or a transaction id"
    searches = [a["detail"]["q"] for a in ui.sql("select detail from action_log where action = 'search'")]
    assert "411111******1111" in searches
    assert CARD not in str(ui.sql("select target, detail from action_log"))
    assert (
        client.get("/search", params={"q": "ui-003", "archive": "true", "scored_on": "03/02"}).status_code
        == 400
    )


def test_a_transaction_without_an_alert_can_be_reported_as_fraud_and_undone(ui: Ui) -> None:
    """A card holder disputes an approved transaction: the analyst finds it and labels it fraud; the label
    goes to fraud-feedback as a verdict does, and no alert is made up for it."""
    first = ui.decisions[0]
    approved = replace(first, txn=first.txn.model_copy(update={"txn_id": "ui-ok-1"}), decision="approve",
                       score=0.02, shap=None, expected_value=None, reasons=[])  # fmt: skip
    store = DecisionStore(ui.store.conninfo)
    store.write([approved])
    store.close()
    topic = unique("it-ui-report")
    settings = ui.settings.model_copy(update={"topic_feedback": topic})
    ensure_topics(settings, [topic])
    client = TestClient(create_app(ui.store, kafka_feedback(settings), ui.reports), follow_redirects=False)
    csrf = login(client, "ana")
    alerts = counts(ui)["alerts"]

    page = client.get("/transactions/ui-ok-1").text
    assert "Transaction ui-ok-1" in page
    assert 'id="no-alert"' in page
    assert 'id="report-fraud"' in page
    assert 'id="confirm-fraud"' not in page
    assert client.post("/transactions/ui-ok-1/report", data={}).status_code == 422  # no token
    assert client.post("/transactions/ui-ok-1/report", data={"csrf": "forged"}).status_code == 403
    assert not ui.sql("select 1 from labels where txn_id = 'ui-ok-1'")

    report = {"csrf": csrf, "note": f"disputed {CARD}", "block_card": "true"}
    done = client.post("/transactions/ui-ok-1/report", data=report)
    assert (done.status_code, done.headers["location"]) == (303, "/transactions/ui-ok-1")
    (label,) = ui.sql("select * from labels where txn_id = 'ui-ok-1'")
    assert (label["is_fraud"], label["source"], label["actor"], label["card_id"], label["note"]) == (
        True, "analyst", "ana", first.txn.card_id, "disputed 411111******1111",
    )  # fmt: skip
    assert counts(ui)["alerts"] == alerts
    assert ui.sql("select txn_id from block_list where value = %s", first.txn.card_id) == [
        {"txn_id": "ui-ok-1"}
    ]
    reported = client.get("/transactions/ui-ok-1").text
    assert 'id="reported"' in reported
    assert 'id="undo"' in reported
    again = client.post("/transactions/ui-ok-1/report", data={"csrf": csrf})
    assert (again.status_code, again.text) == (409, "ui-ok-1 is labelled fraud already (by ana)")
    flagged = client.post(f"/transactions/{ui.decisions[4].txn.txn_id}/report", data={"csrf": csrf})
    assert flagged.status_code == 409
    assert "give the verdict on the alert" in flagged.text
    assert client.post("/transactions/ui-nope/report", data={"csrf": csrf}).status_code == 404

    undone = client.post("/alerts/ui-ok-1/undo", data={"csrf": csrf})
    assert (undone.status_code, undone.headers["location"]) == (303, "/transactions/ui-ok-1")
    assert ui.sql("select retracted_at from labels where txn_id = 'ui-ok-1'")[0]["retracted_at"] is not None
    assert 'id="report-fraud"' in client.get("/transactions/ui-ok-1").text
    assert not ui.sql("select 1 from block_list"), "the undo took the card's block back"
    events = [orjson.loads(r.value) for r in drain(settings.kafka_servers, topic, 2)]
    assert [(e["txn_id"], e["is_fraud"], e["retracted"], e["analyst"]) for e in events] == [
        ("ui-ok-1", 1, False, "ana"), ("ui-ok-1", 1, True, "ana"),
    ]  # fmt: skip
    actions = [
        a["action"] for a in ui.sql("select action from action_log where target = 'ui-ok-1' order by id")
    ]
    assert actions == ["view", "report_fraud", "view", "undo", "view"]


def blocked_cards(ui: Ui) -> frozenset[str]:
    """The block list as the workers read it (``DecisionStore.rules``)."""
    store = DecisionStore(ui.store.conninfo)
    try:
        return store.rules(None).blocked_cards
    finally:
        store.close()


def test_a_fraud_verdict_can_block_the_card_and_its_undo_unblocks_it(ui: Ui) -> None:
    client = ui.client()
    csrf = login(client, "ana")
    txn_id, card = ui.decisions[6].txn.txn_id, ui.decisions[6].txn.card_id
    assert 'id="block-card"' in client.get(f"/alerts/{txn_id}").text
    since = ui.sql("select max(id) as id from action_log")[0]["id"]
    done = client.post(
        f"/alerts/{txn_id}/verdict", data={"verdict": "fraud", "block_card": "true", "csrf": csrf}
    )
    assert done.status_code == 303
    (row,) = ui.sql("select * from block_list where value = %s", card)
    assert (row["kind"], row["reason"], row["created_by"], row["txn_id"]) == (
        "card", f"fraud confirmed on {txn_id}", "ana", txn_id,
    )  # fmt: skip
    assert card in blocked_cards(ui)
    page = client.get(f"/transactions/{ui.decisions[8].txn.txn_id}").text
    assert 'id="card-blocked"' in page
    assert 'id="block-card"' not in page, "no offer to block a blocked card"
    card_page = client.get(f"/cards/{card}").text
    assert 'id="blocked"' in card_page
    assert 'id="unblock"' not in card_page, "only an admin unblocks"

    assert client.post(f"/alerts/{txn_id}/undo", data={"csrf": csrf}).status_code == 303
    assert card not in blocked_cards(ui), "the undo takes back the block its verdict made"
    legit = client.post(
        f"/alerts/{txn_id}/verdict", data={"verdict": "legit", "block_card": "true", "csrf": csrf}
    )
    assert legit.status_code == 303
    assert card not in blocked_cards(ui), "a card is blocked on a fraud verdict only"
    actions = ui.sql("select action, target from action_log where id > %s order by id", since)
    assert [(a["action"], a["target"]) for a in actions if a["action"] in {"block", "unblock"}] == [
        ("block", f"card:{card}"), ("unblock", f"card:{card}"),
    ]  # fmt: skip


def test_analysts_block_cards_admins_unblock_and_keep_the_block_list(ui: Ui) -> None:
    analyst, admin = ui.client(), ui.client()
    csrf, admin_csrf = login(analyst, "ana"), login(admin, "root-admin")
    assert analyst.post("/cards/card-nobody/block", data={"csrf": csrf}).status_code == 404
    blocked = analyst.post("/cards/card-ui-1/block", data={"csrf": csrf, "reason": f"called in {CARD}"})
    assert (blocked.status_code, blocked.headers["location"]) == (303, "/cards/card-ui-1")
    assert "card-ui-1" in blocked_cards(ui)
    assert (
        ui.sql("select reason from block_list where value = 'card-ui-1'")[0]["reason"]
        == "called in 411111******1111"
    )
    assert analyst.post("/cards/card-ui-1/block", data={"csrf": csrf}).status_code == 409
    remove = {"kind": "card", "value": "card-ui-1", "back": "card", "csrf": csrf}
    assert analyst.post("/admin/block-list/remove", data=remove).status_code == 403
    assert analyst.get("/admin/block-list").status_code == 403
    assert "card-ui-1" in admin.get("/admin/block-list").text
    assert 'id="unblock"' in admin.get("/cards/card-ui-1").text
    unblocked = admin.post("/admin/block-list/remove", data={**remove, "csrf": admin_csrf})
    assert (unblocked.status_code, unblocked.headers["location"]) == (303, "/cards/card-ui-1")
    assert "card-ui-1" not in blocked_cards(ui)
    assert admin.post("/admin/block-list/remove", data={**remove, "csrf": admin_csrf}).status_code == 404

    merchant = {"kind": "merchant", "value": " m-evil ", "reason": HOSTILE, "csrf": admin_csrf}
    assert admin.post("/admin/block-list", data=merchant).status_code == 303
    store = DecisionStore(ui.store.conninfo)
    assert "m-evil" in store.rules(None).blocked_merchants
    store.close()
    listing = admin.get("/admin/block-list").text
    assert "<script>alert(1)</script>" not in listing
    assert admin.post("/admin/block-list", data=merchant).status_code == 409
    for kind, value in (("card", CARD), (HOSTILE, "x"), ("card", "")):
        bad = admin.post("/admin/block-list", data={"kind": kind, "value": value, "csrf": admin_csrf})
        assert bad.status_code in {400, 422}, (kind, value)
    assert admin.post("/admin/block-list", data={"kind": "card", "value": CARD, "csrf": admin_csrf}).text == (
        "block: card numbers are not stored: block the card id"
    )
    assert CARD not in str(ui.sql("select * from block_list")) + str(
        ui.sql("select target, detail from action_log")
    )
    assert admin.post("/admin/block-list/remove", data={**merchant, "value": "m-evil"}).status_code == 303
    assert not ui.sql("select 1 from block_list")


def test_the_block_list_from_the_command_line(ui: Ui) -> None:
    env = {"FRAUDSTREAM_PG_DB": ui.settings.pg_db}
    added = fraudstream("block", "add", "merchant", "m-cli", "--reason", "phishing site", env=env)
    assert (added.returncode, added.stdout.strip()) == (0, "block: merchant m-cli blocked"), added.stderr
    (listed,) = fraudstream("block", "list", env=env).stdout.splitlines()
    kind, value, _, by, reason = listed.split("\t")
    assert (kind, value, by, reason) == ("merchant", "m-cli", f"cli:{getpass.getuser()}", "phishing site")
    assert fraudstream("block", "remove", "merchant", "m-cli", env=env).returncode == 0
    again = fraudstream("block", "remove", "merchant", "m-cli", env=env)
    assert (again.returncode, again.stderr.strip()) == (
        1, "fraudstream: error: block: merchant m-cli is not on the block list",
    )  # fmt: skip
    logged = ui.sql("select action from action_log where target = 'merchant:m-cli' order by id")
    assert [a["action"] for a in logged] == ["block", "unblock"]


def attempt(client: TestClient, username: str, password: str) -> Any:
    form = client.get("/login")
    return client.post(
        "/login", data={"username": username, "password": password, "csrf": csrf_of(form.text)}
    )


def test_a_disabled_user_is_logged_out_at_once_and_a_reset_password_ends_their_sessions(ui: Ui) -> None:
    ui.store.add_user("carol", PASSWORD, "analyst")
    carol, admin = ui.client(), ui.client()
    login(carol, "carol")
    admin_csrf = login(admin, "root-admin")
    assert admin.post("/admin/users/carol/disable", data={"csrf": admin_csrf}).status_code == 303
    assert carol.get("/").headers["location"] == "/login", "the session ended with the disable"
    assert attempt(carol, "carol", PASSWORD).status_code == 401
    assert "disabled" in admin.get("/admin/users").text
    myself = admin.post("/admin/users/root-admin/disable", data={"csrf": admin_csrf})
    assert (myself.status_code, myself.text) == (400, "you cannot disable yourself")
    assert admin.post("/admin/users/nobody/disable", data={"csrf": admin_csrf}).status_code == 400
    assert admin.post("/admin/users/carol/promote", data={"csrf": admin_csrf}).status_code == 404
    analyst = ui.client()
    assert analyst.post("/admin/users/carol/enable", data={"csrf": login(analyst, "ana")}).status_code == 403

    assert admin.post("/admin/users/carol/enable", data={"csrf": admin_csrf}).status_code == 303
    login(carol, "carol")
    new = "a new one, long enough"
    assert (
        admin.post("/admin/users/carol/password", data={"csrf": admin_csrf, "password": "short"}).status_code
        == 400
    )
    assert (
        admin.post("/admin/users/carol/password", data={"csrf": admin_csrf, "password": new}).status_code
        == 303
    )
    assert carol.get("/").status_code == 303, "a reset ends the user's sessions"
    assert attempt(carol, "carol", PASSWORD).status_code == 401
    login(carol, "carol", new)
    actions = ui.sql("select action from action_log where target = 'carol' order by id")
    assert [a["action"] for a in actions] == ["disable_user", "enable_user", "set_password"]

    env = {"FRAUDSTREAM_PG_DB": ui.settings.pg_db}
    assert fraudstream("users", "disable", "carol", env=env).returncode == 0
    listed = dict(line.split("\t", 1) for line in fraudstream("users", "list", env=env).stdout.splitlines())
    assert listed["carol"].startswith("analyst\t")
    assert "\tdisabled " in listed["carol"]
    assert listed["ana"].endswith("\tactive")
    assert fraudstream("users", "enable", "carol", env=env).returncode == 0
    reset = fraudstream("users", "password", "carol", env={**env, "FRAUDSTREAM_NEW_USER_PASSWORD": PASSWORD})
    assert reset.returncode == 0, reset.stderr
    login(carol, "carol")


def test_failed_logins_make_the_name_wait(ui: Ui) -> None:
    ui.store.add_user("dave", PASSWORD, "analyst")
    app = create_app(
        ui.store, kafka_feedback(ui.settings), ui.reports, login_lockout=(3, timedelta(minutes=15))
    )
    client = TestClient(app, follow_redirects=False)
    assert [attempt(client, "dave", "not the password").status_code for _ in range(3)] == [401, 401, 401]
    locked = attempt(client, "dave", PASSWORD)
    assert locked.status_code == 429, "the right password too, while the name waits"
    assert re.search(r"Too many failed logins: try again after \d\d:\d\d UTC\.", locked.text)
    assert attempt(client, "ana", PASSWORD).status_code == 303, "other names are not held"
    ui.sql("update action_log set at = at - interval '16 minutes' where actor = 'dave' returning id")
    assert attempt(client, "dave", PASSWORD).status_code == 303, "the failures aged out of the window"
    assert [attempt(client, "dave", "wrong again").status_code for _ in range(2)] == [401, 401]
    assert attempt(client, "dave", PASSWORD).status_code == 303, "failures before a success do not count"
    logged = [a["action"] for a in ui.sql("select action from action_log where actor = 'dave' order by id")]
    assert logged == ["login_failed"] * 3 + ["login_locked", "login"] + ["login_failed"] * 2 + ["login"]


def test_failed_logins_from_one_address_make_the_address_wait_whatever_the_names(ui: Ui) -> None:
    """Password spraying: one client, one guess on each of many names, never reaching a name's limit."""
    ui.store.add_user("fay", PASSWORD, "analyst")
    app = create_app(
        ui.store, kafka_feedback(ui.settings), ui.reports, login_lockout=(3, timedelta(minutes=15)),
        address_max_failures=4,
    )  # fmt: skip
    sprayer = TestClient(app, follow_redirects=False, client=("203.0.113.7", 40000))
    names = ["fay", "ana", "frank", "grace"]
    assert [attempt(sprayer, name, "Winter2026!").status_code for name in names] == [401] * 4
    held = attempt(sprayer, "fay", PASSWORD)
    assert held.status_code == 429, "the right password too, from that address"
    assert re.search(r"Too many failed logins from your address: try again after \d\d:\d\d UTC\.", held.text)
    office = TestClient(app, follow_redirects=False, client=("198.51.100.20", 40000))
    assert attempt(office, "fay", PASSWORD).status_code == 303, "fay, elsewhere, is not held"
    rows = ui.sql(
        "select actor, action, detail->>'address' as address from action_log"
        " where action like 'login%%' and actor in ('fay', 'frank') order by id"
    )
    assert [(r["actor"], r["action"], r["address"]) for r in rows] == [
        ("fay", "login_failed", "203.0.113.7"), ("frank", "login_failed", "203.0.113.7"),
        ("fay", "login_locked", "203.0.113.7"), ("fay", "login", "198.51.100.20"),
    ]  # fmt: skip
    ui.sql("update action_log set at = at - interval '16 minutes' where detail->>'address' = '203.0.113.7'"
           " returning id")  # fmt: skip
    assert attempt(sprayer, "fay", PASSWORD).status_code == 303, "the failures aged out of the window"
    off = create_app(ui.store, kafka_feedback(ui.settings), ui.reports, address_max_failures=0)
    quiet = TestClient(off, follow_redirects=False, client=("192.0.2.1", 40000))
    assert [attempt(quiet, n, "guess").status_code for n in ["a", "b", "c", "d", "e", "f"]] == [401] * 6


def test_times_are_shown_in_utc_whatever_the_servers_time_zone(ui: Ui) -> None:
    client = ui.client()
    login(client, "ana")
    decision = ui.decisions[3]
    with psycopg.connect(ui.store.conninfo, autocommit=True) as conn:
        conn.execute(
            f"alter database {ui.settings.pg_db} set timezone = 'Asia/Tokyo'"
        )  # a test database's name
    try:
        page = client.get(f"/transactions/{decision.txn.txn_id}").text
    finally:
        with psycopg.connect(ui.store.conninfo, autocommit=True) as conn:
            conn.execute(f"alter database {ui.settings.pg_db} reset timezone")
    assert f"{decision.txn.event_time:%Y-%m-%d %H:%M:%S} UTC" in page


def test_analysts_take_alerts_so_that_nobody_works_one_twice(ui: Ui) -> None:
    ui.store.add_user("erin", PASSWORD, "analyst")
    ana, erin = ui.client(), ui.client()
    ana_csrf, erin_csrf = login(ana, "ana"), login(erin, "erin")
    card_of = {
        r["txn_id"]: r["card_id"]
        for r in ui.sql(
            "select txn_id, card_id from alerts where status = 'open' order by score desc, txn_id"
        )
    }
    free = list(card_of)
    x = free[0]
    y = next(t for t in free if card_of[t] != card_of[x])  # ana works x's card: erin gets another one's
    first = ana.post("/alerts/next", data={"csrf": ana_csrf}).headers["location"]
    second = erin.post("/alerts/next", data={"csrf": erin_csrf}).headers["location"]
    assert (first, second) == (f"/alerts/{x}", f"/alerts/{y}"), "the highest scores nobody holds"

    held = erin.get(f"/alerts/{x}").text
    assert 'id="held"' in held
    assert 'id="confirm-fraud"' not in held
    refused = erin.post(f"/alerts/{x}/verdict", data={"verdict": "fraud", "csrf": erin_csrf})
    assert (refused.status_code, refused.text) == (409, f"alert {x} is ana's: take it over to give a verdict")
    assert erin.post(f"/alerts/{x}/take", data={"csrf": erin_csrf}).status_code == 409
    assert erin.post(f"/alerts/{x}/take", data={"csrf": erin_csrf, "over": "true"}).status_code == 303
    assert ana.post(f"/alerts/{x}/verdict", data={"verdict": "legit", "csrf": ana_csrf}).status_code == 409
    mine = re.findall(r'class="alert-link">([^<]+)<', erin.get("/", params={"assigned": "me"}).text)
    assert sorted(mine) == sorted([x, y])
    assert x not in re.findall(r'class="alert-link">([^<]+)<', ana.get("/", params={"assigned": "none"}).text)

    assert erin.post(f"/alerts/{y}/release", data={"csrf": erin_csrf}).status_code == 303
    assert ana.post(f"/alerts/{y}/release", data={"csrf": ana_csrf}).status_code == 409, "not ana's"
    ui.sql(
        "update alerts set assigned_at = assigned_at - interval '31 minutes' where txn_id = %s returning 1", x
    )
    nobodys = re.findall(r'class="alert-link">([^<]+)<', ana.get("/", params={"assigned": "none"}).text)
    assert {x, y} <= set(nobodys), "released, and held longer than the hold"
    assert ana.post(f"/alerts/{x}/verdict", data={"verdict": "legit", "csrf": ana_csrf}).status_code == 303
    taken = ui.sql(
        "select action, actor, detail from action_log where action = 'take' and target = %s order by id", x
    )
    assert [(t["actor"], t["detail"]) for t in taken] == [("ana", {"next": True}), ("erin", {"from": "ana"})]

    # analysts asking at the same moment never get the same alert, nor two alerts of one card
    ui.sql("update alerts set assigned_to = null, assigned_at = null returning 1")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ui.store.next_alert, [f"racer-{i}" for i in range(8)]))
    handed = [g for g in got if g is not None]
    assert sorted(card_of[g] for g in handed) == sorted(set(card_of.values()))
    ui.sql("update alerts set assigned_to = null, assigned_at = null returning 1")


def test_an_alert_closed_as_legitimate_can_be_reported_as_fraud_later(ui: Ui) -> None:
    """The card holder disputes, a week on, a payment an analyst had cleared."""
    client = ui.client()
    csrf = login(client, "ana")
    txn_id = ui.decisions[9].txn.txn_id
    ui.sql("update alerts set assigned_to = null returning 1")
    assert (
        client.post(f"/alerts/{txn_id}/verdict", data={"verdict": "legit", "csrf": csrf}).status_code == 303
    )
    page = client.get(f"/alerts/{txn_id}").text
    assert 'id="report-fraud"' in page
    other = ui.client()
    other_csrf = login(other, "root-admin")
    reported = other.post(f"/transactions/{txn_id}/report", data={"csrf": other_csrf, "note": "disputed"})
    assert reported.status_code == 303
    (alert,) = ui.sql("select status, closed_by from alerts where txn_id = %s", txn_id)
    assert (alert["status"], alert["closed_by"]) == ("fraud", "root-admin")
    labels = ui.sql(
        "select is_fraud, actor from labels where txn_id = %s and retracted_at is null order by id", txn_id
    )
    assert [(lb["is_fraud"], lb["actor"]) for lb in labels] == [(False, "ana"), (True, "root-admin")], (
        "the latest label is the one the export and training read"
    )
    again = other.post(f"/transactions/{txn_id}/report", data={"csrf": other_csrf})
    assert (again.status_code, again.text) == (409, f"{txn_id} is labelled fraud already (by root-admin)")


def test_a_verdict_settles_the_cards_other_alerts_ticked_and_its_undo_reopens_them(
    settings: Settings, tmp_path: Path
) -> None:
    """A card under attack raises many alerts (the demo's 263 open alerts were on 77 cards): the alert
    page lists the card's other open alerts, the analyst ticks those the verdict is true of, and each
    gets its own label and feedback event; one undo takes them all back."""
    with desk(settings, tmp_path, "card_case", n=10) as d:  # card-ui-0: even i, card-ui-1: odd
        s, store, ids, client, erin = d.settings, d.store, d.ids, d.client(), d.client()
        store.add_user("erin", PASSWORD, "analyst")
        csrf, erin_csrf = login(client, "ana"), login(erin, "erin")
        assert erin.post(f"/alerts/{ids[8]}/take", data={"csrf": erin_csrf}).status_code == 303

        page = client.get(f"/alerts/{ids[0]}").text
        offered = re.findall(r'name="also" value="([^"]+)"', page)
        assert offered == [ids[2], ids[4], ids[6]], "the card's other open alerts, oldest first, not erin's"
        assert "erin's</span>" in page, "the one erin holds is shown, not offered"
        queue = client.get("/").text
        assert re.search(rf'{ids[1]}</a></td>\s*<td>card-ui-1 <span class="muted card-open"[^>]*>\+4<', queue)

        fraud = {"verdict": "fraud", "csrf": csrf, "fraud_type": "card_testing", "note": "burst"}
        foreign = client.post(f"/alerts/{ids[0]}/verdict", data={**fraud, "also": [ids[2], ids[1]]})
        assert foreign.status_code == 409
        assert foreign.text == f"alert {ids[1]} is on another card than {ids[0]}'s"
        held = client.post(f"/alerts/{ids[0]}/verdict", data={**fraud, "also": [ids[2], ids[8]]})
        assert held.status_code == 409
        assert held.text == f"alert {ids[8]} is erin's: take it over to give a verdict"
        assert store.labels_for(ids[0]) == store.labels_for(ids[2]) == [], "refused whole"

        done = client.post(f"/alerts/{ids[0]}/verdict", data={**fraud, "also": [ids[2], ids[4]]})
        assert (done.status_code, done.headers["location"]) == (303, f"/?done={ids[0]}&more=2")
        assert 'id="done-more">, with 2 more on its card<' in client.get(done.headers["location"]).text
        closed = {r["txn_id"]: r for r in db_status(store, ids)}
        assert [closed[i]["status"] for i in ids[:9:2]] == ["fraud", "fraud", "fraud", "open", "open"]
        labels = {i: store.labels_for(i) for i in ids[:5:2]}
        assert [(lb[0]["fraud_type"], lb[0]["note"], lb[0]["given_on"]) for lb in labels.values()] == [
            ("card_testing", "burst", None),
            ("card_testing", "burst", ids[0]),
            ("card_testing", "burst", ids[0]),
        ]  # fmt: skip
        assert re.findall(r'name="also" value="([^"]+)"', client.get(f"/alerts/{ids[6]}").text) == [], (
            "nothing left to tick: erin holds the last other one"
        )

        assert client.post(f"/alerts/{ids[0]}/undo", data={"csrf": csrf}).status_code == 303
        reopened = {r["txn_id"]: r["status"] for r in db_status(store, ids)}
        assert [reopened[i] for i in ids[:5:2]] == ["open", "open", "open"], "one undo reopens all three"
        assert all(lb["retracted_at"] is not None for i in ids[:5:2] for lb in store.labels_for(i))

        events = [orjson.loads(r.value) for r in drain(s.kafka_servers, s.topic_feedback, 6)]
        assert sorted((e["txn_id"], e["retracted"], e["fraud_scenario"]) for e in events) == sorted(
            (i, retracted, "card_testing") for i in ids[:5:2] for retracted in (False, True)
        )
        logged = [(a["action"], a["target"], a["detail"].get("with")) for a in store.actions(20)]
        assert ("verdict", ids[2], ids[0]) in logged
        assert ("verdict", ids[0], None) in logged

        # "all": every alert the page offered (its hidden list), not one that came in since
        page = client.get(f"/alerts/{ids[0]}").text
        offered = re.findall(r'name="offered" value="([^"]+)"', page)
        assert offered == [ids[2], ids[4], ids[6]]
        legit = {"verdict": "legit", "csrf": csrf, "also_all": "true", "offered": offered}
        done = client.post(f"/alerts/{ids[0]}/verdict", data=legit)
        assert (done.status_code, done.headers["location"]) == (303, f"/?done={ids[0]}&more=3")
        after = {r["txn_id"]: r["status"] for r in db_status(store, ids)}
        assert [after[i] for i in ids[:9:2]] == ["legit", "legit", "legit", "legit", "open"], "erin's stays"


def test_next_alert_never_hands_two_analysts_one_card(settings: Settings, tmp_path: Path) -> None:
    """Two analysts working one card would both call its holder: "Next alert" skips a card someone else
    holds an alert of, even when they ask at the same moment."""
    with fresh_database(settings, "it_ui_next_card") as db:
        store, _ = analyst_desk(settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True))
        store.add_user("erin", PASSWORD, "analyst")
        decisions = populate(store.conninfo, tmp_path / "model", n=8)
        card_of = {d.txn.txn_id: d.txn.card_id for d in decisions}
        for _ in range(3):
            with ThreadPoolExecutor(6) as pool:
                got = list(pool.map(store.next_alert, [f"racer-{i}" for i in range(6)]))
            handed = [g for g in got if g is not None]
            assert sorted(card_of[g] for g in handed) == ["card-ui-0", "card-ui-1"], got
            with psycopg.connect(store.conninfo) as conn:
                conn.execute("update alerts set assigned_to = null, assigned_at = null")
        erins = store.next_alert("erin")
        assert erins is not None
        mine = [store.next_alert("ana") for _ in range(5)]
        assert mine[4] is None, "nothing left but erin's card"
        assert all(m is not None and card_of[m] != card_of[erins] for m in mine[:4]), "erin's card is skipped"
        store.release(erins, "erin")
        last = store.next_alert("ana")
        assert last is not None
        assert card_of[last] == card_of[erins], "released: the card is free again"


def db_status(store: UiStore, txn_ids: list[str]) -> list[dict[str, Any]]:
    with psycopg.connect(store.conninfo, row_factory=dict_row) as conn:
        return conn.execute(
            "select txn_id, status, closed_by from alerts where txn_id = any(%s)", (txn_ids,)
        ).fetchall()


def test_a_chargeback_settles_its_alert_and_overturns_a_clearance(settings: Settings, tmp_path: Path) -> None:
    """Nobody should work a case the card holder has settled: a chargeback closes its open alert with its
    verdict, and turns an alert an analyst cleared into fraud (the analyst's label stays); an undo
    after it leaves the chargeback's verdict; a redelivered chargeback changes nothing."""
    with desk(settings, tmp_path, "chargeback", n=6) as d:
        store, feedback, decisions, ids, client = d.store, d.feedback, d.decisions, d.ids, d.client()
        csrf = login(client, "ana")
        for txn_id, verdict in ((ids[1], "legit"), (ids[2], "fraud"), (ids[4], "legit")):
            done = client.post(f"/alerts/{txn_id}/verdict", data={"verdict": verdict, "csrf": csrf})
            assert done.status_code == 303

        def chargeback(i: int, is_fraud: int) -> Feedback:
            return Feedback(txn_id=ids[i], card_id=decisions[i].txn.card_id, is_fraud=is_fraud,
                            label_time=datetime.now(UTC), source="chargeback")  # fmt: skip

        batch = [chargeback(0, 1), chargeback(1, 1), chargeback(2, 0), chargeback(3, 0), chargeback(4, 1)]
        assert feedback.handle(batch)["settled"] == 4
        status = {r["txn_id"]: r for r in db_status(store, ids)}
        # open ones take the chargeback's verdict; a clearance disputed becomes fraud; a fraud verdict stays
        assert [status[i]["status"] for i in ids] == ["fraud", "fraud", "fraud", "legit", "fraud", "open"]
        assert [status[i]["closed_by"] for i in ids] == [
            "chargeback",
            "chargeback",
            "ana",
            "chargeback",
            "chargeback",
            None,
        ]
        assert [lb["is_fraud"] for lb in db_rows(store, ids[1])] == [False, True], "ana's label stays"
        settled = [
            (a["target"], a["detail"]["alert_was"]) for a in store.actions(50) if a["action"] == "settle"
        ]
        assert sorted(settled) == [(ids[0], "open"), (ids[1], "legit"), (ids[3], "open"), (ids[4], "legit")]
        assert feedback.handle(batch)["settled"] == 0, "redelivered: nothing changes"
        health = store.queue_health(timedelta(hours=1))
        assert (health["by_chargeback"], health["closed"]) == (2, 1), (
            "settled: ids 0 and 3, which nobody worked; the team's: ids[2] (the overturned ones left it)"
        )
        assert "2 settled by chargebacks before anyone worked them" in client.get("/").text

        page = client.get(f"/alerts/{ids[0]}").text
        assert "Closed by the card holder's chargeback at " in page
        assert 'id="undo"' not in page, "not ana's verdict to undo"
        refused = client.post(f"/alerts/{ids[0]}/verdict", data={"verdict": "legit", "csrf": csrf})
        assert (refused.status_code, refused.text) == (409, f"alert {ids[0]} is closed already (fraud)")

        assert client.post(f"/alerts/{ids[4]}/undo", data={"csrf": csrf}).status_code == 303
        after = {r["txn_id"]: r for r in db_status(store, ids)}
        assert after[ids[4]]["status"] == "fraud", (
            "the undo leaves the chargeback's verdict, not an open alert"
        )
        assert after[ids[4]]["closed_by"] == "chargeback"
        assert store.queue_health(timedelta(hours=1))["by_chargeback"] == 2, "the undo is no settlement"

        # the team lead's page: ana's labels (ids[4]'s undone), and the clearance a chargeback overturned
        (figures,) = store.analyst_figures(datetime.now(UTC) - timedelta(days=1))
        assert (figures["actor"], figures["labels"], figures["fraud"], figures["overturned"]) == (
            "ana",
            2,
            1,
            1,
        )
        assert client.get("/reports/analysts").status_code == 403, "admins only"
        store.add_user("lead", PASSWORD, "admin")
        lead = d.client()
        login(lead, "lead")
        row = re.search(
            r'<table id="analysts">.*?<tbody><tr>(.*?)</tr>', lead.get("/reports/analysts").text, re.S
        )
        assert row is not None
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
        assert [cells[i] for i in (0, 1, 2, 3, 6)] == ["ana", "2", "1", "0", "1"]
        assert lead.get("/reports/analysts", params={"days": 0}).status_code == 400
        overturned = lead.get("/reports/analysts").text
        listed = re.findall(r'<table id="overturned">.*?</table>', overturned, re.S)
        assert len(listed) == 1
        assert re.findall(r'href="/transactions/([^"]+)"', listed[0]) == [ids[1]], "the case to review"
        assert "<td>ana</td>" in listed[0]


def test_notes_on_a_card_reach_every_alert_of_it_with_its_verdicts_notes(
    settings: Settings, tmp_path: Path
) -> None:
    """The holder called yesterday, or travels: whoever opens the card's next alert reads it, beside
    the notes of the verdicts on its other transactions."""
    with desk(settings, tmp_path, "card_notes", n=4) as d:  # card-ui-0: ids 0 and 2; card-ui-1: 1 and 3
        ids, client = d.ids, d.client()
        csrf = login(client, "ana")
        refused = client.post("/cards/card-ui-0/notes", data={"csrf": "forged", "note": "x"})
        assert refused.status_code == 403
        assert client.post("/cards/card-ui-0/notes", data={"csrf": csrf, "note": "  "}).status_code == 400
        note = f"Holder travels in Spain until 12-10; called from {CARD}"
        added = client.post("/cards/card-ui-0/notes", data={"csrf": csrf, "note": note, "back": ids[0]})
        assert (added.status_code, added.headers["location"]) == (303, f"/transactions/{ids[0]}")
        verdict = {"verdict": "legit", "csrf": csrf, "note": "confirmed by the holder"}
        assert client.post(f"/alerts/{ids[0]}/verdict", data=verdict).status_code == 303
        assert (
            client.post(f"/alerts/{ids[1]}/verdict", data={**verdict, "note": "other card"}).status_code
            == 303
        )

        page = client.get(f"/alerts/{ids[2]}").text
        panel = page[page.index('id="card-notes"') : page.index("</div>", page.index('id="card-notes"'))]
        items = [re.sub(r"<[^>]+>", "", li).strip() for li in re.findall(r"<li>(.*?)</li>", panel, re.S)]
        assert len(items) == 2, items
        assert items[0].endswith(f"ana, verdict legitimate on {ids[0]}: confirmed by the holder"), (
            "newest first"
        )
        assert items[1].endswith("ana: Holder travels in Spain until 12-10; called from 411111******1111")
        assert CARD not in page
        assert "other card" not in page, "another card's notes stay there"
        assert client.post(f"/alerts/{ids[0]}/undo", data={"csrf": csrf}).status_code == 303
        assert "confirmed by the holder" not in client.get("/cards/card-ui-0").text, (
            "a retracted verdict's note"
        )
        logged = [(a["action"], a["target"]) for a in d.store.actions(20)]
        assert ("card_note", "card-ui-0") in logged
