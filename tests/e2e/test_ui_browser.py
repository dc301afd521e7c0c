"""The analyst UI in real headless Chromium: log in, open an alert, see its SHAP chart, confirm fraud
and block the card, find the card from the search box.

Screenshots are kept as test artefacts under reports/test-artifacts/ui/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.kafka_admin import ensure_topics
from app.settings import Settings
from app.ui.store import UiStore
from app.worker.process import running_ui
from tests.kafka_helpers import drain
from tests.services import ROOT, free_port, fresh_database, scrape, unique
from tests.ui_data import populate

ARTEFACTS = ROOT / "reports" / "test-artifacts" / "ui"
PASSWORD = "correct horse battery"


@pytest.fixture
def ui_server(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Settings, int]]:
    with fresh_database(settings, "e2e_ui") as db:
        s = settings.model_copy(update={"pg_db": db, "topic_feedback": unique("e2e-ui-fb")})
        ensure_topics(s, [s.topic_feedback])
        store = UiStore(s.pg_conninfo(reveal=True))
        store.migrate()
        store.add_user("ana", PASSWORD, "analyst")
        populate(store.conninfo, tmp_path / "model")
        metrics = free_port()
        env = {"FRAUDSTREAM_PG_DB": db, "FRAUDSTREAM_TOPIC_FEEDBACK": s.topic_feedback,
               "FRAUDSTREAM_REPORTS_DIR": str(tmp_path / "reports"),
               "FRAUDSTREAM_UI_METRICS_PORT": str(metrics)}  # fmt: skip
        with running_ui(tmp_path / "ui.log", free_port(), env) as url:
            yield url, s, metrics


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    # Chromium leaves a folder (org.chromium.Chromium.*) in TMPDIR after every run: one of ours, removed
    # after. A short path: Chromium's Unix sockets go there too, and pytest's tmp_path is too long for them.
    scratch = tempfile.mkdtemp(prefix="fs-chromium-")
    service = Service("/usr/bin/chromedriver", env={**os.environ, "TMPDIR": scratch})
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(scratch, ignore_errors=True)


def test_analyst_logs_in_reads_the_explanation_and_confirms_fraud(
    ui_server: tuple[str, Settings, int], browser: webdriver.Chrome
) -> None:
    url, s, metrics_port = ui_server
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 20)
    browser.get(url + "/")
    wait.until(ec.presence_of_element_located((By.ID, "username"))).send_keys("ana")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    first = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a.alert-link")))
    browser.save_screenshot(str(ARTEFACTS / "1-queue.png"))
    txn_id = first.text
    first.click()

    chart = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#waterfall svg")))
    bars = chart.find_elements(By.CSS_SELECTOR, "g.bar rect")
    assert len(bars) >= 4, "expected value, feature bars and the decision"
    assert chart.size["width"] > 400
    assert browser.find_elements(By.CSS_SELECTOR, "#reasons li")
    browser.save_screenshot(str(ARTEFACTS / "2-alert.png"))

    browser.find_element(By.ID, "note").send_keys("card holder denies; travel impossible")
    browser.find_element(By.ID, "block-card").click()
    kinds = Select(browser.find_element(By.ID, "fraud-type"))
    kinds.select_by_visible_text("Cloned card (used far apart at once)")
    browser.find_element(By.ID, "confirm-fraud").click()
    banner = wait.until(ec.presence_of_element_located((By.ID, "done")))
    assert txn_id in banner.text
    assert "fraud" in banner.text
    browser.save_screenshot(str(ARTEFACTS / "3-confirmed.png"))

    with psycopg.connect(s.pg_conninfo(reveal=True), row_factory=dict_row) as conn:
        (label,) = conn.execute("select * from labels where txn_id = %s", (txn_id,)).fetchall()
    assert (label["is_fraud"], label["actor"], label["note"], label["fraud_type"]) == (
        True,
        "ana",
        "card holder denies; travel impossible",
        "impossible_travel",
    )
    (event,) = [orjson.loads(r.value) for r in drain(s.kafka_servers, s.topic_feedback, expected=1)]
    assert (event["txn_id"], event["is_fraud"], event["source"], event["analyst"]) == (
        txn_id,
        1,
        "analyst",
        "ana",
    )

    # and in the queue's health that Prometheus scrapes from `fraudstream ui`
    health = scrape(metrics_port)
    assert (health["fraudstream_alerts_up"], health["fraudstream_alerts_closed_fraud_24h"]) == (1, 1)

    # the verdict counts at once in the models' live performance
    browser.get(url + "/models")
    wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "Live performance"))).click()
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#live tbody tr")))
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:7] == ["v-ui-test", "12", "12", "1", "1.0", "0.0833", "1.0"], cells
    browser.save_screenshot(str(ARTEFACTS / "4-live.png"))

    # a card holder calls: the header's search finds the card, its page lists every decision on it
    browser.find_element(By.ID, "search").send_keys(label["card_id"] + Keys.ENTER)
    links = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "a.txn-link")))
    assert len(links) == 6, "populate gives each of its two cards 6 transactions"
    assert txn_id in [a.text for a in links]
    assert f"fraud confirmed on {txn_id}" in browser.find_element(By.ID, "blocked").text, (
        "the verdict blocked it"
    )
    browser.save_screenshot(str(ARTEFACTS / "5-card.png"))
    oldest = links[-1].text
    links[-1].click()
    heading = wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert oldest in heading.text
    assert browser.find_element(By.ID, "card-link").text == label["card_id"]

    # the next alert: its card's other open alerts settled with one verdict, two of them ticked
    browser.get(url + "/")
    top = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a.alert-link")))
    top_id = top.text
    top.click()
    boxes = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#siblings input.also")))
    assert len(boxes) >= 2
    ticked = [box.get_attribute("value") for box in boxes[:2]]
    for box in boxes[:2]:
        box.click()
    browser.save_screenshot(str(ARTEFACTS / "6-card-alerts.png"))
    browser.find_element(By.ID, "mark-legit").click()
    more = wait.until(ec.presence_of_element_located((By.ID, "done-more")))
    assert more.text == ", with 2 more on its card"
    with psycopg.connect(s.pg_conninfo(reveal=True), row_factory=dict_row) as conn:
        settled = conn.execute(
            "select l.txn_id, l.is_fraud, l.given_on, a.status from labels l join alerts a using (txn_id)"
            " where l.txn_id = any(%s) order by l.txn_id",
            ([top_id, *ticked],),
        ).fetchall()
    assert sorted((r["txn_id"], r["is_fraud"], r["given_on"], r["status"]) for r in settled) == sorted(
        [(top_id, False, None, "legit")] + [(t, False, top_id, "legit") for t in ticked]
    )

    # the queue's filter form as a browser sends it (an empty minimum score), one row per card
    browser.get(url + "/")
    Select(wait.until(ec.presence_of_element_located((By.NAME, "decision")))).select_by_visible_text("review")
    browser.find_element(By.ID, "by-card").click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait.until(ec.url_contains("by_card=true"))
    assert "min_score=&" in browser.current_url, "the browser sends the empty field"
    rows = browser.find_elements(By.CSS_SELECTOR, "#alerts a.alert-link")
    assert 1 <= len(rows) <= 2, "at most one row for each of the two cards"
    assert "cards)" in browser.find_element(By.TAG_NAME, "h1").text
