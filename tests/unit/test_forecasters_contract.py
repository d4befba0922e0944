"""The one contract every forecaster follows (forescale.core.forecast.base), per model.

Each case builds an unfitted forecaster and a fitted one on the same small synthetic series
(3 days of daily-seasonal Poisson traffic at a 5-minute step). The LSTM is trained for
2 epochs with a small net: these tests check the contract, not accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from forescale.core.errors import InvalidInputError, NotFittedError
from forescale.core.forecast.arima import ArimaForecaster
from forescale.core.forecast.base import Forecaster
from forescale.core.forecast.baselines import SeasonalNaive
from forescale.core.forecast.moving_average import (
    ExponentialMovingAverage,
    MovingAverageForecaster,
)
from forescale.core.series import Series

HORIZON = 12  # under the LSTM's trained 15 steps
LEVEL = 0.9
#: The last samples are held back so that forecasts from a longer history can be tested.
HELD_BACK = 24


def _lstm_unfitted() -> Forecaster:
    from forescale.core.forecast.lstm import LSTMForecaster

    return LSTMForecaster()


def _lstm_trained(series: Series) -> Forecaster:
    from forescale.core.forecast.lstm import train_lstm

    return train_lstm(series, epochs=2, seed=0, hidden_size=16)


@dataclass(frozen=True)
class Case:
    unfitted: Callable[[], Forecaster]
    #: Fits (or trains) a new forecaster on the series.
    fitted: Callable[[Series], Forecaster]


def _fit_new(make: Callable[[], Forecaster]) -> Callable[[Series], Forecaster]:
    return lambda series: make().fit(series)


CASES: dict[str, Case] = {
    "ma": Case(lambda: MovingAverageForecaster(6),
               _fit_new(lambda: MovingAverageForecaster(6))),
    "ema": Case(ExponentialMovingAverage, _fit_new(ExponentialMovingAverage)),
    "arima": Case(ArimaForecaster, _fit_new(ArimaForecaster)),
    "seasonal_naive": Case(SeasonalNaive, _fit_new(SeasonalNaive)),
    "lstm": Case(_lstm_unfitted, _lstm_trained),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def name(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def training(seasonal_series: Series) -> Series:
    return seasonal_series.head(len(seasonal_series) - HELD_BACK)


@pytest.fixture(scope="module")
def model(name: str, training: Series) -> Forecaster:
    """Fitted once per module and model: fitting is the slow part."""
    return CASES[name].fitted(training)


def test_forecast_before_fit_raises(name: str, training: Series) -> None:
    unfitted = CASES[name].unfitted()
    assert not unfitted.fitted
    with pytest.raises(NotFittedError):
        unfitted.forecast(training, HORIZON, LEVEL)


def test_shapes_and_alignment(name: str, model: Forecaster, training: Series) -> None:
    fc = model.forecast(training, HORIZON, LEVEL)
    assert fc.model == model.name
    assert fc.horizon == HORIZON
    assert fc.mean.shape == fc.lower.shape == fc.upper.shape == (HORIZON,)
    assert fc.start_seconds == training.end_seconds
    assert fc.step_seconds == training.step_seconds
    assert fc.level == LEVEL
    np.testing.assert_allclose(np.diff(fc.timestamps()), training.step_seconds)


def test_finite_and_ordered(model: Forecaster, training: Series) -> None:
    fc = model.forecast(training, HORIZON, LEVEL)
    for values in (fc.mean, fc.lower, fc.upper):
        assert np.isfinite(values).all()
    assert (fc.lower <= fc.mean).all()
    assert (fc.mean <= fc.upper).all()


def test_higher_level_is_wider(model: Forecaster, training: Series) -> None:
    narrow = model.forecast(training, HORIZON, 0.5)
    wide = model.forecast(training, HORIZON, 0.95)
    np.testing.assert_array_equal(narrow.mean, wide.mean)
    assert (wide.upper - wide.lower >= narrow.upper - narrow.lower).all()
    assert (wide.upper - wide.lower).sum() > (narrow.upper - narrow.lower).sum()


def test_min_history_enforced(model: Forecaster, training: Series) -> None:
    need = model.min_history
    assert need >= 1
    model.forecast(training.tail(need), HORIZON, LEVEL)
    with pytest.raises(InvalidInputError):
        model.forecast(training.tail(need - 1), HORIZON, LEVEL)


def test_fit_rejects_too_short_history(name: str, training: Series) -> None:
    unfitted = CASES[name].unfitted()
    with pytest.raises(InvalidInputError):
        CASES[name].fitted(training.head(max(unfitted.min_history - 1, 0)))


def test_deterministic(name: str, model: Forecaster, training: Series) -> None:
    first = model.forecast(training, HORIZON, LEVEL)
    again = model.forecast(training, HORIZON, LEVEL)
    refitted = CASES[name].fitted(training).forecast(training, HORIZON, LEVEL)
    for fc in (again, refitted):
        np.testing.assert_array_equal(fc.mean, first.mean)
        np.testing.assert_array_equal(fc.lower, first.lower)
        np.testing.assert_array_equal(fc.upper, first.upper)


def test_longer_and_shorter_history_without_refit(name: str, training: Series,
                                                  seasonal_series: Series) -> None:
    # A fresh model: the update path may change a model's state (ARIMA), not its contract.
    fitted = CASES[name].fitted(training)
    for history in (seasonal_series, training.head(len(training) - HELD_BACK)):
        fc = fitted.forecast(history, HORIZON, LEVEL)
        assert fc.start_seconds == history.end_seconds
        assert np.isfinite(fc.mean).all()


def test_bad_horizon_and_level(model: Forecaster, training: Series) -> None:
    with pytest.raises(InvalidInputError):
        model.forecast(training, 0, LEVEL)
    with pytest.raises(InvalidInputError):
        model.forecast(training, HORIZON, 1.0)


def test_missing_samples_rejected(model: Forecaster, training: Series) -> None:
    values = training.values.copy()
    values[-3] = np.nan
    with pytest.raises(InvalidInputError):
        model.forecast(Series(training.start_seconds, training.step_seconds, values),
                       HORIZON, LEVEL)
