"""Rolling-origin evaluation: how well forecasters (and the fallback chain) do on a span.

Forecast origins are placed every ``every_seconds`` from ``start`` while a full horizon fits
before ``end``. At each origin every model forecasts the next ``horizon_seconds`` from the
last ``history_seconds`` of the series up to the origin (no look-ahead; the fitted
parameters are applied, nothing is refitted); forecasts and actuals are averaged into
``block_seconds`` mean rates and scored over all origins together by MAPE, by WAPE and by
the share of block means within 10 % (:mod:`forescale.core.metrics`).

With a ``chain``, it is run at every origin too and scored as ``"chain"``, keeping its
stages' track records as the plan does, so its relative gate (``WorseThanFallback``) acts
here as in the operator. At origins where
every stage fails its gate the operator holds its replicas; to keep the scores comparable
such origins are scored with the forecast of the chain's last stage *as a plain model*
(which therefore must be one of ``models``), and how often that happened is counted.

Timings (ms per forecast) are measured only with an injected ``clock`` (for example
``time.perf_counter``): the core never reads the clock itself.

The series must have no missing samples (see :meth:`Series.filled`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from forescale.core.calibration import Records, intensity_steps
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecaster
from forescale.core.forecast.chain import ForecastChain
from forescale.core.metrics import mape, share_within, wape
from forescale.core.series import FloatArray, Series

Clock = Callable[[], float]
#: Called after each origin with (origins done, origins in total).
Progress = Callable[[int, int], None]

#: The name the chain's scores go under.
CHAIN = "chain"
#: The tolerance of the "within" share.
WITHIN = 0.10


@dataclass(frozen=True)
class ModelScore:
    """One model's scores over every origin's block means."""

    mape: float
    #: Share of block means within 10 % of the actual one.
    within_10pct: float
    #: Mean milliseconds per forecast call; None without a clock.
    ms_per_forecast: float | None = None
    #: Sum of absolute errors over the sum of the actual block means (quiet hours weigh
    #: less than in MAPE); None when not computed.
    wape: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"mape": self.mape, "wape": self.wape, "within_10pct": self.within_10pct,
                "mean_forecast_ms": self.ms_per_forecast}


@dataclass(frozen=True)
class EvaluationResult:
    start: float
    end: float
    horizon_seconds: float
    every_seconds: float
    block_seconds: float
    history_seconds: float
    #: Origins scored (each with a full horizon of actuals).
    origins: int
    #: Per model, in the order given, then ``"chain"`` when a chain was evaluated.
    scores: Mapping[str, ModelScore]
    #: How often each stage served (``"none (<reason>)"`` when none did); empty without chain.
    chain_served: Mapping[str, int] = field(default_factory=dict)
    #: Origins where every stage failed, scored with the last stage's ungated forecast.
    chain_unserved: int = 0

    def relative_mape(self, baseline: str = "seasonal_naive") -> dict[str, float]:
        """Every model's MAPE divided by ``baseline``'s (below 1: better than it)."""
        base = self.scores[baseline].mape
        return {name: _ratio(s.mape, base) for name, s in self.scores.items()}

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start, "end": self.end, "horizon_seconds": self.horizon_seconds,
            "every_seconds": self.every_seconds, "block_seconds": self.block_seconds,
            "history_seconds": self.history_seconds, "origins": self.origins,
            "scores": {name: s.to_dict() for name, s in self.scores.items()},
            "chain_served": dict(self.chain_served), "chain_unserved": self.chain_unserved,
        }

    def to_markdown(self, baseline: str = "seasonal_naive") -> str:
        """A table: MAPE, WAPE, within 10 %, MAPE relative to ``baseline`` (when it was scored) and
        ms per forecast (when timed)."""
        relative = self.relative_mape(baseline) if baseline in self.scores else None
        timed = any(s.ms_per_forecast is not None for s in self.scores.values())
        head = ["model", "MAPE", "WAPE", "within 10 %"]
        if relative is not None:
            head.append(f"MAPE / {baseline.replace('_', ' ')}")
        if timed:
            head.append("ms per forecast")
        lines = ["| " + " | ".join(head) + " |",
                 "|---|" + "---:|" * (len(head) - 1)]
        for name, s in self.scores.items():
            cells = [name, f"{s.mape:.1%}", "—" if s.wape is None else f"{s.wape:.1%}",
                     f"{s.within_10pct:.1%}"]
            if relative is not None:
                cells.append(f"{relative[name]:.2f}")
            if timed:
                cells.append("—" if s.ms_per_forecast is None else f"{s.ms_per_forecast:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:  # Jupyter shows the table
        return self.to_markdown()


def rolling_origin_evaluation(
        series: Series, models: Mapping[str, Forecaster], *, start: float, end: float,
        horizon_seconds: float = 900, every_seconds: float = 900, block_seconds: float = 300,
        history_seconds: float = 7 * 86400, level: float = 0.9,
        chain: ForecastChain | None = None, clock: Clock | None = None,
        progress: Progress | None = None) -> EvaluationResult:
    """Score fitted ``models`` (and ``chain``) at origins every ``every_seconds`` in
    ``[start, end - horizon_seconds]``; see the module docstring for the method."""
    step = series.step_seconds
    for name, value in (("horizon_seconds", horizon_seconds), ("every_seconds", every_seconds),
                        ("block_seconds", block_seconds), ("history_seconds", history_seconds)):
        if not (math.isfinite(value) and value > 0):
            raise InvalidInputError(f"{name} must be a positive number of seconds, "
                                    f"got {value!r}")
    horizon = round(horizon_seconds / step)
    if horizon < 1:
        raise InvalidInputError(f"horizon {horizon_seconds:g}s is shorter than the series' "
                                f"{step:g}s step")
    if series.missing:
        raise InvalidInputError(f"series has {series.missing} missing samples; fill them "
                                f"first (Series.filled)")
    if CHAIN in models and chain is not None:
        raise InvalidInputError(f"a model may not be called {CHAIN!r} alongside the chain")
    fallback = chain.settings.models[-1] if chain is not None else None
    if fallback is not None and fallback not in models:
        raise InvalidInputError(
            f"models must include the chain's last stage {fallback!r}: origins where every "
            f"stage fails are scored with its ungated forecast")
    per_block = max(1, round(block_seconds / step))
    if per_block > horizon:  # every block would be empty, and nothing scored "perfect"
        raise InvalidInputError(f"block {block_seconds:g}s is longer than the horizon "
                                f"{horizon_seconds:g}s: no block of it could be scored")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InvalidInputError(f"start and end must be finite times, got {start!r} and "
                                f"{end!r}")
    keep = round(history_seconds / step)
    origins = np.arange(start, end - horizon_seconds + 1, every_seconds)
    names = [*models, *([CHAIN] if chain is not None else [])]
    predicted: dict[str, list[FloatArray]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    actual: list[FloatArray] = []
    served: dict[str, int] = {}
    unserved = 0
    # The chain keeps its stages' track records as the plan does (every origin is an
    # aligned one): scored only once each horizon has passed, against the intensity over
    # the policy's intensitySeconds (it was each raw step), so its relative gate works
    # here exactly as in the operator.
    records = Records()
    steps = intensity_steps(chain.settings.intensity_seconds, series.step_seconds) \
        if chain is not None else 1
    for done, origin in enumerate(origins, start=1):
        past = series.until(float(origin))
        future = series.values[len(past):][:horizon]
        if len(future) < horizon:
            break
        history = past.tail(keep)
        actual.append(_block_means(future, per_block))
        for name, model in models.items():
            t = clock() if clock is not None else 0.0
            fc = model.forecast(history, horizon, level)
            if clock is not None:
                seconds[name] += clock() - t
            predicted[name].append(_block_means(fc.mean, per_block))
        if chain is not None:
            t = clock() if clock is not None else 0.0
            records.score(history, intensity_steps=steps,
                          half_life=chain.settings.calibration_half_life_seconds,
                          now=float(origin))
            result = chain.forecast(history, horizon, now=float(origin), records=records,
                                    track_due=True)
            for run in result.runs:
                records.record(history.end_seconds, run.model, served=False, track=True,
                               means=run.forecast.mean)
            if clock is not None:
                seconds[CHAIN] += clock() - t
            key = result.served_by or f"none ({result.reason})"
            served[key] = served.get(key, 0) + 1
            if result.forecast is not None:
                predicted[CHAIN].append(_block_means(result.forecast.mean, per_block))
            else:
                unserved += 1
                predicted[CHAIN].append(predicted[str(fallback)][-1])
        if progress is not None:
            progress(done, len(origins))
    if not actual:
        raise InvalidInputError("no forecast origin with a full horizon of actuals between "
                                "start and end")
    a = np.concatenate(actual)
    scores = {}
    for name in names:
        p = np.concatenate(predicted[name])
        scores[name] = ModelScore(
            mape=mape(a, p), within_10pct=share_within(a, p, WITHIN), wape=wape(a, p),
            ms_per_forecast=1000 * seconds[name] / len(actual) if clock is not None else None)
    return EvaluationResult(start=float(start), end=float(end),
                            horizon_seconds=float(horizon_seconds),
                            every_seconds=float(every_seconds),
                            block_seconds=float(block_seconds),
                            history_seconds=float(history_seconds), origins=len(actual),
                            scores=scores, chain_served=served, chain_unserved=unserved)


def _block_means(values: FloatArray, per_block: int) -> FloatArray:
    n = (len(values) // per_block) * per_block
    means: FloatArray = np.asarray(values[:n], dtype=np.float64).reshape(-1, per_block).mean(
        axis=1)
    return means


def _ratio(x: float, base: float) -> float:
    if base == 0:
        return 0.0 if x == 0 else math.inf
    return x / base
