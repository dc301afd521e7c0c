"""The demo reports its trainer's runs from the trainer's log (``app.demo.trainer_runs``)."""

from __future__ import annotations

from pathlib import Path

from app.demo import trainer_runs


def test_the_runs_are_read_from_the_trainers_log(tmp_path: Path) -> None:
    log = tmp_path / "trainer.log"
    assert trainer_runs(log) == [], "no log yet: no runs"
    log.write_text(
        "2026-12-03 14:50:00,001 INFO trainer: next scheduled run at 2026-12-04T02:00:00+00:00\n"
        "2026-12-03 14:52:10,002 INFO trainer: retrain request: confirmed fraud: 50 labels -> export:"
        " 5 day(s) 2026-12-03..2026-12-07 -> 9,876 transactions, 40 labelled fraud; train: v1 ...;"
        " promoted (71s)\n"
        "Materializing 1 feature views\n"
        "2026-12-03 14:59:00,003 ERROR trainer: run failed: history failed validation\n"
        "2026-12-03 15:00:00,004 WARNING trainer: drift check skipped: too few decisions\n"
        "2026-12-03 15:00:01,005 INFO trainer: the audit's day 2026-12-12: export: 1 day(s) 2026-12-04 ->"
        " 1,940 transactions; features: 60168 merchant-day rows -> data/feast/merchant_features.parquet\n"
        "2026-12-03 15:00:12,006 INFO trainer: the audit's day 2026-12-13: export: nothing new (0.6s)\n"
    )
    assert trainer_runs(log) == [
        "trainer: retrain request: confirmed fraud: 50 labels -> export: 5 day(s) 2026-12-03..2026-12-07 ->"
        " 9,876 transactions, 40 labelled fraud; train: v1 ...; promoted (71s)",
        "trainer: run failed: history failed validation",
        "trainer: merchant features built for 2 new day(s) of the audit, 2026-12-12..2026-12-13",
    ]
