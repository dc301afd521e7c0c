"""The simulator reproduces the Handbook model's statistics and produces contract-valid records."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from app.pan import has_pan
from app.schema import HISTORY_SCHEMA, LEGIT, PAN_LIKE, SCENARIOS, Transaction
from app.simulator import geo
from app.simulator.model import DAY_S, SimConfig, _compromised, simulate

HANDBOOK = SimConfig()  # 5,000 customers, 10,000 terminals, 183 days, r = 5
P_IN_DAY = math.erf(43_200 / (20_000 * math.sqrt(2)))  # P(0 < N(43200, 20000) < 86400)


@pytest.fixture(scope="module")
def handbook() -> pd.DataFrame:
    return simulate(HANDBOOK)


def _expected_genuine_per_day(cfg: SimConfig) -> float:
    # E[Poisson(U(0,4))] = 2 per customer and day, kept when the time falls inside the day.
    return cfg.customers * 2.0 * P_IN_DAY


def _window_days(days: int, per_day: float, duration: int) -> float:
    """Expected (entity, day) pairs under compromise: per_day new ones each day, for `duration` days."""
    return per_day * sum(min(duration, days - d) for d in range(days))


def test_transactions_per_day_match_the_handbook_model(handbook: pd.DataFrame) -> None:
    genuine = handbook[handbook["fraud_scenario"].isin([LEGIT, *SCENARIOS[:3]])]
    per_day = len(genuine) / HANDBOOK.days
    # the Handbook's own run: about 1.75M transactions over 183 days (~9,600 a day)
    assert per_day == pytest.approx(_expected_genuine_per_day(HANDBOOK), rel=0.03)
    daily = genuine.groupby(genuine["event_time"].dt.date).size()
    assert daily.std() / daily.mean() < 0.05, "daily volume is stationary in the Handbook model"


def test_time_of_day_is_centred_at_noon(handbook: pd.DataFrame) -> None:
    genuine = handbook[handbook["fraud_scenario"] == LEGIT]
    seconds = (genuine["event_time"] - genuine["event_time"].dt.normalize()).dt.total_seconds()
    assert seconds.mean() == pytest.approx(43_200, rel=0.01)
    # N(43200, 20000) truncated to the day has sd ~ 17,600 s
    assert 16_500 < seconds.std() < 18_700


def test_fraud_rate_and_per_scenario_counts(handbook: pd.DataFrame) -> None:
    counts = handbook["fraud_scenario"].value_counts()
    genuine_per_day = _expected_genuine_per_day(HANDBOOK)

    terminal_days = _window_days(HANDBOOK.days, 2, 28)
    expected_terminal = terminal_days * genuine_per_day / HANDBOOK.merchants
    assert counts["compromised_terminal"] == pytest.approx(expected_terminal, rel=0.15)

    card_days = _window_days(HANDBOOK.days, 3, 14)
    expected_card = card_days * 2.0 * P_IN_DAY / 3
    assert counts["compromised_card"] == pytest.approx(expected_card, rel=0.15)

    # scenario 1: P(N(m, m/2) > 220) averaged over m ~ U(5, 100)
    p_high = integrate.quad(lambda m: stats.norm.sf(220, m, m / 2), 5, 100)[0] / 95
    expected_high = genuine_per_day * HANDBOOK.days * p_high
    assert counts["high_amount"] == pytest.approx(expected_high, rel=0.25)

    # added scenarios: Poisson cards per day x burst sizes; within 4 standard deviations
    for name, per_day, sizes in (
        ("card_testing", 0.5, np.arange(8, 26)),
        ("impossible_travel", 2.0, np.array([1])),
        ("account_takeover", 0.5, np.arange(3, 9)),
    ):
        lam = per_day * HANDBOOK.days
        mean, sd = lam * sizes.mean(), math.sqrt(lam * (sizes**2).mean())
        assert abs(counts[name] - mean) < 4 * sd, f"{name}: {counts[name]} vs {mean:.0f} +- {sd:.0f}"

    rate = handbook["is_fraud"].mean()
    handbook_rate = handbook["fraud_scenario"].isin(SCENARIOS[:3]).mean()
    assert 0.006 < handbook_rate < 0.010, "the Handbook's three scenarios give ~0.8% fraud"
    assert 0.005 < rate < 0.012, "default fraud rate near 0.5-1%"


def test_scenarios_are_labelled_and_look_like_what_they_claim(handbook: pd.DataFrame) -> None:
    assert set(handbook["fraud_scenario"]) == {LEGIT, *SCENARIOS}
    assert ((handbook["fraud_scenario"] != LEGIT) == (handbook["is_fraud"] == 1)).all()

    high = handbook[handbook["fraud_scenario"] == "high_amount"]
    assert (high["amount"] > 220).all()

    testing = handbook[handbook["fraud_scenario"] == "card_testing"]
    assert (testing["amount"] < 5).all()
    assert (testing["channel"] == "ecommerce").all()
    bursts = testing.groupby("card_id")["event_time"].agg(lambda t: (t.max() - t.min()).total_seconds())
    assert bursts.median() < 15 * 60, "card testing happens within minutes"

    foreign = {c for c, *_ in geo.FOREIGN_CITIES}
    travel = handbook[handbook["fraud_scenario"] == "impossible_travel"]
    assert travel["country"].isin(foreign).all()
    home = set(geo.HOME_COUNTRIES)
    prior = handbook[handbook["country"].isin(home)].merge(
        travel[["card_id"]].drop_duplicates(), on="card_id"
    )
    assert len(prior), "impossible travel follows a genuine home purchase"

    takeover = handbook[handbook["fraud_scenario"] == "account_takeover"]
    assert takeover["country"].isin(foreign).all()
    genuine_mcc = set(handbook.loc[handbook["fraud_scenario"] == LEGIT, "mcc"])
    assert not set(takeover["mcc"]) & genuine_mcc, "account takeover uses categories the card never used"


def test_records_follow_the_contract() -> None:
    frame = simulate(SimConfig(customers=300, merchants=600, days=5, seed=3))
    assert list(frame.columns) == HISTORY_SCHEMA.names
    assert frame["txn_id"].is_unique
    assert frame["event_time"].is_monotonic_increasing
    assert not frame["card_id"].str.match(PAN_LIKE.pattern).any()
    assert (frame["label_time"] > frame["event_time"]).all()
    start = pd.Timestamp(SimConfig().start, tz="UTC")
    assert frame["event_time"].min() >= start
    assert frame["event_time"].max() < start + pd.Timedelta(seconds=5 * DAY_S)
    fraud_delay = (frame["label_time"] - frame["event_time"])[frame["is_fraud"] == 1].dt.days
    assert fraud_delay.between(1, 60).all(), "chargebacks arrive days to weeks later"
    sample = frame.sample(200, random_state=0)
    for record in sample.to_dict("records"):
        Transaction.model_validate(record)  # raises on any contract violation


def test_no_transaction_id_reads_as_a_card_number() -> None:
    """The worker refuses identifiers holding a card number; a simulated id must never hold one."""
    frame = simulate(SimConfig(customers=150, merchants=300, days=12, seed=23))  # 10 % of its ids did
    assert not any(has_pan(t) for t in frame["txn_id"])
    assert frame["txn_id"].str.fullmatch(r"tx-[a-z]{8}-\d{9}").all()


def test_same_seed_same_history_other_seed_other_history() -> None:
    cfg = SimConfig(customers=200, merchants=400, days=3, seed=7)
    pd.testing.assert_frame_equal(simulate(cfg), simulate(cfg))
    other = simulate(SimConfig(customers=200, merchants=400, days=3, seed=8))
    assert not set(other["txn_id"]) & set(simulate(cfg)["txn_id"])


@pytest.mark.parametrize(("customers", "days"), [(1, 1), (3, 1), (10, 2)])
def test_tiny_worlds_do_not_break(customers: int, days: int) -> None:
    frame = simulate(SimConfig(customers=customers, merchants=customers, days=days))
    assert list(frame.columns) == HISTORY_SCHEMA.names


def test_fraud_scale_and_disabled_scenarios() -> None:
    base = SimConfig(customers=2_000, merchants=4_000, days=20, seed=1)
    none = simulate(
        SimConfig(**{**base.__dict__, "fraud_scale": 0.0, "disabled": frozenset({"high_amount"})})
    )
    assert none["is_fraud"].sum() == 0
    doubled = simulate(SimConfig(**{**base.__dict__, "fraud_scale": 2.0}))
    assert doubled["is_fraud"].mean() > 1.5 * simulate(base)["is_fraud"].mean()
    with pytest.raises(ValueError, match="unknown scenario"):
        SimConfig(disabled=frozenset({"alien_invasion"}))


def test_live_traffic_continues_the_world_of_its_history() -> None:
    history = simulate(SimConfig(customers=60, merchants=120, days=5, seed=5))
    live = simulate(SimConfig(customers=60, merchants=120, days=5, seed=6, world_seed=5))
    other = simulate(SimConfig(customers=60, merchants=120, days=5, seed=6))

    def places(frame: pd.DataFrame) -> pd.DataFrame:
        home = frame[frame["fraud_scenario"] == "none"].drop_duplicates("merchant_id")
        return home.set_index("merchant_id")[["lat", "lon", "mcc"]].sort_index()

    shared = places(history).index.intersection(places(live).index)
    assert len(shared) > 30
    pd.testing.assert_frame_equal(places(history).loc[shared], places(live).loc[shared])
    assert not set(history["txn_id"]) & set(live["txn_id"]), "new transactions, same world"
    moved = places(history).index.intersection(places(other).index)
    assert not places(history).loc[moved].equals(places(other).loc[moved]), (
        "without world_seed: another world"
    )


def test_live_traffic_goes_on_with_the_terminals_and_cards_its_history_left_compromised() -> None:
    """A week of live traffic has the compromised terminals and cards that one simulation of the history
    and that week has: episodes begun in the history go on (live traffic was simulated a week at a time,
    and each week's episodes stopped at its end)."""
    whole = SimConfig(customers=500, merchants=1_000, days=37, start=date(2026, 1, 1), seed=5)
    history = replace(whole, days=30)
    week = replace(whole, days=7, start=date(2026, 1, 31), seed=6, world_seed=5, continues=True)
    for kind, population, per_day, duration in [(0, 1_000, 0.4, 28), (1, 500, 0.3, 14)]:
        everything = _compromised(whole, kind, population, per_day, duration)
        assert everything[:, 30:].any()
        np.testing.assert_array_equal(
            _compromised(history, kind, population, per_day, duration), everything[:, :30]
        )
        np.testing.assert_array_equal(
            _compromised(week, kind, population, per_day, duration), everything[:, 30:]
        )
        alone = _compromised(replace(week, continues=False), kind, population, per_day, duration)
        assert alone.sum() < everything[:, 30:].sum(), "a week on its own starts with nothing compromised"

    old = simulate(history)
    live = simulate(week)
    before = set(old.loc[old["fraud_scenario"] == "compromised_terminal", "merchant_id"])
    first_day = live[(live["event_time"] < pd.Timestamp("2026-02-01", tz="UTC"))]
    still = set(first_day.loc[first_day["fraud_scenario"] == "compromised_terminal", "merchant_id"])
    assert still & before, "terminals compromised in the history are still defrauded on the first live day"


def test_an_id_salt_changes_the_ids_and_nothing_else() -> None:
    cfg = SimConfig(customers=60, merchants=120, days=3, start=date(2026, 3, 1), seed=5)
    plain, salted = simulate(cfg), simulate(replace(cfg, id_salt="2026-03-01T10:00:00+00:00"))
    assert not set(plain["txn_id"]) & set(salted["txn_id"])
    pd.testing.assert_frame_equal(plain.drop(columns="txn_id"), salted.drop(columns="txn_id"))
