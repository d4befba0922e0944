"""The forecasters by the names a ScalingPolicy uses for them (``spec.forecast.models``).

Each factory builds an unfitted forecaster from :class:`ForecastSettings`, except the LSTM
one, which loads the trained artifact (training is offline: ``forescale train``). The chain
creates its stages through :func:`create`, so a new model is one entry here plus its name
in the CRD's enum.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from forescale.core.errors import ArtifactError
from forescale.core.forecast.arima import ArimaForecaster
from forescale.core.forecast.base import Forecaster
from forescale.core.forecast.moving_average import (
    ExponentialMovingAverage,
    MovingAverageForecaster,
)
from forescale.core.spec import ForecastSettings, ModelName

Factory = Callable[[ForecastSettings], Forecaster]


def _lstm(settings: ForecastSettings) -> Forecaster:
    if settings.lstm_model is None:
        raise ArtifactError("no LSTM model configured",
                            reason="ArtifactMissing")
    # Imported here: torch takes seconds to import and only this stage needs it.
    from forescale.core.forecast.lstm import LSTMForecaster

    return LSTMForecaster.load(settings.lstm_model)


def _arima(settings: ForecastSettings) -> Forecaster:
    p, d, q = (int(x) for x in settings.arima_order)
    return ArimaForecaster(order=(p, d, q), fourier_terms=int(settings.arima_fourier_terms))


def _ma(settings: ForecastSettings) -> Forecaster:
    if settings.moving_average_rule == "exponential":
        return ExponentialMovingAverage()
    return MovingAverageForecaster(int(settings.moving_average_window))


#: The registry. Tests replace entries (``monkeypatch.setitem``) to put fakes in the chain.
FACTORIES: dict[ModelName, Factory] = {"lstm": _lstm, "arima": _arima, "ma": _ma}


def artifact_fingerprint(settings: ForecastSettings) -> Hashable:
    """What the LSTM artifact's files are now (None without one): the chain loads the
    artifact again when this changes (see ``lstm.artifact_fingerprint``)."""
    if settings.lstm_model is None:
        return None
    from forescale.core.forecast.lstm import artifact_fingerprint as stamp

    return stamp(settings.lstm_model)


def create(name: ModelName, settings: ForecastSettings) -> Forecaster:
    """A new forecaster for the model ``name`` (raises :class:`ArtifactError` for an LSTM
    whose artifact is missing, corrupt or incompatible)."""
    return FACTORIES[name](settings)
