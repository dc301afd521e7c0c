"""The compiled card fold (scripts/build-native) computes exactly what features/card.py does."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import features.card as source
from app.bench import fold_events, simulated_raws
from app.simulator.model import SimConfig
from features import fold


def _native() -> Any:
    if fold.KIND != "mypyc":
        if os.environ.get("FRAUDSTREAM_REQUIRE_NATIVE") == "1":  # set by .ci/run: CI proves the compiled path
            pytest.fail(f"the compiled fold is {fold.STATE}: scripts/build-native did not build it")
        pytest.skip(f"the compiled fold is {fold.STATE} (scripts/build-native)")
    return fold.FOLD


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same keys in the same order, same types, same values (NaN included, to the last bit via repr)."""
    return list(a) == list(b) and all(type(a[k]) is type(b[k]) and repr(a[k]) == repr(b[k]) for k in a)


def _check(native: Any, events: list[tuple[str, tuple[Any, ...]]], pending_s: float) -> int:
    """Fold ``events`` (card, Txn fields) with both; returns the number of events compared."""
    states: dict[str, tuple[Any, Any]] = {}
    for n, (card, fields) in enumerate(events):
        py, nat = states.setdefault(card, (source.CardState(), native.CardState()))
        if py.last is not None and fields[1] < py.last.t - pending_s:
            continue  # later than the lateness: the worker sends it to the dead letters
        a, b = source.Txn(*fields), native.Txn(*fields)
        features_py, features_native = source.card_features(py, a), native.card_features(nat, b)
        assert _same(features_py, features_native), f"event {n}: {features_py} != {features_native}"
        assert native.contains(nat, fields[0]) is False
        source.update(py, a, pending_s)
        native.update(nat, b, pending_s)
        state = py.to_bytes()
        assert nat.to_bytes() == state, f"event {n}: the state bytes differ"
        assert native.CardState.from_bytes(state).to_bytes() == state
        assert native.contains(nat, fields[0]) is True
    return len(events)


def test_the_compiled_fold_matches_the_source_on_a_simulated_stream() -> None:
    native = _native()
    raws = simulated_raws(SimConfig(customers=150, merchants=400, days=40, seed=3))
    events = fold_events(raws)
    assert len(events) == len(raws), "every simulated transaction is valid"
    assert _check(native, events, 300.0) > 5_000


def test_the_compiled_fold_matches_the_source_at_every_cap_and_out_of_order() -> None:
    """One card past every cap (hours, home cells, merchants), events up to 15 min out of order."""
    native = _native()
    rng = random.Random(1)
    events = []
    for i in range(3_000):
        lat = rng.choice([rng.uniform(-60, 60), 48.1, 10.3])
        lon = rng.choice([rng.uniform(-170, 170), 2.2])
        fields = (f"t{i}", i * 3_000.0 + rng.uniform(-900, 0), round(rng.uniform(1, 500), 2), lat, lon,
                  rng.choice("ABCDEFG"), f"m{rng.randrange(400)}")  # fmt: skip
        events.append(("card", fields))
    _check(native, events, 1_000.0)
    state = source.CardState()
    for _, fields in events:
        source.update(state, source.Txn(*fields), 1_000.0)
    assert len(state.cells.keys) == source.MAX_CELLS
    assert len(state.merchants.keys) == source.MAX_MERCHANTS


def test_a_build_from_another_source_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edited = tmp_path / "card.py"
    shutil.copy(source.__file__, edited)
    edited.write_text(edited.read_text() + "\n# edited after the build\n")
    monkeypatch.setattr(fold, "source", SimpleNamespace(__file__=str(edited)))
    assert fold.native_state() in {"stale", "missing"}
    if fold.KIND == "mypyc":
        assert fold.native_state() == "stale"
    monkeypatch.setattr(fold, "NATIVE", "features._no_such_build")
    assert fold.native_state() == "missing"


def test_the_stream_and_the_backfill_run_the_chosen_fold() -> None:
    from app.worker import card_features as stream  # noqa: PLC0415
    from features import backfill  # noqa: PLC0415

    assert stream.card_features is fold.card_features
    assert backfill.card_features is fold.card_features
