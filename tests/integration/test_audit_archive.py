"""The decision audit's retention on real PostgreSQL: old decisions move to Parquet files, exactly
those the history holds and whose alert is closed, and nothing is lost on the way."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.audit_archive import (
    SELECT,
    _archive_day,
    _batches,
    archive_audit,
    find_decision,
    id_hashes,
    index_path,
)
from app.audit_export import PART, Mark, export_audit
from app.history import read_history
from app.schema import Feedback
from app.scoring.decide import Decision
from app.settings import Settings
from app.ui.store import UiStore
from app.ui.web import create_app
from tests.e2e.cli import fraudstream
from tests.integration.test_ui import PASSWORD, analyst_desk, login
from tests.services import fresh_database
from tests.ui_data import T0, populate

NOW = T0 + timedelta(days=20)  # the archive's clock: keeping 10 days, decisions scored before 03-12 12:00 go


def _audit(decisions: list[Decision]) -> list[Decision]:
    """One decision a day from 03-02 12:00, scored a minute after its event; the second shares the
    first's day (03-02 15:00); the fourth is approved (no alert)."""
    out = []
    for i, d in enumerate(decisions):
        when = T0 + timedelta(hours=3) if i == 1 else T0 + timedelta(days=i)
        txn = d.txn.model_copy(update={"event_time": when})
        moved = replace(d, txn=txn, scored_at=when + timedelta(minutes=1))
        out.append(replace(moved, decision="approve") if i == 3 else moved)
    return out


