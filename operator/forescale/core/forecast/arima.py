"""ARIMA with daily and weekly Fourier seasonality (statsmodels SARIMAX): the chain's middle
stage.

The model is "regression with ARIMA errors", fitted in two steps so that a fit stays well
under a second on days of minute data:

1. the seasonal shape: ordinary least squares of the rate on an intercept, ``K`` Fourier
   pairs of the time of day (``K = fourier_terms``, only when the fit window covers at least
   two seasons; one day cannot tell a daily pattern from a trend) and, when the history
   covers at least :data:`MIN_WEEKS_FOR_WEEKLY` weeks, ``weekly_fourier_terms`` pairs of the
   time of week (weekday/weekend levels). With the weekly terms the shape is fitted on up to
   ``weekly_window_seconds`` of history (a week seen once cannot tell a weekly pattern from
   a one-off day);
2. the deviations from that shape: SARIMAX ``order`` fitted by maximum likelihood with a
   bounded number of iterations, on the bounded recent window (``fit_window_seconds``).

Fitting both jointly by maximum likelihood (SARIMAX with ``exog``) gave the same accuracy on
the NASA trace at 3-8x the CPU: with ``d = 1`` the likelihood sees the Fourier terms only
through their minute-to-minute differences, which are tiny, so it struggles to estimate
them, while least squares on the levels pins the daily shape down at once. The price is
that the interval ignores the uncertainty of the daily shape itself, which over two or
more days of data is small next to the deviations' own variance.

Between refits the fitted state is *updated*: new observations are filtered into it
(``results.extend``, parameters fixed), which costs milliseconds instead of a refit. A
history that does not continue what the model has seen (a prefix of it, another series,
after a gap) is forecast by applying the fitted parameters to that history
(``results.apply``), without touching the cached state.

**Negative values are returned as they are.** The mean and the lower bound are not clipped
at 0: at night a poor fit can forecast negative rates, and clipping would hide exactly
that from the chain, whose gate rejects a negative mean and hands over to the next stage.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.statespace.sarimax import SARIMAX

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecast, Forecaster, normal_quantile
from forescale.core.series import DAY_SECONDS, REVISABLE_STEPS, FloatArray, Series

WEEK_SECONDS = 7 * DAY_SECONDS
#: A history whose only differences from the seen window are in its newest
#: :data:`~forescale.core.series.REVISABLE_STEPS` continues it, re-filtered with the fitted
#: parameters rather than refitted.
#: Seasons the fit window must cover before Fourier terms are used.
MIN_SEASONS_FOR_FOURIER = 2.0
#: Weeks of history needed before the weekly terms are used. With one week each weekday is
#: seen once, so a "weekly" term would fit that week's one-off days.
MIN_WEEKS_FOR_WEEKLY = 2.0


@contextmanager
def _quiet_statsmodels() -> Iterator[None]:
    """Silence the warnings statsmodels emits on every routine fit, here only.

    A bounded ``maxiter`` means the optimiser often stops before its own tolerance (we
    accept that: the extra iterations barely move the forecast), and its default starting
    values for ARMA(2, 2) are often outside the stationary region. Neither is actionable.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Non-stationary starting autoregressive",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message="Non-invertible starting MA",
                                category=UserWarning)
        yield


