"""A regularly spaced arrival-rate series: the one input every forecaster and the plan take."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forescale.core.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]

DAY_SECONDS = 86400.0
#: The newest samples a range query may still revise or fill in (late scrapes, remote
#: write): the operator's history reader reads them again every cycle, ARIMA re-filters
#: rather than refits over them, and calibration waits for a gap there to fill.
REVISABLE_STEPS = 3


def day_steps(step_seconds: float) -> int:
    """How many samples of ``step_seconds`` make a day (at least one)."""
    return max(1, round(DAY_SECONDS / step_seconds))


@dataclass(frozen=True)
class Series:
    """Arrival rate in requests per second at a fixed step.

    ``values[i]`` is the mean rate over ``[start + i*step, start + (i+1)*step)``. Missing
    samples are NaN; :meth:`validate` rejects negative or infinite values.
    """

    start_seconds: float
    step_seconds: float
    values: FloatArray

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_seconds) and self.step_seconds > 0):
            raise InvalidInputError(f"series step must be a positive number of seconds, "
                                    f"got {self.step_seconds!r}")
        if not math.isfinite(self.start_seconds):
            raise InvalidInputError(f"series start must be finite, got {self.start_seconds!r}")
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise InvalidInputError(f"series values must be one-dimensional, got {values.ndim}")
        finite = values[~np.isnan(values)]
        if np.isinf(finite).any():
            raise InvalidInputError("series contains infinite arrival rates")
        if (finite < 0).any():
            first = int(np.argmax(np.nan_to_num(values, nan=0.0) < 0))
            raise InvalidInputError(
                f"series contains a negative arrival rate ({values[first]:g} req/s at index "
                f"{first})")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_array(cls, values: npt.ArrayLike, *, start_seconds: float = 0.0,
                   step_seconds: float = 60.0) -> Series:
        return cls(start_seconds=float(start_seconds), step_seconds=float(step_seconds),
                   values=np.asarray(values, dtype=np.float64))

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def end_seconds(self) -> float:
        """The end of the last sample's interval (where a forecast starts)."""
        return self.start_seconds + len(self) * self.step_seconds

    def timestamps(self) -> FloatArray:
        """Start of every sample's interval, in Unix seconds."""
        return self.start_seconds + self.step_seconds * np.arange(len(self), dtype=np.float64)

    def head(self, n: int) -> Series:
        """The first ``n`` samples."""
        return Series(self.start_seconds, self.step_seconds, self.values[: max(n, 0)])

    def tail(self, n: int) -> Series:
        """The last ``n`` samples (all of them when ``n`` is larger)."""
        n = min(max(n, 0), len(self))
        return Series(self.start_seconds + (len(self) - n) * self.step_seconds,
                      self.step_seconds, self.values[len(self) - n:])

    def until(self, t_seconds: float) -> Series:
        """The samples whose interval ended at or before ``t_seconds`` (no look-ahead)."""
        n = math.floor((t_seconds - self.start_seconds) / self.step_seconds + 1e-9)
        return self.head(min(max(n, 0), len(self)))

    def last_day(self) -> FloatArray:
        """The samples of the last day (all of them when the series is shorter), gaps (NaN)
        included: what the day's level, ε and regimes are measured on."""
        return self.values[-day_steps(self.step_seconds):]

    @property
    def missing(self) -> int:
        return int(np.isnan(self.values).sum())

    def since_first_observed(self) -> Series:
        """Without the missing samples before the first observed one (a workload younger
        than the window asked for: the window's start is NaN until it existed)."""
        observed = np.flatnonzero(~np.isnan(self.values))
        first = int(observed[0]) if observed.size else len(self)
        return self.tail(len(self) - first)

    def filled(self) -> Series:
        """Missing samples replaced by linear interpolation (edges by the nearest value)."""
        nan = np.isnan(self.values)
        if not nan.any():
            return self
        if nan.all():
            raise InvalidInputError("series has no observed samples")
        idx = np.arange(len(self))
        values = self.values.copy()
        values[nan] = np.interp(idx[nan], idx[~nan], self.values[~nan])
        return Series(self.start_seconds, self.step_seconds, values)


def window_means(values: npt.ArrayLike, width: int) -> FloatArray:
    """The mean of every ``width`` consecutive samples of ``values``: element ``i`` is the
    mean of ``values[i:i + width]``, NaN when that window has a gap; empty when there are
    fewer than ``width`` samples."""
    x = np.asarray(values, dtype=np.float64)
    width = max(1, int(width))
    if x.size < width:
        return np.empty(0)
    nan = np.isnan(x)
    sums = np.concatenate(([0.0], np.cumsum(np.where(nan, 0.0, x))))
    gaps = np.concatenate(([0], np.cumsum(nan)))
    means = (sums[width:] - sums[:-width]) / width
    means[(gaps[width:] - gaps[:-width]) > 0] = np.nan
    return means
