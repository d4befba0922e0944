"""Moving average: the last stage of the chain, the forecaster that should always work.

It has no parameters to fit, needs only ``window + 1`` samples and cannot produce a negative
or non-finite mean, so the chain can fall back to it when the learned models cannot serve.
"""

from __future__ import annotations

import numpy as np

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecast, Forecaster
from forescale.core.series import FloatArray, Series

#: Fewest forecast origins whose errors at a lead are trusted for that lead's quantiles.
MIN_ORIGINS_PER_LEAD = 30


class MovingAverageForecaster(Forecaster):
    """The mean of the last ``window`` samples, flat over the horizon.

    **Interval.** The interval at lead ``h`` comes from the *empirical quantiles of the same
    rule's own h-step-ahead errors* at every origin in the last ``residual_span`` samples:
    ``mean + q_{(1-level)/2}(e_h)`` to ``mean + q_{(1+level)/2}(e_h)``. Why not a normal
    interval grown by ``sqrt(h)``:

    - ``sqrt(h)`` growth is right for a random walk, but at the steps we forecast (a minute,
      a horizon of minutes) arrival rates are a slowly moving level plus Poisson-like noise,
      whose flat-forecast error barely grows with ``h``: ``sqrt(15)`` would make the
      15-minute upper bound ~4x too wide and the plan would over-provision. Errors measured
      at each lead grow exactly as much as they do on this series.
    - Low-traffic series are right-skewed (bursts up, never below 0), and the plan
      provisions for the *upper* bound: separate lower and upper quantiles keep that skew
      instead of mirroring it.

    Two safeguards keep the empirical interval sane. Leads with fewer than
    :data:`MIN_ORIGINS_PER_LEAD` origins (short history) reuse the quantiles of the longest
    well-measured lead, widened by ``sqrt(h / h_ok)``: with too little data we fall back to
    the conservative random-walk growth. The half-widths are made non-decreasing in ``h``
    (a flat forecast is not more certain further out; a dip at some lead is sampling noise)
    and never exclude the mean. The lower bound is clipped at 0: a rate cannot be negative.
    """

    name = "ma"

    def __init__(self, window: int, *, residual_span: int = 1440) -> None:
        super().__init__()
        if not (isinstance(window, int) and window >= 1):
            raise InvalidInputError(f"moving average window must be a positive integer, "
                                    f"got {window!r}")
        if not (isinstance(residual_span, int) and residual_span >= 1):
            raise InvalidInputError(f"moving average residual span must be a positive "
                                    f"integer, got {residual_span!r}")
        self.window = window
        self.residual_span = residual_span

    @property
    def min_history(self) -> int:
        # One full window plus one sample to measure at least one error of the rule.
        return self.window + 1

    def _fit(self, history: Series) -> None:
        # Nothing to learn: the rule and its errors are computed from the history it is
        # asked to forecast from, which keeps the forecaster stateless.
        return None

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        v = history.values
        mean_value = float(v[-self.window:].mean())
        below, above = self._error_quantiles(v, horizon, level)
        mean = np.full(horizon, mean_value)
        lower = np.maximum(mean - below, 0.0)
        upper = mean + above
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean, lower,
                        upper, level)

    def _error_quantiles(self, v: FloatArray, horizon: int,
                         level: float) -> tuple[FloatArray, FloatArray]:
        """Half-widths below and above the mean at every lead (both non-negative)."""
        n, w = len(v), self.window
        csum = np.concatenate(([0.0], np.cumsum(v)))
        # Origin t forecasts v[t], v[t+1], … from v[t-w:t]; only recent origins count.
        origins = np.arange(max(w, n - self.residual_span), n)
        predicted = (csum[origins] - csum[origins - w]) / w
        target = origins[:, None] + np.arange(horizon)[None, :]
        valid = target < n
        errors = np.where(valid, v[np.minimum(target, n - 1)] - predicted[:, None], np.nan)
        counts = valid.sum(axis=0)
        # Leads are ordered by decreasing count; h_ok is the longest well-measured lead (at
        # least lead 1, which always has an origin because n >= window + 1).
        well_measured = np.flatnonzero(counts >= MIN_ORIGINS_PER_LEAD)
        h_ok = int(well_measured[-1]) + 1 if well_measured.size else 1
        alpha = (1.0 - level) / 2.0
        q = np.nanquantile(errors[:, :h_ok], [alpha, 1.0 - alpha], axis=0)
        below = np.maximum.accumulate(np.maximum(-q[0], 0.0))
        above = np.maximum.accumulate(np.maximum(q[1], 0.0))
        if h_ok < horizon:
            growth = np.sqrt(np.arange(h_ok + 1, horizon + 1) / h_ok)
            below = np.concatenate((below, below[-1] * growth))
            above = np.concatenate((above, above[-1] * growth))
        return below, above
