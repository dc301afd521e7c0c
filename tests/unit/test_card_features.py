"""Card features: known values, no look-ahead, bounded state, and the worker's batch service."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pytest

from app.pan import _ENOUGH, _scan, find_pans, luhn_ok, mask_pans
from app.schema import Transaction, encode
from app.simulator.model import SimConfig, simulate
from app.worker.card_features import DecodedStates, Raw, process_batch
from features.backfill import card_feature_frame
from features.card import (
    FEATURE_NAMES,
    MAX_MERCHANTS,
    MAX_RECENT,
    CardState,
    Txn,
    card_features,
    contains,
    haversine_km,
    update,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC


def txn(i: int, dt: float, amount: float = 10.0, lat: float = 48.85, lon: float = 2.35, **kw: str) -> Txn:
    return Txn(f"t{i:04d}", T0 + dt, amount, lat, lon, kw.get("country", "FR"), kw.get("merchant", "m1"))


def fold(txns: list[Txn]) -> list[dict[str, float]]:
    state, out = CardState(), []
    for t in txns:
        out.append(card_features(state, t))
        update(state, t)
    return out


def test_haversine_known_distance() -> None:
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5, abs=1.0)  # Paris-London
    assert haversine_km(1.0, 2.0, 1.0, 2.0) == 0.0


def test_windows_speed_and_flags_by_hand() -> None:
    first = txn(0, 0, 20.0)
    second = txn(1, 300, 40.0, merchant="m2")  # 5 minutes later, same place
    third = txn(2, 3_600, 30.0, lat=40.4168, lon=-3.7038, country="ES")  # Madrid, 1 h after the first
    f = fold([first, second, third])

    assert f[0]["card_count_10m"] == 1
    assert f[0]["card_sum_10m"] == 20.0
    assert math.isnan(f[0]["seconds_since_prev"])
    assert math.isnan(f[0]["amount_to_mean_30d"])
    assert f[0]["new_country"] == 1.0
    assert f[0]["card_prev_txns"] == 0

    assert f[1]["card_count_10m"] == 2
    assert f[1]["card_sum_10m"] == 60.0
    assert f[1]["card_mean_10m"] == 30.0
    assert f[1]["seconds_since_prev"] == 300
    assert f[1]["km_from_prev"] == 0.0
    assert f[1]["amount_to_mean_30d"] == 2.0
    assert f[1]["new_merchant"] == 1.0
    assert f[1]["new_country"] == 0.0

    # the 1 h window is (t - 3600, t]: the first transaction, exactly 1 h earlier, is out
    assert f[2]["card_count_1h"] == 2
    assert f[2]["card_sum_1h"] == 70.0
    assert f[2]["card_count_24h"] == 3
    assert f[2]["card_count_30d"] == 3
    km = haversine_km(48.85, 2.35, 40.4168, -3.7038)
    assert f[2]["km_from_prev"] == pytest.approx(km)
    assert f[2]["kmh_from_prev"] == pytest.approx(km / (3_300 / 3_600))
    assert f[2]["km_from_home"] == pytest.approx(km)
    assert f[2]["new_country"] == 1.0
    assert f[2]["card_prev_txns"] == 2
    assert f[2]["is_weekend"] == 0.0
    assert f[2]["is_night"] == 0.0


def test_speed_floor_and_local_night() -> None:
    a = txn(0, 0)
    b = txn(1, 1, lat=48.95)  # one second later, ~11 km away
    f = fold([a, b])
    assert f[1]["kmh_from_prev"] == pytest.approx(f[1]["km_from_prev"] * 60), "speeds use at least a minute"
    night = fold([txn(0, -10 * 3_600, lon=2.35)])[0]  # 02:00 UTC, ~02:09 solar time in Paris
    assert night["is_night"] == 1.0
    tokyo = fold([txn(0, 0, lat=35.68, lon=139.69, country="JP")])[0]  # noon UTC is ~21:18 in Tokyo
    assert tokyo["is_night"] == 0.0


def test_home_is_robust_to_one_trip() -> None:
    txns = [txn(i, i * 86_400.0) for i in range(10)] + [txn(10, 10 * 86_400.0, lat=40.71, lon=-74.0)]
    txns.append(txn(11, 11 * 86_400.0))
    f = fold(txns)
    assert f[10]["km_from_home"] > 5_000
    assert f[11]["km_from_home"] < 1.0, "one trip abroad does not move the home"


def test_thirty_day_window_is_hour_aligned_and_expires() -> None:
    f = fold([txn(0, 0), txn(1, 29 * 86_400.0), txn(2, 31 * 86_400.0)])
    assert f[1]["card_count_30d"] == 2
    assert f[2]["card_count_30d"] == 2, "the first transaction left the 30-day window"
    assert f[2]["card_count_7d"] == 2


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulate(SimConfig(customers=150, merchants=300, days=21, seed=9))


def test_no_look_ahead(history: pd.DataFrame) -> None:
    """Changing, adding or removing anything after t never changes a feature at t."""
    cut = history["event_time"].min() + pd.Timedelta(days=12)
    before = card_feature_frame(history).set_index("txn_id")
    future = history["event_time"] > cut
    changed = history.copy()
    rng = np.random.default_rng(0)
    changed.loc[future, "amount"] = rng.uniform(1, 5_000, future.sum()).round(2)
    changed.loc[future, ["lat", "lon", "country"]] = [35.68, 139.69, "JP"]
    changed = changed.drop(changed[future].sample(frac=0.3, random_state=1).index)
    extra = history[future].sample(50, random_state=2).assign(txn_id=lambda d: d["txn_id"] + "-x")
    changed = pd.concat([changed, extra]).sort_values("event_time")
    after = card_feature_frame(changed).set_index("txn_id")
    past = history.loc[~future, "txn_id"]
    pd.testing.assert_frame_equal(before.loc[past], after.loc[past])
    assert not before.loc[history.loc[future, "txn_id"].iloc[:100]].equals(
        after.reindex(history.loc[future, "txn_id"].iloc[:100])
    )


def test_features_never_read_labels(history: pd.DataFrame) -> None:
    relabelled = history.assign(is_fraud=1 - history["is_fraud"], fraud_scenario="none", label_time=pd.NaT)
    pd.testing.assert_frame_equal(card_feature_frame(history), card_feature_frame(relabelled))


def test_state_stays_bounded_and_survives_serialisation() -> None:
    state = CardState()
    for i in range(5_000):  # a bot: 5,000 transactions a minute apart at new merchants
        update(state, txn(i, i * 60.0, merchant=f"m{i}"))
    assert len(state.recent) <= MAX_RECENT
    assert len(state.merchants.keys) == len(state.merchants.times) <= MAX_MERCHANTS
    assert len(state.hour_keys) == len(state.hour_counts) == len(state.hour_sums) <= 30 * 24 + 1
    state.position = (3, 2**40)
    again = CardState.from_bytes(state.to_bytes())
    assert again == state, "every value comes back exactly (doubles, not printed floats)"
    probe = txn(9_999, 5_000 * 60.0)
    assert card_features(again, probe) == card_features(state, probe)
    assert len(state.to_bytes()) < 64 * 1024
    for empty in (CardState(), update(CardState(), txn(1, 0.0))):
        assert CardState.from_bytes(empty.to_bytes()) == empty


def test_a_state_written_as_json_by_an_earlier_version_is_still_read() -> None:
    state = CardState()
    update(state, Txn("a", 1_000_000.0, 12.5, 48.1, 2.2, "FR", "m1"), pending_s=300)
    update(state, Txn("b", 1_000_900.0, 7.25, 48.2, 2.3, "FR", "m2"), pending_s=300)
    state.position = (3, 41)
    written_before = (  # CardState.to_bytes() of sessions 9-11
        b'{"r":[[1000000.0,"a",12.5,48.1,2.2,"FR","m1"],[1000900.0,"b",7.25,48.2,2.3,"FR","m2"]],'
        b'"hf":[277,1.0,12.5],"c":{"FR":1000000.0},"m":{"m1":1000000.0},"g":{"96:4":[1.0,48.1,2.2]},'
        b'"n":1,"w":1000600.0,"s":[1000000.0,"a",12.5,48.1,2.2,"FR","m1"],'
        b'"l":[1000900.0,"b",7.25,48.2,2.3,"FR","m2"],"p":[3,41]}'
    )
    assert CardState.from_bytes(written_before) == state
    assert CardState.from_bytes(state.to_bytes()) == state


def test_a_state_written_in_the_first_binary_layout_is_still_read() -> None:
    state = CardState()
    for t in (
        Txn("a", 1_000_000.0, 12.5, 48.1, 2.2, "FR", "m1"),
        Txn("c", 1_010_000.0, 3.0, 48.3, 2.4, "FR", "m2"),
        Txn("b", 1_004_000.0, 7.25, 48.2, 2.3, "DE", "m2"),  # late: settled into an earlier hour
        Txn("d", 1_020_000.0, 1.0, 48.2, 2.3, "FR", "m1"),
    ):
        update(state, t, pending_s=300)
    state.position = (3, 41)
    written_before = bytes.fromhex(FORMAT_1_STATE)  # CardState.to_bytes() of sessions 12-15
    assert list(state.hour_keys) == [277, 278, 280]
    assert CardState.from_bytes(written_before) == state
    assert CardState.from_bytes(state.to_bytes()) == state
    assert state.to_bytes()[0] == 2, "written in the current layout"


FORMAT_1_STATE = (
    "01040000000300000002000000020000000100000007030000000000000000000000681e2f41030000002900000000000000"
    "0000000080842e4100000000c0a32e4100000000a0d22e4100000000c0202f4100000000000029400000000000001d4000"
    "00000000000840000000000000f03fcdcccccccc0c48409a9999999919484066666666662648409a999999991948409a99"
    "999999990140666666666666024033333333333303406666666666660240000000000050714000000000006071400000"
    "000000807140000000000000f03f0000000000002940000000000000f03f0000000000001d40000000000000f03f0000"
    "00000000084000000000a0d22e4100000000c0a32e410000000080842e4100000000a0d22e410000000000000840343333"
    "33331362409a99999999991b4000000000a0d22e4100000000000008406666666666264840333333333333034000000000"
    "c0202f41000000000000f03f9a9999999919484066666666666602405b2261222c2262222c2263222c2264222c22465222"
    "2c224445222c224652222c224652222c226d31222c226d32222c226d32222c226d31222c224652222c224445222c226d31"
    "222c226d32222c2239363a34222c2263222c224652222c226d32222c2264222c224652222c226d31225d"
)


def _raw(record: dict[str, object] | bytes, key: bytes | None = None, offset: int = 1) -> Raw:
    value = record if isinstance(record, bytes) else encode(record)
    return Raw(key=key, value=value, topic="transactions", partition=0, offset=offset)


def test_batch_service_matches_backfill_and_dead_letters_bad_input(history: pd.DataFrame) -> None:
    sample = history.iloc[:400]
    good = [
        _raw({k: r[k] for k in sample.columns[:11]}, r["card_id"].encode(), offset=i)
        for i, r in enumerate(sample.to_dict("records"))
    ]
    valid = sample.iloc[0].to_dict()
    bad = [
        _raw(b"{not json"),
        _raw({**{k: valid[k] for k in sample.columns[:11]}, "amount": "lots"}),
        _raw({k: valid[k] for k in list(sample.columns[:11]) if k != "merchant_id"}),
        _raw({**{k: valid[k] for k in sample.columns[:11]}, "card_id": "4111-1111-1111-1111"}),
        _raw(b"x" * 70_000),
        _raw({k: valid[k] for k in sample.columns[:11]}, b"another-card"),
        Raw(key=b"k", value=None),
    ]
    table: dict[bytes, bytes | None] = {}
    result = process_batch(good[:200] + bad + good[200:], table, lateness_s=300)

    reasons = [d.reason for d in result.dead]
    assert len(reasons) == 7
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1].startswith("invalid amount")
    assert reasons[2].startswith("invalid merchant_id: Field required")
    assert "looks like a card number" in reasons[3]
    assert reasons[4].startswith("payload too large")
    assert reasons[5].startswith("key does not match card_id")
    assert reasons[6] == "empty message (tombstone)"
    assert all("\n" not in r for r in reasons)
    record = result.dead[0].record()
    assert record["value"] == "{not json"
    assert record["offset"] == 1

    stream = pd.DataFrame(result.features).set_index("txn_id")
    batch = card_feature_frame(sample).set_index("txn_id").loc[stream.index]
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(stream[name], batch[name], rtol=1e-12, equal_nan=True, err_msg=name)
    assert set(result.states) == {c.encode() for c in sample["card_id"]}
    assert result.partitions == dict.fromkeys(result.states, 0)  # each state goes where its card came from
    assert table == {}, "the service returns changed states; the caller writes them back"


def test_late_events_go_to_the_dlq_and_duplicates_are_not_counted_twice() -> None:
    base = {"card_id": "card-1", "merchant_id": "m1", "amount": 5.0, "currency": "EUR", "mcc": "5411",
            "channel": "card_present", "lat": 48.0, "lon": 2.0, "country": "FR"}  # fmt: skip
    t = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    first = _raw({**base, "txn_id": "a", "event_time": t}, b"card-1")
    late_ok = _raw({**base, "txn_id": "b", "event_time": t - pd.Timedelta(seconds=200)}, b"card-1", 2)
    too_late = _raw({**base, "txn_id": "c", "event_time": t - pd.Timedelta(seconds=400)}, b"card-1", 3)
    table: dict[bytes, bytes | None] = {}
    result = process_batch([first, late_ok, too_late, first], table, lateness_s=300)
    assert [f["txn_id"] for f in result.features] == ["a", "b"]
    assert result.features[1]["card_count_10m"] == 1, "a late event sees only what happened before it"
    assert result.late == 1
    assert result.duplicates == 1
    assert result.dead[0].reason == "late event: 400s behind the card's latest event (lateness 300s)"
    assert orjson.loads(result.dead[0].record()["value"])["txn_id"] == "c"


def test_pans_are_found_and_masked() -> None:
    text = '{"card_id": "4111 1111 1111 1111", "other": "4111111111111112", "id": "tx-000000001234"}'
    assert find_pans(text) == ["4111 1111 1111 1111"]  # the second fails Luhn, the third is too short
    assert mask_pans(text) == text.replace("4111 1111 1111 1111", "411111******1111")
    assert mask_pans("5500-0000-0000-0004") == "550000******0004"
    assert find_pans("pan-fedd3d1f46-378282246310005") == ["378282246310005"], "glued to other digits"
    assert find_pans("score 0.4111111111111111, at 1795391793694 ms") == [], "fractions and timestamps"


def test_the_pan_prefilter_passes_every_text_that_holds_a_card_number() -> None:
    """The one-regex prefilter may only skip texts in which the full scan finds nothing."""
    rng = np.random.default_rng(12)
    alphabet = np.array(list("0123456789" * 12 + "- .af_x\u0663"))  # plus an Arabic-Indic digit
    found = 0
    for _ in range(60_000):
        text = "".join(rng.choice(alphabet, rng.integers(12, 40)))
        spans = _scan(text)
        found += bool(spans)
        assert not spans or _ENOUGH.search(text), text
    assert found > 600, "the random texts hold card numbers often enough to test the prefilter"
    assert not _ENOUGH.search("tx-f3400360-000155544"), "digits glued to a letter are no card number"
    assert not _ENOUGH.search("0.4111111111111111"), "nor a fraction"
    assert _ENOUGH.search("id-46-4111 1111 1111 1111")


def test_a_uuid_is_an_identifier_even_when_its_leading_groups_pass_luhn() -> None:
    assert luhn_ok("6417130456784007")  # the UUID's first three groups: 16 digits, a valid card number
    uuid = "64171304-5678-4007-8abc-0123456789ab"
    assert find_pans(uuid) == []
    assert mask_pans(f"txn {uuid} card 4111 1111 1111 1111") == f"txn {uuid} card 411111******1111"
    sent = {"txn_id": uuid, "event_time": "2026-03-02T12:00:00+00:00", "card_id": "c1", "merchant_id": "m1",
            "amount": 9.5, "currency": "EUR", "mcc": "5411", "channel": "ecommerce", "lat": 1.0, "lon": 2.0,
            "country": "FR"}  # fmt: skip
    assert Transaction.model_validate(sent).txn_id == uuid, "a UUID transaction id is accepted"
    all_digits = "64171304-5678-4007-8000-012345678901"  # the UUID shape without a hex letter
    assert find_pans(all_digits) == ["64171304-5678-4007"]


def test_out_of_order_and_duplicate_arrivals_see_exactly_their_own_past(history: pd.DataFrame) -> None:
    """Events delayed (within the lateness bound) and redelivered, state round-tripped through bytes
    as in the worker: each event's features equal an in-order fold of the card's events that had
    arrived before it and precede it in event time; duplicates change nothing."""
    rng = np.random.default_rng(4)
    busiest = history["card_id"].value_counts().index[:12]
    lateness = 300.0
    for card in busiest:
        rows = history[history["card_id"] == card].sort_values(["event_time", "txn_id"])
        txns = [
            Txn(r.txn_id, r.event_time.timestamp(), r.amount, r.lat, r.lon, r.country, r.merchant_id)
            for r in rows.itertuples()
        ]
        # bursts a few seconds apart, so several events are pending at once
        txns += [t._replace(txn_id=f"{t.txn_id}-b{k}", t=t.t + 7 * k) for t in txns[::9] for k in (1, 2, 3)]
        delay = np.where(rng.random(len(txns)) < 0.4, rng.uniform(0, lateness - 50, len(txns)), 0.0)
        order = np.argsort([t.t + d for t, d in zip(txns, delay, strict=True)], kind="stable")
        arrivals = [txns[i] for i in order]
        for i in sorted(rng.choice(len(arrivals) - 5, 10, replace=False), reverse=True):
            arrivals.insert(i + 3, arrivals[i])  # redelivered a few messages later
        raw, seen, got, late = b"", set(), {}, 0
        for t in arrivals:  # as the worker does: duplicate? late? else score and update
            state = CardState.from_bytes(raw)
            if contains(state, t.txn_id):
                assert t.txn_id in seen
                continue
            if state.last is not None and t.t < state.last.t - lateness:
                assert t.txn_id in seen, "only redeliveries of old events are late here"
                late += 1
                continue
            assert t.txn_id not in seen
            got[t.txn_id] = card_features(state, t)
            raw = update(state, t, pending_s=lateness).to_bytes()
            past = sorted((p for p in txns if p.txn_id in seen and (p.t, p.txn_id) < (t.t, t.txn_id)),
                          key=lambda p: (p.t, p.txn_id))  # fmt: skip
            want = card_features(fold_state(past), t)
            assert got[t.txn_id].keys() == want.keys()
            for name, value in want.items():
                where = (card, t.txn_id, name)
                assert got[t.txn_id][name] == pytest.approx(value, rel=1e-12, nan_ok=True), where
            seen.add(t.txn_id)
        in_order = dict(zip((t.txn_id for t in sorted(txns, key=lambda p: (p.t, p.txn_id))),
                            fold(sorted(txns, key=lambda p: (p.t, p.txn_id))), strict=True))  # fmt: skip
        assert got.keys() == in_order.keys()
        same = sum(got[k] == in_order[k] for k in got if not np.isnan(got[k]["seconds_since_prev"]))
        assert same > len(got) / 2, "events whose whole past had arrived score as in an in-order run"


def fold_state(txns: list[Txn]) -> CardState:
    state = CardState()
    for t in txns:
        update(state, t)
    return state


def test_a_replay_after_a_crash_is_recognised_by_stream_position_however_old(history: pd.DataFrame) -> None:
    """Messages re-read after a crash (offsets the card state already holds) are skipped, not
    dead-lettered as late, even when the card has moved on by days; new offsets still count."""
    rows = history.sort_values(["event_time", "txn_id"]).iloc[:600]
    raws = [
        _raw({k: r[k] for k in history.columns[:11]}, r["card_id"].encode(), offset=i)
        for i, r in enumerate(rows.to_dict("records"))
    ]
    table: dict[bytes, bytes | None] = {}
    table.update(process_batch(raws, table, lateness_s=300).states)
    again = process_batch(raws[:400], table, lateness_s=300)
    assert (again.duplicates, again.dead, again.features) == (400, [], [])
    resent = [Raw(r.key, r.value, r.topic, r.partition, 10_000 + r.offset) for r in raws[-50:]]
    by_id = process_batch(resent, table, lateness_s=300)  # a producer resending: same txn_id, new offset
    assert by_id.features == []
    assert by_id.duplicates + by_id.late == 50


def test_decoded_states_are_reused_only_while_the_table_holds_their_bytes(history: pd.DataFrame) -> None:
    sample = history.iloc[:600]
    raws = [
        _raw({k: r[k] for k in sample.columns[:11]}, r["card_id"].encode(), offset=i)
        for i, r in enumerate(sample.to_dict("records"))
    ]
    plain: dict[bytes, bytes | None] = {}
    cached: dict[bytes, bytes | None] = {}
    known = DecodedStates(capacity=10_000)
    for part in (raws[:200], raws[200:400], raws[400:]):
        expected = process_batch(part, plain, 300)
        got = process_batch(part, cached, 300, known)
        assert repr(got.features) == repr(expected.features)  # NaN too (the compiled fold boxes a new one)
        assert got.states == expected.states
        plain.update(expected.states)
        cached.update(got.states)
    assert known.hits > 0, "cards seen in an earlier batch were not decoded again"
    hits = known.hits

    # a rebalance or changelog recovery puts equal but new bytes objects in the table: decoded afresh
    recovered = {k: bytes(bytearray(v)) for k, v in cached.items() if v is not None}
    again = process_batch(raws[:50], recovered, 300, known)
    assert known.hits == hits
    assert again.duplicates == 50, "replayed positions are recognised from the recovered states"

    small = DecodedStates(capacity=3)
    process_batch(raws[:200], {}, 300, small)
    assert len(small.entries) == 3