def _weekly_harmonics(count: int) -> list[int]:
    """The first ``count`` weekly harmonics that are not daily ones (7 divides those, and
    the daily terms already hold them)."""
    return [k for k in range(1, count + count // 6 + 2) if k % 7][:count]


class ArimaForecaster(Forecaster):
    """ARIMA(p, d, q) errors around a daily (and, with two weeks of history, weekly) Fourier
    shape; see the module docstring.

    ``fit_window_seconds`` bounds the recent history a fit (and an apply) looks at;
    ``maxiter`` bounds the optimiser. The defaults fit 3 days of minute data in a few
    tenths of a second of CPU.
    """

    name = "arima"

    def __init__(self, order: tuple[int, int, int] = (2, 1, 2), fourier_terms: int = 3, *,
                 season_seconds: float = DAY_SECONDS,
                 fit_window_seconds: float = 3 * DAY_SECONDS, maxiter: int = 15,
                 weekly_fourier_terms: int = 3,
                 weekly_window_seconds: float = 4 * WEEK_SECONDS) -> None:
        super().__init__()
        if len(order) != 3 or any(not isinstance(x, int) or x < 0 for x in order):
            raise InvalidInputError(f"arima order must be three non-negative integers, "
                                    f"got {order!r}")
        for label, terms in (("fourier_terms", fourier_terms),
                             ("weekly_fourier_terms", weekly_fourier_terms)):
            if not (isinstance(terms, int) and terms >= 0):
                raise InvalidInputError(f"arima {label} must be a non-negative integer, "
                                        f"got {terms!r}")
        for label, value in (("season_seconds", season_seconds),
                             ("fit_window_seconds", fit_window_seconds),
                             ("weekly_window_seconds", weekly_window_seconds)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidInputError(f"arima {label} must be positive, got {value!r}")
        if not (isinstance(maxiter, int) and maxiter >= 1):
            raise InvalidInputError(f"arima maxiter must be a positive integer, got {maxiter!r}")
        self.order = order
        self.fourier_terms = fourier_terms
        self.season_seconds = float(season_seconds)
        self.fit_window_seconds = float(fit_window_seconds)
        self.maxiter = maxiter
        self.weekly_fourier_terms = weekly_fourier_terms
        self.weekly_window_seconds = float(weekly_window_seconds)
        # Set by _fit.
        self._fourier_used = 0
        self._weekly_used = 0
        self._beta: FloatArray = np.zeros(1)
        self._params: FloatArray = np.zeros(0)
        self._results: Any = None
        # The observations the cached state has absorbed (the recent, bounded part).
        self._seen = Series(0.0, 1.0, np.zeros(0))

    @property
    def min_history(self) -> int:
        p, d, q = self.order
        # Enough to estimate the ARMA terms from the differenced series with some margin.
        return max(60, 10 * (p + d + q))

    @property
    def fourier_terms_used(self) -> int:
        """Fourier pairs of the last fit (0 when its window covered under two seasons)."""
        return self._fourier_used

    @property
    def weekly_fourier_terms_used(self) -> int:
        """Weekly Fourier pairs of the last fit (0 when the history covered under
        :data:`MIN_WEEKS_FOR_WEEKLY` weeks)."""
        return self._weekly_used

    # -- fitting -------------------------------------------------------------------------

    def _window_samples(self, step_seconds: float) -> int:
        return max(self.min_history, round(self.fit_window_seconds / step_seconds))

    def _design(self, timestamps: FloatArray) -> FloatArray:
        """Intercept and the sin/cos pairs of the time within the season."""
        phase = 2.0 * np.pi * np.mod(timestamps, self.season_seconds) / self.season_seconds
        columns = [np.ones_like(timestamps)]
        for k in range(1, self._fourier_used + 1):
            columns += [np.sin(k * phase), np.cos(k * phase)]
        # UTC weeks; the phase origin does not matter (the fit finds it).
        week = 2.0 * np.pi * np.mod(timestamps, WEEK_SECONDS) / WEEK_SECONDS
        for k in _weekly_harmonics(self._weekly_used):
            columns += [np.sin(k * week), np.cos(k * week)]
        return np.column_stack(columns)

    def _fit(self, history: Series) -> None:
        step = history.step_seconds
        window = history.tail(self._window_samples(step))
        season_steps = self.season_seconds / step
        covers = len(window) * step >= MIN_SEASONS_FOR_FOURIER * self.season_seconds
        # Above the Nyquist limit a "harmonic" aliases onto a lower one.
        nyquist = max(int(season_steps // 2) - 1, 0)
        self._fourier_used = min(self.fourier_terms, nyquist) if covers else 0
        shape_span = history.tail(max(len(window), round(self.weekly_window_seconds / step)))
        weeks = len(shape_span) * step / WEEK_SECONDS
        self._weekly_used = self.weekly_fourier_terms if weeks >= MIN_WEEKS_FOR_WEEKLY else 0
        # The weekly shape needs the weeks it is identified from; the daily-only shape keeps
        # the recent window (it follows a daily shape that drifts over days).
        shape = shape_span if self._weekly_used else window
        X = self._design(shape.timestamps())
        beta, *_ = np.linalg.lstsq(X, shape.values, rcond=None)
        self._beta = np.asarray(beta, dtype=np.float64)
        X = self._design(window.timestamps())
        model = self._model(window.values - X @ self._beta)
        with _quiet_statsmodels():
            params = model.fit(disp=False, maxiter=self.maxiter, return_params=True)
            # Filtering, not smoothing, is all a forecast needs; no parameter covariance.
            self._results = model.filter(params, cov_type="none")
        self._params = np.asarray(params, dtype=np.float64)
        self._seen = window

    def _model(self, deviations: FloatArray) -> Any:
        # No constant: least squares already took out the mean.
        return SARIMAX(deviations, order=self.order, trend="n")

    # -- forecasting ---------------------------------------------------------------------

    def continues(self, history: Series, *, revisable: int = 0) -> bool:
        """Whether ``history`` extends what the cached state has seen, unchanged (but for
        the seen window's last ``revisable`` samples).

        True when it is on the same time grid, ends no earlier, and agrees exactly with
        every sample it shares with the seen window. The chain refits when this is False
        even with :data:`REVISABLE_STEPS` (a gap, a restart, rewritten history); a prefix
        is *not* a continuation.
        """
        if not self.fitted or history.step_seconds != self._seen.step_seconds:
            return False
        step = history.step_seconds
        offset = (self._seen.start_seconds - history.start_seconds) / step
        if abs(offset - round(offset)) > 1e-6:
            return False
        first = round(offset)  # index in history of the first seen sample
        if first + len(self._seen) > len(history):
            return False
        seen_from = max(-first, 0)
        if seen_from >= len(self._seen):
            return False  # no overlap at all: a gap
        upto = len(self._seen) - max(revisable, 0)
        shared = history.values[first + seen_from: first + upto]
        return bool(np.array_equal(shared, self._seen.values[seen_from:upto]))

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        if self.continues(history):
            results = self._update(history)
        elif self.continues(history, revisable=REVISABLE_STEPS):
            results = self._refilter(history)
        else:
            results = self._apply(history)
        future = history.end_seconds + history.step_seconds * np.arange(horizon,
                                                                         dtype=np.float64)
        with _quiet_statsmodels():
            prediction = results.get_forecast(horizon)
        mean = self._design(future) @ self._beta + np.asarray(prediction.predicted_mean)
        half = normal_quantile(level) * np.asarray(prediction.se_mean)
        # Raw values on purpose (see the module docstring): the chain gates negatives.
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean,
                        mean - half, mean + half, level)

    def _deviations(self, series: Series) -> FloatArray:
        return np.asarray(series.values - self._design(series.timestamps()) @ self._beta,
                          dtype=np.float64)

    def _update(self, history: Series) -> Any:
        """Filter the samples after the seen window into the cached state (no refit)."""
        new = len(history) - round((self._seen.end_seconds - history.start_seconds)
                                   / history.step_seconds)
        if new > 0:
            fresh = history.tail(new)
            with _quiet_statsmodels():
                self._results = self._results.extend(self._deviations(fresh))
            combined = np.concatenate((self._seen.values, fresh.values))
            keep = self._window_samples(history.step_seconds)
            self._seen = Series(self._seen.start_seconds, history.step_seconds,
                                combined).tail(keep)
        return self._results

    def _refilter(self, history: Series) -> Any:
        """The fitted parameters run over ``history``'s recent window, which becomes the
        cached state: its newest samples were revised, so the state filtered through the
        old ones is not extended (one filter pass, not a refit)."""
        self._results = self._apply(history)
        self._seen = history.tail(self._window_samples(history.step_seconds))
        return self._results

    def _apply(self, history: Series) -> Any:
        """The fitted parameters run over ``history``'s recent window; the cache is kept."""
        window = history.tail(self._window_samples(history.step_seconds))
        with _quiet_statsmodels():
            return self._model(self._deviations(window)).filter(self._params, cov_type="none")
