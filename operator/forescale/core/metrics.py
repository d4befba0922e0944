"""Forecast-accuracy measures used by the chain's gate, model cards and benchmarks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def wape(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Weighted absolute percentage error: sum|a - p| / sum|a|. Robust to zeros in ``a``.

    Returns 0 when both are all zero and +inf when only the actuals are.
    """
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    err = float(np.abs(a - p).sum())
    scale = float(np.abs(a).sum())
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / scale


def mape(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Mean absolute percentage error over the points where the actual is non-zero."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    nz = a != 0
    if not nz.any():
        return float("nan")
    return float(np.mean(np.abs(a[nz] - p[nz]) / np.abs(a[nz])))


def share_within(actual: npt.ArrayLike, predicted: npt.ArrayLike, tolerance: float) -> float:
    """Share of points whose relative error is within ``tolerance`` (0.1 = 10 %)."""
    a = np.asarray(actual, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    nz = a != 0
    if not nz.any():
        return float("nan")
    return float(np.mean(np.abs(a[nz] - p[nz]) <= tolerance * np.abs(a[nz])))
