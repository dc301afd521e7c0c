"""`fraudstream export` and the scheduled trainer on real PostgreSQL: the decided transactions and the
labels that came back join the Parquet history, and the next training run learns from them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg

from app.audit_export import PART, export_audit
from app.feedback import FeedbackService
from app.history import read_history, write_history
from app.schema import TRANSACTION_FIELDS, Feedback
from app.scoring.decide import Decision, Policy
from app.scoring.merchants import feast_lookup
from app.scoring.store import DecisionStore
from app.scoring.store import migrate as migrate_audit
from app.settings import Settings
from app.simulator.model import SimConfig, simulate
from app.ui.store import UiStore
from app.worker.process import isolated_env, settings_for
from expectations.validate import validate_history
from features.merchant import MERCHANT_FEATURES, merchant_daily_features
from features.store import close_store, feature_store
from tests.e2e.cli import fraudstream
from tests.integration.test_ui import analyst_desk
from tests.services import fresh_database, unique
from tests.ui_data import T0, populate, record_approved
from training.feature_refresh import FeatureRefresh
from training.jobs import scheduled_train, train_job
from training.registry import Registry


def _moved(d: Decision, txn_id: str, event_time: datetime) -> Decision:
    return replace(d, txn=d.txn.model_copy(update={"txn_id": txn_id, "event_time": event_time}))


def test_export_writes_settled_days_with_their_labels_and_rewrites_relabelled_ones(
    settings: Settings, tmp_path: Path
) -> None:
    history = tmp_path / "history"
    # the history the deployment started from: 2026-03-02 .. 03-05
    imported = simulate(SimConfig(customers=300, merchants=600, days=4, seed=7, start=T0.date()))
    write_history(imported, history)
    already = imported[imported["event_time"].dt.date == (T0 + timedelta(days=1)).date()].iloc[0]["txn_id"]

    def spread(decisions: list[Decision]) -> list[Decision]:
        # one decision a day from 03-02 12:00; the second is a transaction the history holds already;
        # the fourth a decline
        moved = [
            _moved(d, already if i == 1 else d.txn.txn_id, T0 + timedelta(days=i))
            for i, d in enumerate(decisions)
        ]
        return [replace(d, decision="decline") if i == 3 else d for i, d in enumerate(moved)]

    with fresh_database(settings, "it_export") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        assert export_audit(conninfo, history, 7).clock is None, "no tables yet: nothing to export"
        assert not (history / "_audit_export.json").exists()
        ui, feedback = analyst_desk(conninfo)
        d = populate(conninfo, tmp_path / "model", n=12, adjust=spread)  # the audit's clock: 03-13 12:00
        since = datetime.now(UTC)
        ui.verdict(d[0].txn.txn_id, "ana", True, "", fraud_type="card_testing")  # 03-02: fraud, by an analyst
        chargeback = T0 + timedelta(days=5)
        feedback.handle([Feedback(txn_id=d[2].txn.txn_id, card_id=d[2].txn.card_id, is_fraud=1,
                                  label_time=chargeback, source="chargeback",
                                  fraud_scenario="made-up reason")])  # fmt: skip  # 03-04: a type not known
        ui.verdict(d[3].txn.txn_id, "ana", True, "wrong button")  # 03-05: undone, so no label
        ui.undo(d[3].txn.txn_id, "ana", since)

        env = {"FRAUDSTREAM_PG_DB": db}
        first = fraudstream("export", "--history", str(history), env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert first.stdout.strip() == (
            "export: 4 day(s) 2026-03-02..2026-03-05 -> 3 transactions, 2 labelled fraud, 1 already in the"
            " history left out; settled through 2026-03-05 (audit clock 2026-03-13 12:00)"
        )
        assert sorted(p.parent.name for p in history.glob(f"*/{PART}")) == [
            "date=2026-03-02", "date=2026-03-04", "date=2026-03-05"
        ]  # fmt: skip
        rows = read_history(history).set_index("txn_id")
        assert len(rows) == len(imported) + 3, "the transaction the history held is there once"
        exported = rows.loc[[d[0].txn.txn_id, d[2].txn.txn_id, d[3].txn.txn_id]]
        assert list(exported["is_fraud"]) == [1, 1, 0]
        assert list(exported["fraud_scenario"]) == ["card_testing", "reported", "unobserved"], (
            "d0: the analyst's type; d2: a chargeback whose reason is no known type; d3, a decline whose"
            " verdict was undone: its label is not known (no chargeback comes for it)"
        )
        assert exported["label_time"].iloc[1] == pd.Timestamp(chargeback)
        assert exported["label_time"].iloc[2] == pd.Timestamp(d[3].txn.event_time + timedelta(days=7))
        for field in TRANSACTION_FIELDS[2:]:  # after txn_id and event_time
            assert exported[field].iloc[0] == getattr(d[0].txn, field), field
        gx = validate_history(history, tmp_path / "gx")
        assert gx.success, gx.one_line()

        files = {p: p.stat().st_mtime_ns for p in history.glob(f"*/{PART}")}
        idle = fraudstream("export", "--history", str(history), env=env)
        assert idle.returncode == 0, idle.stderr[-3000:]
        assert idle.stdout.startswith("export: nothing new: settled through 2026-03-05"), idle.stdout
        assert {p: p.stat().st_mtime_ns for p in history.glob(f"*/{PART}")} == files

        # a late chargeback on an exported day, and the audit's clock moves on (03-22: settled through 03-14)
        late = T0 + timedelta(days=8)
        feedback.handle([Feedback(txn_id=d[3].txn.txn_id, card_id=d[3].txn.card_id, is_fraud=1,
                                  label_time=late, source="chargeback")])  # fmt: skip
        store = DecisionStore(conninfo)
        store.write([_moved(d[11], "ui-later", T0 + timedelta(days=20))])
        store.close()
        again = export_audit(conninfo, history, settings.label_delay_days)
        assert again.days == tuple(f"2026-03-{day:02d}" for day in range(5, 14)), again.days
        assert (again.rows, again.frauds, again.duplicates) == (9, 1, 0)
        assert (
            history.joinpath("date=2026-03-04", PART).stat().st_mtime_ns
            == files[history / "date=2026-03-04" / PART]
        ), "a day whose labels did not change is not written again"
        rows = read_history(history).set_index("txn_id")
        assert rows.loc[d[3].txn.txn_id, "is_fraud"] == 1
        assert rows.loc[d[3].txn.txn_id, "label_time"] == pd.Timestamp(late)
        assert "ui-later" not in rows.index, "not settled yet"
        assert len(rows) == len(imported) + 3 + 8

        # a decision made now for a day written already (a partition that lagged behind a backlog)
        store = DecisionStore(conninfo)
        store.write([_moved(d[10], "ui-lagged", T0 + timedelta(days=7, hours=3))])
        store.close()
        lagged = export_audit(conninfo, history, settings.label_delay_days)
        assert lagged.days == ("2026-03-09",), lagged.days
        assert "ui-lagged" in read_history(history).set_index("txn_id").index


def test_a_label_written_while_the_export_starts_is_not_missed(settings: Settings, tmp_path: Path) -> None:
    """Label ids are handed out before their transactions commit: a label still in flight can have a
    smaller id than one committed already. The export takes its mark after the labels in flight."""

    def spread(decisions: list[Decision]) -> list[Decision]:  # 03-02, 03-03 settled; the clock 03-22
        return [_moved(d, d.txn.txn_id, T0 + timedelta(days=(0, 1, 20)[i])) for i, d in enumerate(decisions)]

    history = tmp_path / "history"
    with fresh_database(settings, "it_export_race") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        UiStore(conninfo).migrate()
        FeedbackService(conninfo, threshold=1_000, request_retrain=lambda _: None).migrate()
        d = populate(conninfo, tmp_path / "model", n=3, adjust=spread)
        insert = (
            "insert into labels (txn_id, card_id, is_fraud, source, label_time)"
            " values (%s, %s, true, 'chargeback', %s)"
        )
        with psycopg.connect(conninfo) as slow, psycopg.connect(conninfo, autocommit=True) as quick:
            slow.execute(insert, (d[0].txn.txn_id, d[0].txn.card_id, T0 + timedelta(days=2)))  # id 1, open
            quick.execute(insert, (d[1].txn.txn_id, d[1].txn.card_id, T0 + timedelta(days=3)))  # id 2
            with ThreadPoolExecutor(1) as pool:
                exporting = pool.submit(export_audit, conninfo, history, 7)
                time.sleep(1.5)
                assert not exporting.done(), "the export waits for the label in flight"
                slow.commit()
                result = exporting.result(timeout=60)
        assert (result.days, result.rows, result.frauds) == (("2026-03-02", "2026-03-03"), 2, 2)
        assert list(read_history(history)["is_fraud"]) == [1, 1]
        assert export_audit(conninfo, history, 7).days == ()


def test_a_let_through_decline_stands_for_the_declines_nobody_labelled(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker's policy records the exploration rate with each decision; the export weighs each
    would-be decline let through by the unlabelled declines of its day that could have been."""
    policy = Policy(review=0.0, decline=0.15, explore_rate=0.5, explore_max_amount=500.0)

    def clock_on(decisions: list[Decision]) -> list[Decision]:  # the last one moves the audit's clock on
        return [*decisions[:-1], _moved(decisions[-1], decisions[-1].txn.txn_id, T0 + timedelta(days=9))]

    history = tmp_path / "history"
    with fresh_database(settings, "it_export_weight") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui, _ = analyst_desk(conninfo)
        d = populate(conninfo, tmp_path / "model", n=30, adjust=clock_on, policy=policy)[:-1]
        explored = [x.txn.txn_id for x in d if x.explored]
        declined = [x for x in d if x.decision == "decline"]
        capped = [x.txn.txn_id for x in declined if x.txn.amount > 500]
        labelled = next(x.txn.txn_id for x in declined if x.txn.amount <= 500)
        ui.verdict(labelled, "ana", True, "the card holder did not make it")
        unseen = [x.txn.txn_id for x in declined if x.txn.amount <= 500 and x.txn.txn_id != labelled]
        assert explored, "the data this test needs"
        assert unseen, "the data this test needs"
        assert capped, "the data this test needs"

        export_audit(conninfo, history, 7)
        rows = read_history(history).set_index("txn_id")
        weight = 1 + len(unseen) / len(explored)
        assert rows.loc[explored, "weight"].tolist() == [weight] * len(explored), (
            "each stands for itself and its share of the declines nobody labelled"
        )
        assert rows.loc[[*unseen, *capped], "weight"].eq(0).all(), "unobserved"
        assert rows.loc[labelled, "weight"] == 1.0, "an analyst's verdict: itself"
        assert rows["weight"].sum() == len(d) - len(capped), "no decline over the cap is let through"
        gx = validate_history(history, tmp_path / "gx")
        assert gx.success, gx.one_line()


