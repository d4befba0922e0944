"""Seasonal naive: the yardstick every model card and accuracy benchmark compares against.

Not part of the serving chain; it follows the same contract so it can be scored the same way.
"""

from __future__ import annotations

import numpy as np

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecast, Forecaster, normal_quantile
from forescale.core.series import DAY_SECONDS, Series


class SeasonalNaive(Forecaster):
    """Tomorrow looks like today: the value one season (a day by default) earlier."""

    name = "seasonal_naive"

    def __init__(self, *, season_seconds: float = DAY_SECONDS) -> None:
        super().__init__()
        self.season_seconds = season_seconds
        self._season = 0
        self._sigma = 0.0

    @property
    def min_history(self) -> int:
        # Before fit the step is unknown; one sample is the floor, fit checks the season.
        return max(self._season, 1)

    def _fit(self, history: Series) -> None:
        season = round(self.season_seconds / history.step_seconds)
        if len(history) < season + 1:
            raise InvalidInputError(
                f"seasonal naive needs more than one season ({season} samples), "
                f"got {len(history)}")
        self._season = season
        v = history.values
        residuals = v[season:] - v[:-season]
        self._sigma = float(np.std(residuals)) if residuals.size else 0.0

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        v = history.values
        s = self._season
        # Step h ahead (0-based) maps to the sample one season before it.
        idx = len(v) + np.arange(horizon) - s
        idx = np.where(idx >= len(v), idx - s * ((idx - len(v)) // s + 1), idx)
        mean = v[idx]
        z = normal_quantile(level)
        half = z * self._sigma
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean,
                        np.maximum(mean - half, 0.0), mean + half, level)