def _ids_digests(conninfo: str) -> list[tuple[str]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("select ids_sha256 from audit_archives").fetchall()


def _ids(conn: psycopg.Connection, table: str) -> set[str]:
    return {r[0] for r in conn.execute(f"select txn_id from {table}")}


def test_archive_moves_exported_closed_decisions_to_parquet_and_out_of_the_database(
    settings: Settings, tmp_path: Path
) -> None:
    history, archive = tmp_path / "history", tmp_path / "archive"
    with fresh_database(settings, "it_archive") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui, feedback = analyst_desk(conninfo)
        d = populate(conninfo, tmp_path / "model", n=12, adjust=_audit)
        ids = [x.txn.txn_id for x in d]
        assert archive_audit(conninfo, history, archive, 10, now=NOW).line() == (
            f"archive: nothing moved: no export has written {history} yet (a decision leaves the database"
            " only once the history holds its day)"
        )
        assert archive_audit(conninfo, history, archive, 0, now=NOW).line().startswith("archive: off")
        ui.verdict(ids[0], "ana", True, "")  # 03-02: closed, fraud
        ui.verdict(ids[2], "ana", False, "")  # 03-04: closed, genuine
        # the audit's clock is 03-13 12:00: the export writes 03-02 .. 03-05 (d0 .. d3; none on 03-03)
        exported = export_audit(conninfo, history, 7)
        assert exported.days == ("2026-03-02", "2026-03-04", "2026-03-05"), exported.line()
        mark = Mark.read(history)
        assert mark is not None

        records = [find_decision(conninfo, archive, ids[i]) for i in (0, 2, 3)]
        assert all(r is not None and r[1] == "database" for r in records)
        env = {"FRAUDSTREAM_PG_DB": db, "FRAUDSTREAM_AUDIT_KEEP_DAYS": "30"}
        # the CLI archives against the real clock: every decision here was scored in March 2026
        result = fraudstream("archive", "--history", str(history), "--to", str(archive), env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        horizon = result.stdout.split("scored before ")[1][:16]
        assert result.stdout.strip() == (
            f"archive: 3 decisions scored before {horizon} -> 3 file(s); 1 kept with an open alert;"
            " 8 kept: their day is not in the history yet"
        ), "d0, d2 (closed) and d3 (approved) go; d1 (open) and d4 .. d11 (not exported) stay"

        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert _ids(conn, "decisions") == set(ids) - {ids[0], ids[2], ids[3]}
            assert _ids(conn, "alerts") == set(ids) - {ids[0], ids[2], ids[3]}, "their closed alerts went too"
            recorded = conn.execute(
                "select scored_day, path, rows, sha256, first_scored from audit_archives order by scored_day"
            ).fetchall()
            with pytest.raises(psycopg.errors.RaiseException, match="append-only audit: DELETE refused"):
                conn.execute("delete from decisions where txn_id = %s", (ids[1],))
        assert [(str(day), rows) for day, _, rows, _, _ in recorded] == [
            ("2026-03-02", 1), ("2026-03-04", 1), ("2026-03-05", 1)
        ]  # fmt: skip
        for _, path, _, sha256, _ in recorded:
            assert hashlib.sha256((archive / path).read_bytes()).hexdigest() == sha256
        files = sorted(archive.glob("scored=*/*.parquet"))
        assert [p.relative_to(archive).as_posix() for p in files] == [r[1] for r in recorded]
        for file in files:  # each file's index: its txn_ids' hashes, sorted, with the digest recorded
            held = pq.read_table(file, columns=["txn_id"]).column("txn_id").to_pylist()
            assert np.fromfile(index_path(file), "<u8").tolist() == sorted(id_hashes(held).tolist())
        assert {r[0] for r in _ids_digests(conninfo)} == {
            hashlib.sha256(index_path(f).read_bytes()).hexdigest() for f in files
        }
        rows = pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)
        assert rows["txn_id"].tolist() == [ids[0], ids[2], ids[3]]
        assert rows["alert_status"].tolist() == ["fraud", "legit", None]
        assert rows["alert_closed_by"].tolist() == ["ana", "ana", None]
        assert rows["decision"].tolist() == ["review", "review", "approve"]
        for got, want in zip(rows.to_dict("records"), (d[0], d[2], d[3]), strict=True):
            assert got["score"] == want.score
            assert got["model_version"] == want.model_version
            assert got["scored_at"] == want.scored_at
            assert got["event_time"] == want.txn.event_time
            assert json.loads(got["shap"]) == pytest.approx(want.shap)
            assert json.loads(got["reasons"]) == want.reasons
            assert json.loads(got["txn"])["txn_id"] == want.txn.txn_id

        # a decision record reads the same from the archive as it did from the database
        for i, before in zip((0, 2, 3), records, strict=True):
            after = find_decision(conninfo, archive, ids[i])
            assert after is not None
            assert after[1] == recorded[[0, 2, 3].index(i)][1]
            assert before is not None
            assert after[0] == before[0]
        shown = fraudstream("decision", ids[2], "--archive", str(archive), env=env)
        assert shown.returncode == 0, shown.stderr[-3000:]
        record = json.loads(shown.stdout)
        assert (record["found_in"], record["alert_status"], record["score"]) == (
            recorded[1][1],
            "legit",
            d[2].score,
        )
        missing = fraudstream("decision", "no-such-txn", "--archive", str(archive), env=env)
        assert missing.returncode == 1
        assert missing.stderr.strip() == (
            "fraudstream: error: decision: no decision for 'no-such-txn' in the database nor in the archive"
            f" ({archive})"
        )

        # the analyst's link to an archived alert says where it went, and the archive's search opens it
        client = TestClient(
            create_app(ui, lambda _: None, tmp_path / "reports", archive_dir=archive), follow_redirects=False
        )
        login(client, "ana")
        gone = client.get(f"/alerts/{ids[0]}")
        assert gone.status_code == 404
        assert gone.text == (
            f"no decision {ids[0]} in the database; decisions scored up to 2026-03-05 whose alerts were"
            " closed have moved to the audit archive: search it from the search page"
        )
        assert 'id="search-archive"' in client.get("/search").text
        search = client.get("/search", params={"q": ids[0], "archive": "true", "scored_on": "2026-03-02"})
        assert search.headers["location"] == f"/transactions/{ids[0]}?archive=true&scored_on=2026-03-02"
        opened = client.get(search.headers["location"])
        assert opened.status_code == 200
        assert f'id="archived">From the audit archive (<code>{recorded[0][1]}</code>)' in opened.text
        assert f"score {d[0].score:.3f}" in opened.text, "its waterfall, from the archived SHAP values"
        assert "Alert closed (fraud) by ana" in opened.text
        assert 'id="report-fraud"' not in opened.text
        assert 'id="undo"' not in opened.text
        approved = client.get(f"/transactions/{ids[3]}", params={"archive": "true"})
        assert approved.status_code == 200, "the whole archive is read without a day"
        assert f"Transaction {ids[3]}" in approved.text
        elsewhere = client.get(
            f"/transactions/{ids[3]}", params={"archive": "true", "scored_on": "2026-03-02"}
        )
        assert (
            elsewhere.text
            == f"no decision {ids[3]} in the database nor in the audit archive's files of 2026-03-02"
        )
        assert client.get(f"/alerts/{ids[1]}").status_code == 200

        # a run that died between the rename and its commit left a file: the next run removes it
        orphan = archive / "scored=2026-03-03" / "part-20260322T000000-0badf00d.parquet"
        orphan.parent.mkdir()
        orphan.write_bytes(files[0].read_bytes())
        index_path(orphan).write_bytes(index_path(files[0]).read_bytes())
        again = archive_audit(conninfo, history, archive, 10, now=NOW)
        assert again.line() == (
            "archive: nothing scored before 2026-03-12 12:00 to move; 1 kept with an open alert;"
            " 6 kept: their day is not in the history yet; 1 file(s) of an unfinished run removed (their rows"
            " are in the database)"
        )
        assert not orphan.exists()
        assert not index_path(orphan).exists()
        assert all(p.exists() and index_path(p).exists() for p in files)

        # d1's alert, on an archived day, is closed now: the export writes 03-02 again from the one
        # decision the database has left, and keeps d0, which went to the archive
        ui.verdict(ids[1], "ana", True, "")
        # a chargeback for d2, archived: its day in the history keeps the label it was written with
        feedback.handle([Feedback(txn_id=ids[2], card_id=d[2].txn.card_id, is_fraud=1,
                                  label_time=T0 + timedelta(days=9), source="chargeback")])  # fmt: skip
        relabelled = export_audit(conninfo, history, 7)
        assert relabelled.days == ("2026-03-02",)
        assert relabelled.unmatched_labels == 1
        assert relabelled.line().endswith(
            "; 1 new label(s) for transactions not in the audit (archived, or never scored) not in the"
            " history"
        )
        day = pq.read_table(history / "date=2026-03-02" / PART).to_pandas()
        assert day[["txn_id", "is_fraud"]].values.tolist() == [[ids[0], 1], [ids[1], 1]]
        assert read_history(history).set_index("txn_id").loc[ids[2], "is_fraud"] == 0
        # and now d1 goes too
        last = archive_audit(conninfo, history, archive, 10, now=NOW)
        assert (last.rows, last.kept_open, len(last.files)) == (1, 0, 1)

        # the files are checked against what audit_archives recorded when their decisions left
        verified = fraudstream("archive", "--verify", "--to", str(archive), env=env)
        assert verified.returncode == 0, verified.stderr[-3000:]
        assert verified.stdout.strip() == (
            "archive: 4 file(s), 4 decisions checked against audit_archives: every file is there, with its"
            " SHA-256 and row count, and its index"
        )
        # an index lost: the lookup reads the file instead, and --verify names it
        index_path(files[2]).unlink()
        fallback = find_decision(conninfo, archive, ids[3])
        assert fallback is not None
        assert fallback[1] == recorded[2][1]
        torn = files[0].read_bytes()[:100]
        files[0].write_bytes(torn)
        unreadable = fraudstream("decision", ids[0], "--archive", str(archive), env=env)
        assert unreadable.returncode == 1
        (line,) = unreadable.stderr.strip().splitlines()
        assert line.startswith(f"fraudstream: error: decision: {files[0]} is unreadable (ArrowInvalid: ")
        assert line.endswith("`fraudstream archive --verify` checks every archived file")
        absent = fraudstream("decision", "no-such-txn", "--archive", str(archive), env=env)
        assert "no decision for 'no-such-txn'" in absent.stderr, "the torn file's index says it is not there"
        files[1].unlink()
        broken = fraudstream("archive", "--verify", "--to", str(archive), env=env)
        assert broken.returncode == 1
        lost = index_path(files[2]).relative_to(archive).as_posix()
        assert broken.stderr.strip() == (
            "fraudstream: error: archive: 4 file(s), 4 decisions checked against audit_archives: 3"
            f" problem(s): {recorded[0][1]} has changed (SHA-256); {recorded[1][1]} is missing;"
            f" {lost} is missing (lookups read its file)"
        )
        needs_history = fraudstream("archive", env=env)
        assert needs_history.returncode == 1
        assert "archive: --history DIR is needed" in needs_history.stderr


def test_a_day_whose_alert_reopens_while_it_is_archived_is_rolled_back_whole(
    settings: Settings, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    with fresh_database(settings, "it_archive_undo") as db:
        conninfo = settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)
        ui = UiStore(conninfo)
        ui.migrate()
        ui.add_user("ana", PASSWORD, "analyst")
        d = populate(conninfo, tmp_path / "model", n=4, adjust=_audit)
        since = datetime.now(UTC)
        ui.verdict(d[0].txn.txn_id, "ana", True, "")
        ui.verdict(d[1].txn.txn_id, "ana", False, "")  # both on 03-02

        def reopening(batches: object) -> object:
            yield from batches  # type: ignore[misc]
            ui.undo(d[1].txn.txn_id, "ana", since)  # after the file holds it, before the delete

        with (
            psycopg.connect(conninfo, autocommit=True) as reader,
            psycopg.connect(conninfo, autocommit=True) as writer,
            reader.transaction(),
            reader.cursor(name="read") as cur,
        ):
            from app.audit_archive import SCHEMA  # noqa: PLC0415
            from app.pg import apply_schema  # noqa: PLC0415

            apply_schema(writer, SCHEMA)
            cur.execute(SELECT, (NOW, T0 + timedelta(days=1), NOW))
            ((day, rows),) = list(_batches(cur, 100))
            assert [r[0] for r in rows] == [d[0].txn.txn_id, d[1].txn.txn_id]
            assert _archive_day(writer, archive, day, reopening([rows])) is None
            assert not list(archive.rglob("*.parquet*")), "the file of the rolled-back day is removed"
            assert _ids(writer, "decisions") == {x.txn.txn_id for x in d}
            assert writer.execute("select count(*) from audit_archives").fetchone() == (0,)