def test_the_scheduled_run_trains_on_the_live_days_and_their_labels(
    settings: Settings, tmp_path: Path
) -> None:
    world = simulate(SimConfig(customers=300, merchants=600, days=40, seed=5, fraud_scale=3))
    split = world["event_time"].min().normalize() + pd.Timedelta(days=30)
    history = tmp_path / "history"
    write_history(world[world["event_time"] < split], history)
    live = world[world["event_time"] >= split]
    with fresh_database(settings, "it_export_train") as db:
        env = {**isolated_env(unique("it-export"), tmp_path), "FRAUDSTREAM_PG_DB": db,
               "FRAUDSTREAM_MODELS_DIR": str(tmp_path / "models"),
               "FRAUDSTREAM_TRAIN_DAYS": "29"}  # fmt: skip  # each run reads its last 29 days
        s = settings_for(env)
        conninfo = s.pg_conninfo(reveal=True)
        train_job(s, history, report=tmp_path / "r0")
        registry = Registry(conninfo)
        first = registry.champion()
        assert first is not None
        migrate_audit(conninfo)
        record_approved(conninfo, live, first.version)  # the worker's decisions on the ten days after
        clock = live["event_time"].max()
        arrived = live[(live["is_fraud"] == 1) & (live["label_time"] <= clock)]  # the chargebacks sent so far
        feedback = FeedbackService(conninfo, threshold=1_000, request_retrain=lambda _: None)
        feedback.migrate()
        feedback.handle([
            Feedback(txn_id=r["txn_id"], card_id=r["card_id"], is_fraud=1, label_time=r["label_time"],
                     source="chargeback")
            for r in arrived.to_dict("records")
        ])  # fmt: skip

        line = scheduled_train(s, history, report=tmp_path / "r1")
        through = (clock - pd.Timedelta(days=s.label_delay_days)).normalize() - pd.Timedelta(days=1)
        settled = live[live["event_time"] < through + pd.Timedelta(days=1)]
        frauds = settled["txn_id"].isin(arrived["txn_id"]).sum()
        assert line.startswith(
            f"export: {(through - split).days + 1} day(s) {split.date()}..{through.date()} -> "
            f"{len(settled):,} transactions, {frauds:,} labelled fraud; settled through {through.date()}"
        ), line
        assert frauds > 0
        # the first run read days 2-30 and left the card states before day 2; this one reads days 4-32, and
        # folds only days 2 and 3 onto them
        since, earlier = through + pd.Timedelta(days=1 - 29), split - pd.Timedelta(days=29)
        before = world[world["event_time"] < since]
        between = before[before["event_time"] >= earlier]
        assert f"; card states before {since.date()}: {before['card_id'].nunique():,} cards, from snapshot " \
            f"{earlier.date()} + {len(between):,} transactions; " in line, line  # fmt: skip
        # the workers' merchant features for the audit's day, from the exported history: the same as the
        # whole simulated world (its labels known by that day) gives
        today = clock.normalize()
        assert "; train: " in line
        assert line.endswith(f"merchants materialised online for {today.date()}"), line
        on_disk = pd.read_parquet(s.feast_dir / "merchant_features.parquet")  # the training rewrote it first
        assert on_disk["event_timestamp"].max() == today
        _assert_online_features_are_the_worlds(s, merchant_daily_features(world, s.label_delay_days), today)
        newest, older = registry.list()
        assert (older.version, newest.parent) == (first.version, first.version)
        assert pd.Timestamp(older.data_to) == split
        assert pd.Timestamp(newest.data_to) == through + pd.Timedelta(days=1), (
            "the new model's cut-off is the end of the exported days"
        )
        listed = fraudstream("models", "list", env={"FRAUDSTREAM_PG_DB": db}).stdout
        assert f"data {since.date()} .. {through.date()}" in listed.splitlines()[0], listed


