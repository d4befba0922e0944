"""Shared fixtures: small deterministic arrival-rate series, real and synthetic."""

from __future__ import annotations

from forescale.threads import limit_native_threads

limit_native_threads()  # before numpy and torch load

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from forescale.core.series import Series
from forescale.trace import Trace, load_trace

REPO = Path(__file__).resolve().parent.parent
NASA_TRACE = REPO / "traces" / "nasa_ksc_jul1995_1min.csv"
DAY = 86400.0
#: A Monday, 00:00 UTC, so that synthetic series start at midnight.
T0 = 1_700_438_400.0


def seasonal_poisson(*, days: float = 3.0, step_seconds: float = 300.0, base: float = 20.0,
                     amplitude: float = 0.6, seed: int = 7, start_seconds: float = T0) -> Series:
    """Poisson arrivals around a daily sine: ``base * (1 + amplitude * sin)`` req/s.

    Counts per step are Poisson, so the rate has the noise real traffic has; the seed
    fixes every value.
    """
    n = round(days * DAY / step_seconds)
    t = start_seconds + step_seconds * np.arange(n)
    rate = base * (1.0 + amplitude * np.sin(2.0 * np.pi * (t % DAY) / DAY))
    counts = np.random.default_rng(seed).poisson(rate * step_seconds)
    return Series.from_array(counts / step_seconds, start_seconds=start_seconds,
                             step_seconds=step_seconds)


SeasonalFactory = Callable[..., Series]


@pytest.fixture(scope="session")
def make_seasonal() -> SeasonalFactory:
    """:func:`seasonal_poisson` itself, for tests that need another length, step or seed."""
    return seasonal_poisson


@pytest.fixture(scope="session")
def nasa_trace() -> Trace:
    return load_trace(NASA_TRACE)


@pytest.fixture(scope="session")
def nasa_3days(nasa_trace: Trace) -> Series:
    """The first three days of the NASA trace (4,320 one-minute samples)."""
    return nasa_trace.rates.head(3 * 1440)


@pytest.fixture(scope="session")
def seasonal_series() -> Series:
    """Three days of daily-seasonal Poisson traffic at a 5-minute step (864 samples)."""
    return seasonal_poisson()


@pytest.fixture
def arima_fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ARIMA refits: every call of ArimaForecaster._fit appends the history length."""
    from forescale.core.forecast.arima import ArimaForecaster

    calls: list[int] = []
    original = ArimaForecaster._fit

    def spy(self: ArimaForecaster, history: Series) -> None:
        calls.append(len(history))
        original(self, history)

    monkeypatch.setattr(ArimaForecaster, "_fit", spy)
    return calls
