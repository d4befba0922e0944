"""Robustness scenarios (forescale.backtest.scenarios): deterministic, and each one the class
of traffic it claims to be."""

from __future__ import annotations

import numpy as np
import pytest

from forescale.backtest.scenarios import (
    HOLDOUT,
    SCENARIOS,
    flash_crowds,
    level_shifts,
    polling,
    scenario,
    scheduled_bursts,
    sparse_service,
    trend,
)
from forescale.core.errors import InvalidInputError
from forescale.core.series import Series

STEP = 60.0
DAY = 86400.0
MIDNIGHT = 1_700_006_400.0  # a Wednesday, 00:00 UTC


def base(days: int = 14, rate: float = 50.0) -> Series:
    rng = np.random.default_rng(0)
    n = int(days * DAY / STEP)
    return Series(MIDNIGHT, STEP, rng.poisson(rate * STEP, size=n) / STEP)


def test_scenarios_are_deterministic_and_keep_counts_whole() -> None:
    for s in (scheduled_bursts, level_shifts, sparse_service, trend, polling):
        a, b = s(base(), 3), s(base(), 3)
        assert np.array_equal(a.values, b.values)
        counts = a.values * STEP
        assert np.allclose(counts, np.rint(counts))
        assert len(a) == len(base())
        assert not np.array_equal(s(base(), 4).values, a.values)


def test_bursts_come_at_the_same_clock_times_on_most_days() -> None:
    rates = scheduled_bursts(base(), 0)
    ratio = rates.values / base().values
    minute_of_day = ((rates.timestamps() % DAY) / STEP).astype(int)
    for clock in (9 * 60 + 30, 14 * 60 + 30, 20 * 60):
        days = ratio[minute_of_day == clock + 5].reshape(-1)
        share = float(np.mean(days > 2.5))
        assert 0.4 <= share <= 0.95, (clock, share)  # ~70 % of days
    quiet = ratio[(minute_of_day > 3 * 60) & (minute_of_day < 8 * 60)]
    assert float(np.mean(quiet)) == pytest.approx(1.0, abs=0.01)


def test_level_shifts_multiply_whole_stretches_by_five() -> None:
    rates = level_shifts(base(), 0)
    per_day = rates.values.reshape(-1, int(DAY / STEP)).mean(axis=1) / 50.0
    assert per_day.min() == pytest.approx(1.0, abs=0.05)
    assert per_day.max() == pytest.approx(5.0, abs=0.1)


def test_sparse_service_is_a_few_requests_a_minute_and_quieter_at_weekends() -> None:
    rates = sparse_service(base(rate=20.0), 0)
    per_minute = rates.values * STEP
    weekday = ((np.floor(rates.timestamps() / DAY).astype(int) + 3) % 7) < 5
    assert per_minute[weekday].mean() == pytest.approx(3.0, rel=0.1)
    assert per_minute[~weekday].mean() == pytest.approx(1.0, rel=0.15)


def test_flash_crowds_are_one_off_and_after_the_warm_up() -> None:
    """Two crowds at x6-10 for 40-120 minutes, none in the first four days; the rest of
    the trace untouched."""
    quiet = base(rate=50.0)
    rates = flash_crowds(quiet, 1)
    ratio = rates.values / quiet.values
    crowd = ratio > 3.0
    assert not crowd[:int(4 * DAY / STEP)].any()
    starts = np.flatnonzero(np.diff(crowd.astype(int)) == 1)
    assert len(starts) == 2
    assert 2 * 40 * 0.9 <= crowd.sum() <= 2 * 120
    assert np.median(ratio[crowd]) == pytest.approx(8.0, abs=2.5)
    assert np.array_equal(rates.values[~crowd], quiet.values[~crowd])
    assert np.array_equal(flash_crowds(quiet, 1).values, rates.values)  # deterministic


def test_a_trend_goes_linearly_from_the_trace_to_its_end_factor() -> None:
    days = base(rate=100.0).values.reshape(-1, int(DAY / STEP)).mean(axis=1)
    for end in (3.0, 0.3):
        rates = trend(base(rate=100.0), 0, end=end)
        ratio = rates.values.reshape(-1, int(DAY / STEP)).mean(axis=1) / days
        expected = np.linspace(1.0, end, len(rates)).reshape(-1, int(DAY / STEP)).mean(axis=1)
        assert ratio == pytest.approx(expected, rel=0.02)
        counts = rates.values * STEP
        assert np.allclose(counts, np.rint(counts))


def test_polling_lifts_the_first_minutes_of_every_quarter_hour() -> None:
    quiet = base(rate=100.0)
    ratio = polling(quiet, 0).values / quiet.values
    minute = ((quiet.timestamps() // STEP) % 15).astype(int)
    assert float(np.mean(ratio[minute < 3])) == pytest.approx(2.5, rel=0.02)
    assert np.array_equal(ratio[minute >= 3], np.ones(int((minute >= 3).sum())))


def test_every_listed_scenario_builds_and_unknown_names_are_refused() -> None:
    names = [s.name for s in (*SCENARIOS, *HOLDOUT)]
    assert len(set(names)) == len(names)
    for s in (*SCENARIOS, *HOLDOUT):
        assert scenario(s.name) is s
        built = s.build(base(days=15), 0)
        assert len(built) == len(base(days=15))
    with pytest.raises(InvalidInputError, match="unknown scenario"):
        scenario("nope")