def test_the_merchant_features_follow_the_audits_day_between_runs(settings: Settings, tmp_path: Path) -> None:
    """The trainer's refresh: once the audit's clock is in a new day, the settled days are exported and the
    workers' merchant features are those of that day, as the whole simulated world gives them; not again
    within the day."""
    world = simulate(SimConfig(customers=300, merchants=600, days=40, seed=5, fraud_scale=3))
    origin = world["event_time"].min().normalize()
    history = tmp_path / "history"
    write_history(world[world["event_time"] < origin + pd.Timedelta(days=30)], history)
    truth = merchant_daily_features(world, settings.label_delay_days)
    with fresh_database(settings, "it_feature_refresh") as db:
        s = settings_for({**isolated_env(unique("it-refresh"), tmp_path), "FRAUDSTREAM_PG_DB": db,
                          "FRAUDSTREAM_FEATURES_REFRESH_S": "0.1"})  # fmt: skip
        conninfo = s.pg_conninfo(reveal=True)
        migrate_audit(conninfo)
        feedback = FeedbackService(conninfo, threshold=1_000, request_retrain=lambda _: None)
        feedback.migrate()
        refresh = FeatureRefresh(s, history)
        sent: set[str] = set()
        for day in (38, 39):
            clock = origin + pd.Timedelta(days=day, hours=1)
            live = world[
                (world["event_time"] >= origin + pd.Timedelta(days=30)) & (world["event_time"] < clock)
            ]
            record_approved(conninfo, live[~live["txn_id"].isin(sent)], "v1")  # the worker's decisions so far
            sent |= set(live["txn_id"])
            arrived = live[(live["is_fraud"] == 1) & (live["label_time"] <= clock)]
            feedback.handle([
                Feedback(txn_id=r["txn_id"], card_id=r["card_id"], is_fraud=1, label_time=r["label_time"],
                         source="chargeback")
                for r in arrived.to_dict("records")
            ])  # fmt: skip
            time.sleep(0.2)
            refresh.maybe_run()
            today = clock.normalize()
            assert refresh.day == today.date()
            on_disk = pd.read_parquet(s.feast_dir / "merchant_features.parquet")
            assert on_disk["event_timestamp"].max() == today
            assert (history / f"date={(today - pd.Timedelta(days=8)).date()}" / PART).exists(), (
                "the day the new window takes in is exported first"
            )
            _assert_online_features_are_the_worlds(s, truth, today)
        written = (s.feast_dir / "merchant_features.parquet").stat().st_mtime_ns
        time.sleep(0.2)
        refresh.maybe_run()  # the same audit day: nothing to build
        assert (s.feast_dir / "merchant_features.parquet").stat().st_mtime_ns == written


def _assert_online_features_are_the_worlds(s: Settings, truth: pd.DataFrame, day: pd.Timestamp) -> None:
    """The workers' merchant features for ``day`` (the online store) are those the whole simulated world
    gives (``truth``: ``merchant_daily_features`` of it, its labels as known each day)."""
    expected = truth[truth["event_timestamp"] == day].set_index("merchant_id")[list(MERCHANT_FEATURES)]
    assert len(expected) > 100
    store = feature_store(s)
    try:
        online = pd.DataFrame.from_dict(feast_lookup(store)(list(expected.index)), orient="index")
    finally:
        close_store(store)
    pd.testing.assert_frame_equal(online.astype("float64")[expected.columns], expected, check_names=False)
