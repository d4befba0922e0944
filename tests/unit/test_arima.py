"""ArimaForecaster: Fourier seasonality, the update path, prefixes, raw (unclipped) output."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.arima import MIN_WEEKS_FOR_WEEKLY, ArimaForecaster
from forescale.core.series import Series

#: The ``make_seasonal`` fixture (tests/conftest.py).
SeasonalFactory = Callable[..., Series]

DAY = 86400.0
T0 = 1_700_438_400.0  # a Monday, 00:00 UTC


def _fitted(history: Series, **kwargs: object) -> ArimaForecaster:
    model = ArimaForecaster(**kwargs)  # type: ignore[arg-type]
    model.fit(history)
    return model



def test_learns_the_daily_shape(seasonal_series: Series) -> None:
    history = seasonal_series.head(len(seasonal_series) - 36)
    model = _fitted(history)
    assert model.fourier_terms_used == 3
    fc = model.forecast(history, 36, 0.9)
    # The true rate the Poisson counts were drawn around (see tests/conftest.py).
    t = fc.timestamps()
    truth = 20.0 * (1.0 + 0.6 * np.sin(2.0 * np.pi * (t % DAY) / DAY))
    assert np.abs(fc.mean - truth).max() < 0.1 * truth.mean()
    actual = seasonal_series.values[-36:]
    assert 0.75 <= np.mean((fc.lower <= actual) & (actual <= fc.upper)) <= 1.0


def test_no_fourier_terms_under_two_days(make_seasonal: SeasonalFactory) -> None:
    short = make_seasonal(days=1.5)
    model = _fitted(short, fourier_terms=3)
    assert model.fourier_terms_used == 0
    assert np.isfinite(model.forecast(short, 6, 0.9).mean).all()
    assert _fitted(make_seasonal(), fourier_terms=0).fourier_terms_used == 0


def test_fit_uses_a_bounded_recent_window(arima_fit_calls: list[int],
                                          make_seasonal: SeasonalFactory) -> None:
    week = make_seasonal(days=7.0)
    model = _fitted(week, fit_window_seconds=2 * DAY)
    assert arima_fit_calls == [len(week)]
    window = 2 * 288
    # Only the window counts: a sample rewritten before it changes nothing, inside it does.
    for index, continues in ((len(week) - window - 1, True), (len(week) - window, False)):
        values = week.values.copy()
        values[index] += 1.0
        assert model.continues(Series(week.start_seconds, week.step_seconds,
                                      values)) is continues


def test_new_samples_update_the_state_without_refitting(
        seasonal_series: Series, arima_fit_calls: list[int]) -> None:
    n = len(seasonal_series)
    model = _fitted(seasonal_series.head(n - 12))
    updated = [model.forecast(seasonal_series.head(k), 6, 0.9) for k in (n - 11, n - 5, n)]
    assert len(arima_fit_calls) == 1
    # The update is the same filter as running the fitted parameters over the history anew
    # (apply), up to the initial state of that run.
    fresh = _fitted(seasonal_series.head(n - 12))
    applied = fresh._apply(seasonal_series)  # the prefix/other-history path
    assert updated[-1].start_seconds == seasonal_series.end_seconds
    np.testing.assert_allclose(
        updated[-1].mean,
        fresh._design(updated[-1].timestamps()) @ fresh._beta
        + np.asarray(applied.get_forecast(6).predicted_mean), rtol=1e-3)


def test_prefix_forecast_leaves_the_state_alone(seasonal_series: Series,
                                                arima_fit_calls: list[int]) -> None:
    model = _fitted(seasonal_series)
    before = model.forecast(seasonal_series, 6, 0.9)
    prefix = seasonal_series.head(len(seasonal_series) - 30)
    from_prefix = model.forecast(prefix, 6, 0.9)
    assert from_prefix.start_seconds == prefix.end_seconds
    after = model.forecast(seasonal_series, 6, 0.9)
    np.testing.assert_array_equal(before.mean, after.mean)
    assert model.continues(seasonal_series)
    assert len(arima_fit_calls) == 1


def test_sliding_window_history_still_continues(seasonal_series: Series) -> None:
    # The operator reads "the last 7 days" each time: the start moves with the end.
    n = len(seasonal_series)
    model = _fitted(seasonal_series.head(n - 10))
    later = Series(seasonal_series.start_seconds + 10 * seasonal_series.step_seconds,
                   seasonal_series.step_seconds, seasonal_series.values[10:])
    assert model.continues(later)


def test_what_does_not_continue(seasonal_series: Series) -> None:
    n = len(seasonal_series)
    model = _fitted(seasonal_series.head(n - 10))
    step = seasonal_series.step_seconds
    rewritten = seasonal_series.values.copy()
    rewritten[n - 20] += 1.0
    shifted = Series(seasonal_series.start_seconds + step / 2, step, seasonal_series.values)
    after_gap = Series(seasonal_series.end_seconds + 100 * step, step,
                       seasonal_series.values[:200])
    cases = {
        "prefix": seasonal_series.head(n - 11),
        "rewritten sample": Series(seasonal_series.start_seconds, step, rewritten),
        "off the time grid": shifted,
        "after a gap": after_gap,
        "another step": Series(seasonal_series.start_seconds, step * 2,
                               seasonal_series.values),
    }
    for label, history in cases.items():
        assert not model.continues(history), label
    assert not ArimaForecaster().continues(seasonal_series)  # never fitted


def test_negative_values_are_returned_raw() -> None:
    # Traffic collapsing at the end of the history: ARIMA extrapolates the fall below 0.
    # The forecaster must not hide that; the chain's gate rejects it (NegativeForecast).
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(300, 5.0) + rng.normal(0, 0.01, 300),
                             np.linspace(5.0, 0.3, 10)])
    history = Series.from_array(values)
    fc = _fitted(history).forecast(history, 10, 0.9)
    assert fc.mean.min() < 0.0
    assert fc.lower.min() < fc.mean.min()


def test_lower_bound_is_not_clipped_at_a_trough(make_seasonal: SeasonalFactory) -> None:
    series = make_seasonal(base=2.0, amplitude=1.0)
    model = _fitted(series)
    phase = (series.timestamps() % DAY) / DAY
    trough = int(np.flatnonzero(np.abs(phase - 0.75) < 0.5 / 288)[-1])
    fc = model.forecast(series.head(trough), 6, 0.9)
    assert fc.lower.min() < 0.0  # a Gaussian interval of a rate near 0, as computed


def test_convergence_warnings_stay_local(seasonal_series: Series,
                                         recwarn: pytest.WarningsRecorder) -> None:
    _fitted(seasonal_series, maxiter=1).forecast(seasonal_series, 3, 0.9)
    assert not [w for w in recwarn if "statsmodels" in w.filename]


@pytest.mark.parametrize("kwargs", [
    {"order": (2, 1)}, {"order": (-1, 1, 1)}, {"fourier_terms": -1},
    {"season_seconds": 0.0}, {"fit_window_seconds": float("nan")}, {"maxiter": 0},
])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        ArimaForecaster(**kwargs)  # type: ignore[arg-type]


# -- weekly seasonality ----------------------------------------------------------------------

WEEK = 7 * DAY


def weekly(days: float, *, step: float = 300.0, seed: int = 11) -> Series:
    """Poisson traffic with a daily shape and weekday/weekend levels (the weekend at 40 %),
    starting on a Monday: what a weekly term is for."""
    n = round(days * DAY / step)
    t = T0 + step * np.arange(n)
    weekday = ((t - T0) % WEEK) < 5 * DAY
    rate = np.where(weekday, 30.0, 12.0) * (1.0 + 0.5 * np.sin(2 * np.pi * (t % DAY) / DAY))
    counts = np.random.default_rng(seed).poisson(rate * step)
    return Series.from_array(counts / step, start_seconds=T0, step_seconds=step)


def test_weekly_terms_only_with_two_weeks(make_seasonal: SeasonalFactory) -> None:
    assert MIN_WEEKS_FOR_WEEKLY == 2.0
    series = weekly(21.0)
    below = series.head(round((2 * 7 - 0.5) * DAY / series.step_seconds))
    assert _fitted(below).weekly_fourier_terms_used == 0
    at = series.head(round(2 * WEEK / series.step_seconds))
    assert _fitted(at).weekly_fourier_terms_used == 3
    assert _fitted(at, weekly_fourier_terms=0).weekly_fourier_terms_used == 0
    # The daily terms are unaffected either way.
    assert _fitted(below).fourier_terms_used == _fitted(at).fourier_terms_used == 3


def test_weekly_terms_improve_a_weekly_series() -> None:
    """Forecasts (3 h ahead) from every 3 h of the third week, fitted on the two before: the
    weekly terms know that Saturday is quieter than Friday, the daily ones cannot."""
    series = weekly(21.0)
    fit_on = series.head(round(2 * WEEK / series.step_seconds))
    with_weekly, daily_only = _fitted(fit_on), _fitted(fit_on, weekly_fourier_terms=0)
    horizon = 36
    errors: dict[str, list[float]] = {"weekly": [], "daily": []}
    for origin in range(len(fit_on), len(series) - horizon, horizon):
        history, actual = series.head(origin), series.values[origin:origin + horizon]
        for name, model in (("weekly", with_weekly), ("daily", daily_only)):
            mean = model.forecast(history, horizon, 0.9).mean
            errors[name].append(float(np.abs(mean - actual).sum()))
    total = {name: sum(e) for name, e in errors.items()}
    assert total["weekly"] < 0.9 * total["daily"], total


def test_weekly_state_stays_small() -> None:
    model = _fitted(weekly(28.0))
    assert model.weekly_fourier_terms_used == 3
    # Six more coefficients; the cached observations stay the 3-day fit window.
    assert model._beta.size == 1 + 2 * 3 + 2 * 3
    assert len(model._seen) == round(3 * DAY / 300.0)


def test_a_revised_newest_sample_is_filtered_again_not_refitted(seasonal_series: Series) -> None:
    """The history reader reads the newest steps again every cycle (late scrapes): one of
    them revised made the chain refit from scratch at that decision, however recent the
    fit (refitSeconds says "at most this often"). Now the fitted parameters are run over
    the window again, which becomes the state later samples extend."""
    from forescale.core.forecast.arima import REVISABLE_STEPS
    from forescale.core.forecast.chain import ForecastChain
    from forescale.core.spec import ForecastSettings

    n, step = len(seasonal_series), seasonal_series.step_seconds
    chain = ForecastChain(ForecastSettings(models=("arima",), arima_refit_seconds=21600.0))
    first = seasonal_series.head(n - 2)
    chain.forecast(first, 15, now=first.end_seconds)
    revised = seasonal_series.values[:n - 1].copy()
    revised[-2] += 1.0  # the previous newest sample, one request more
    second = Series(seasonal_series.start_seconds, step, revised)
    result = chain.forecast(second, 15, now=second.end_seconds)
    assert "no refit" in result.stages[0].message, result.stages[0].message
    model = chain._models["arima"]
    assert isinstance(model, ArimaForecaster) and model.continues(second)
    # The same as a forecast from the window re-filtered by hand with those parameters.
    refiltered = model._apply(second).get_forecast(15).predicted_mean
    assert result.forecast is not None
    expected = model._design(second.end_seconds + step * np.arange(15)) @ model._beta \
        + np.asarray(refiltered)
    assert np.allclose(result.forecast.mean, expected)
    # An older sample rewritten is no revision: refitted.
    older = revised.copy()
    older[-(REVISABLE_STEPS + 2)] += 1.0
    third = Series(seasonal_series.start_seconds, step, np.r_[older, seasonal_series.values[
        n - 1:n]])
    assert not model.continues(third, revisable=REVISABLE_STEPS)
