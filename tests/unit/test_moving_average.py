"""MovingAverageForecaster: the windowed mean and its empirical interval."""

from __future__ import annotations

import numpy as np
import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.moving_average import (
    DEFAULT_HALF_LIFE,
    HALF_LIVES,
    MIN_ORIGINS_PER_LEAD,
    ExponentialMovingAverage,
    MovingAverageForecaster,
)
from forescale.core.series import Series


def _fitted(series: Series, window: int = 5) -> MovingAverageForecaster:
    model = MovingAverageForecaster(window)
    model.fit(series)
    return model


def test_mean_of_last_window_flat_over_horizon() -> None:
    series = Series.from_array([9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    fc = _fitted(series, window=3).forecast(series, 4, 0.9)
    np.testing.assert_array_equal(fc.mean, [5.0] * 4)
    assert fc.model == "ma"


def test_constant_series_has_no_uncertainty() -> None:
    series = Series.from_array(np.full(200, 7.0))
    fc = _fitted(series).forecast(series, 10, 0.99)
    np.testing.assert_array_equal(fc.lower, fc.mean)
    np.testing.assert_array_equal(fc.upper, fc.mean)


def test_interval_covers_about_its_level_on_fresh_data() -> None:
    # Stationary Poisson traffic: the rule's own errors are the right yardstick, so a 90 %
    # interval should hold roughly 90 % of what follows (here: origins never seen before).
    rng = np.random.default_rng(11)
    values = rng.poisson(30.0, size=6000) / 1.0
    model = MovingAverageForecaster(15, residual_span=1440)
    model.fit(Series.from_array(values[:2000]))
    inside = []
    for origin in range(2000, 5900, 29):
        fc = model.forecast(Series.from_array(values[:origin]), 10, 0.9)
        actual = values[origin: origin + 10]
        inside.append((fc.lower <= actual) & (actual <= fc.upper))
    coverage = float(np.mean(inside))
    assert 0.85 <= coverage <= 0.95, coverage


def test_interval_keeps_the_skew_of_low_traffic() -> None:
    # Rare bursts on a near-idle service: the upper half-width must be the larger one.
    rng = np.random.default_rng(3)
    series = Series.from_array(rng.poisson(0.3, size=3000) / 1.0)
    fc = _fitted(series, window=30).forecast(series, 5, 0.9)
    assert (fc.upper - fc.mean > fc.mean - fc.lower).all()


def test_lower_bound_is_clipped_at_zero() -> None:
    series = Series.from_array(np.tile([0.0, 0.0, 0.0, 50.0], 100))
    fc = _fitted(series, window=4).forecast(series, 6, 0.95)
    assert (fc.lower >= 0.0).all()
    assert fc.lower.min() == 0.0


def test_half_widths_do_not_shrink_with_lead() -> None:
    rng = np.random.default_rng(5)
    series = Series.from_array(rng.gamma(2.0, 10.0, size=2000))
    fc = _fitted(series, window=10).forecast(series, 30, 0.8)
    assert (np.diff(fc.upper - fc.mean) >= 0).all()
    assert (np.diff(fc.mean - fc.lower) >= 0).all()


def test_short_history_widens_unmeasured_leads_like_a_random_walk() -> None:
    rng = np.random.default_rng(9)
    window = 5
    # Enough origins for the first leads only: lead h has (n - window - h + 1) origins.
    n = window + MIN_ORIGINS_PER_LEAD + 2
    series = Series.from_array(rng.normal(50.0, 5.0, size=n))
    fc = _fitted(series, window=window).forecast(series, 10, 0.9)
    h_ok = n - window - MIN_ORIGINS_PER_LEAD + 1  # the longest well-measured lead
    above = fc.upper - fc.mean
    expected = above[h_ok - 1] * np.sqrt(np.arange(h_ok + 1, 11) / h_ok)
    np.testing.assert_allclose(above[h_ok:], expected)


def test_minimal_history_forecasts() -> None:
    model = MovingAverageForecaster(3)
    series = Series.from_array([1.0, 2.0, 3.0, 4.0])
    assert model.min_history == 4
    fc = model.fit(series).forecast(series, 5, 0.9)
    assert np.isfinite(fc.upper).all()
    assert fc.mean[0] == pytest.approx(3.0)


@pytest.mark.parametrize("window", [0, -1, 2.5])
def test_bad_window(window: object) -> None:
    with pytest.raises(InvalidInputError, match="window"):
        MovingAverageForecaster(window)  # type: ignore[arg-type]


# --- the exponential rule: its half-life taken from the history ---------------------------


def _ema_forecast(values: np.ndarray, horizon: int = 4,
                  step: float = 60.0) -> tuple[ExponentialMovingAverage, np.ndarray]:
    series = Series(0.0, step, np.asarray(values, dtype=np.float64))
    model = ExponentialMovingAverage()
    model.fit(series)
    return model, model.forecast(series, horizon, 0.9).mean


def test_ema_is_the_exponentially_weighted_mean_with_the_chosen_half_life() -> None:
    rng = np.random.default_rng(5)
    values = rng.poisson(40.0, size=3000) / 1.0
    model, mean = _ema_forecast(values)
    assert model.half_life in HALF_LIVES
    alpha = 1.0 - 0.5 ** (60.0 / model.half_life)
    # By hand: weights (1 - a)^k on v[-1 - k], the first sample carrying the rest.
    k = np.arange(len(values))
    weights = alpha * (1.0 - alpha) ** k
    weights[-1] = (1.0 - alpha) ** (len(values) - 1)
    expected = float(np.sum(weights * values[::-1]))
    np.testing.assert_allclose(mean, expected, rtol=1e-9)


def test_ema_smooths_long_where_the_traffic_is_noise_and_short_where_the_level_moves() -> None:
    rng = np.random.default_rng(8)
    minutes = np.arange(3 * 1440)
    # ~2 requests a minute around a flat level: any short mean is mostly counting noise.
    quiet = rng.poisson(2.0, size=minutes.size) / 1.0
    # High volume following a fast daily cycle: hardly any noise, a level that moves.
    level = 5000.0 * (1.6 + np.sin(2 * np.pi * minutes / 360.0))
    busy = rng.poisson(level) / 1.0
    quiet_model, _ = _ema_forecast(quiet)
    busy_model, _ = _ema_forecast(busy)
    assert quiet_model.half_life == max(HALF_LIVES)
    assert busy_model.half_life == min(HALF_LIVES)


def test_ema_half_life_is_in_seconds_whatever_the_step() -> None:
    # The same traffic at 5-minute steps: a half-life under a step is still allowed (the
    # mean is then mostly the last sample), and the choice is among the same durations.
    rng = np.random.default_rng(9)
    values = rng.poisson(2.0, size=2000) / 1.0
    model, mean = _ema_forecast(values, step=300.0)
    assert model.half_life == max(HALF_LIVES)
    assert np.isfinite(mean).all() and (mean >= 0).all()


def test_ema_with_too_little_history_to_choose_uses_the_default() -> None:
    model, mean = _ema_forecast(np.array([3.0, 5.0]), horizon=4)
    assert model.half_life == DEFAULT_HALF_LIFE
    assert mean[0] == pytest.approx(3.0 + (5.0 - 3.0) * (1.0 - 0.5 ** (60.0 / 300.0)))


@pytest.mark.parametrize("step", [15.0, 300.0])
def test_the_half_life_is_chosen_over_the_last_day_at_any_step(step: float) -> None:
    """Fixed at 1,440 origins, "the last day" was 6 hours at a 15 s step and 5 days at
    300 s: a day that favours a long half-life early and a short one late chose by the
    late hours alone."""
    per_day = round(86400 / step)
    rng = np.random.default_rng(3)
    early = per_day * 3 // 4
    sparse = rng.poisson(step / 60, early) / step
    moving = np.repeat(rng.uniform(0, 0.01, 200), max(1, round(600 / step)))
    values = np.r_[rng.poisson(step / 60, 4 * per_day) / step, sparse,
                   moving[:per_day - early] + 1 / 60]
    history = Series(1_700_000_000.0, step, values)
    model, day = ExponentialMovingAverage(), ExponentialMovingAverage(residual_span=per_day)
    for m in (model, day):
        m.fit(history)
        m.forecast(history, 8, 0.9)
    assert model.half_life == day.half_life


@pytest.mark.parametrize(("step", "scored"), [(1.0, 1440), (15.0, 1440), (60.0, 1440),
                                              (300.0, 288)])
def test_at_most_a_day_and_1440_origins_are_scored(step: float, scored: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A day of origins at a 1 s step (86,400, times the horizon) peaked at 650 MB per
    forecast: finer than a minute, every k-th origin of the day is scored; at 60 s and
    coarser, every one."""
    from forescale.core.forecast import moving_average

    sizes: list[int] = []
    real = moving_average.MovingAverageForecaster._scored

    def counted(first: int, end: int, span: int) -> np.ndarray:
        origins = real(first, end, span)
        sizes.append(len(origins))
        return origins

    monkeypatch.setattr(moving_average.MovingAverageForecaster, "_scored",
                        staticmethod(counted))
    n = round(2 * 86400 / step)
    history = Series(1_700_000_000.0, step,
                     np.random.default_rng(0).poisson(50 * step, n) / step)
    model = ExponentialMovingAverage()
    model.fit(history)
    model.forecast(history, 5, 0.9)
    assert sizes and all(abs(size - scored) <= 1 for size in sizes), sizes

