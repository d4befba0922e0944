"""Forecasters (LSTM, ARIMA, moving average) and the fallback chain."""

from forescale.core.forecast.base import Forecast, Forecaster

__all__ = ["Forecast", "Forecaster"]
