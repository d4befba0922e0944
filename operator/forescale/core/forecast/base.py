"""The one contract every forecaster follows (after statsforecast and darts).

A forecaster is fitted on history and then forecasts the ``horizon`` steps that follow the
end of a (possibly newer) history, with a mean and a prediction interval at a requested
confidence level. numpy in, numpy out, no I/O; the chain owns fallback.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Self

import numpy as np
from scipy.special import ndtri

from forescale.core.errors import InvalidInputError, NotFittedError
from forescale.core.series import FloatArray, Series


@dataclass(frozen=True)
class Forecast:
    """``horizon`` steps of arrival rate (req/s) starting at ``start_seconds``."""

    model: str
    start_seconds: float
    step_seconds: float
    mean: FloatArray
    lower: FloatArray
    upper: FloatArray
    level: float

    def __post_init__(self) -> None:
        for name in ("mean", "lower", "upper"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if not (self.mean.shape == self.lower.shape == self.upper.shape):
            raise ValueError("forecast mean, lower and upper must have the same length")

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0])

    def timestamps(self) -> FloatArray:
        return self.start_seconds + self.step_seconds * np.arange(self.horizon, dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "start_seconds": self.start_seconds,
            "step_seconds": self.step_seconds,
            "level": self.level,
            "mean": [round(float(v), 6) for v in self.mean],
            "lower": [round(float(v), 6) for v in self.lower],
            "upper": [round(float(v), 6) for v in self.upper],
        }


def check_level(level: float) -> float:
    if not (isinstance(level, int | float) and math.isfinite(level) and 0.0 < level < 1.0):
        raise InvalidInputError(f"confidence level must be in (0, 1), got {level!r}")
    return float(level)


def check_horizon(horizon: int) -> int:
    if not isinstance(horizon, int) or horizon < 1:
        raise InvalidInputError(f"forecast horizon must be a positive number of steps, "
                                f"got {horizon!r}")
    return horizon


class Forecaster(abc.ABC):
    """Base class: subclasses implement :meth:`_fit` and :meth:`_forecast`."""

    #: The name the ScalingPolicy and the CLI use for this model (``lstm``, ``arima``, ``ma``).
    name: str = ""

    def __init__(self) -> None:
        self._fitted = False
        self._step_seconds: float | None = None

    @property
    @abc.abstractmethod
    def min_history(self) -> int:
        """The fewest samples of history :meth:`fit` and :meth:`forecast` accept."""

    @property
    def fitted(self) -> bool:
        return self._fitted

    def fit(self, history: Series) -> Self:
        """Fit on ``history`` (no NaN; see :meth:`Series.filled`)."""
        self._check_history(history)
        self._fit(history)
        self._fitted = True
        self._step_seconds = history.step_seconds
        return self

    def forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        """Forecast the ``horizon`` steps after the end of ``history``.

        ``history`` may extend (or be a prefix of) the history the model was fitted on; the
        fitted parameters are applied to it without refitting.
        """
        if not self._fitted:
            raise NotFittedError(f"{self.name} forecaster used before it was fitted")
        self._check_history(history)
        if self._step_seconds is not None and history.step_seconds != self._step_seconds:
            raise InvalidInputError(
                f"{self.name} was fitted at a {self._step_seconds:g}s step, history has "
                f"{history.step_seconds:g}s")
        return self._forecast(history, check_horizon(horizon), check_level(level))

    def _check_history(self, history: Series) -> None:
        if len(history) < self.min_history:
            raise InvalidInputError(
                f"{self.name} needs at least {self.min_history} samples of history, "
                f"got {len(history)}")
        if np.isnan(history.values).any():
            raise InvalidInputError(f"{self.name} got history with missing samples")

    @abc.abstractmethod
    def _fit(self, history: Series) -> None: ...

    @abc.abstractmethod
    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast: ...


def normal_quantile(level: float) -> float:
    """Two-sided z for a central interval at ``level`` (0.95 -> 1.96)."""
    return float(ndtri(0.5 + level / 2.0))
