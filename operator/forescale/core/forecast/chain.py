"""The fallback chain: try each model in ``settings.models`` order, serve the first that passes.

A stage is skipped, with a CamelCase reason, when

- its artifact is missing, corrupt or made for another series (``Artifact*``, LSTM only);
- the history is shorter than it needs (``HistoryTooShort``);
- it raises (``ModelError``): a model failure must never take the operator down;
- it overruns ``settings.stage_budget_seconds`` (``BudgetExceeded``), measured only with an
  injected clock: the core never reads the clock itself, so without one budgets are off;
- its forecast has a NaN or infinity (``NonFiniteForecast``) or a negative mean
  (``NegativeForecast``): forecasters return raw values so that a bad fit shows here;
  other steps than were asked for are a ``ModelError``;
- its forecast's mean rises above :data:`IMPLAUSIBLE_MULTIPLE` times the highest rate in
  the history (``ImplausibleForecast``): checked on the forecast in hand, at every
  decision, because a track record only says how the stage did before — a model with a
  good record that suddenly forecasts 50 times the level served for a quarter of an hour
  at up to 30 times the capacity needed (a forecast far below the level needs no such
  gate: the reactive floor holds the capacity the observed rate needs);
- its recent out-of-sample error is above ``settings.max_error`` (``AccuracyTooLow``);
- its recent error (WAPE or median), or the width of the bound its errors would need, is
  more than ``settings.relative_margin`` above that of a later healthy stage
  (``WorseThanFallback``; see :func:`_better_fallback`): a model that has gone wrong, is
  off more often, or whose misses cost more capacity than a simpler one's, hands over
  even while it is under the absolute limit.

**Track records.** The plan keeps every stage's recent forecasts in its state
(:class:`~forescale.core.calibration.Records`) and scores each once its horizon has been
observed: honestly out of sample, with the parameters the model had when it forecast. Every
``TRACK_PERIODS`` decision periods (an aligned origin) every runnable stage forecasts, the
ones not serving as a *shadow run* whose failures are not reported, so the stages' records
share origins and can be compared. With enough scored origins (``MIN_COMMON``) a stage's
record replaces the re-forecast check below for the absolute gate, and the relative gate
compares it with every later stage whose own record is healthy. A stage that failed
only a gate still has its forecast recorded, so its record shows when it has recovered.
Without records (a fresh state, a young service) the chain works as described next.

Later stages after the serving one are reported as ``NotTried``. Every stage's outcome is in
the result, so a status condition can say why LSTM did not serve, not just that ARIMA did.

Without enough track record, the recent error is the WAPE of the forecast's mean level over
the horizon at up to
:data:`CHECK_ORIGINS` origins, one horizon apart, in the last ``CHECK_ORIGINS * horizon``
samples — the level, not each sample, because the plan provisions for the level over its
window, and because per-sample Poisson noise of a quiet service (a few requests a minute)
alone exceeds any sensible limit and would fail every stage at night. Each forecast is made
from the history up to its origin with the current parameters (no refit) and scored
against what followed. For ARIMA those parameters have seen the scored samples, so the
check is a little optimistic; it exists to catch a model that has gone wrong, such as a
stale LSTM after the traffic changed shape, not to rank models. A history too short for
even one origin (``min_history + horizon`` samples) cannot be checked; the stage then serves
with ``recent_error`` None and says so, rather than leaving a young service unforecast.

State: the loaded LSTM and the fitted ARIMA are kept between calls. ARIMA is refitted when
``now - fitted_at >= settings.arima_refit_seconds`` or when the history no longer continues
what it has seen (a gap, a restart, rewritten samples); otherwise new samples are filtered
into its state. Given the same inputs and call sequence the result is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forescale.core.calibration import MIN_COMMON, WIDTH_COVERAGE, Records
from forescale.core.errors import ArtifactError
from forescale.core.forecast import registry
from forescale.core.forecast.base import Forecast, Forecaster, check_horizon
from forescale.core.metrics import wape
from forescale.core.series import REVISABLE_STEPS, Series
from forescale.core.spec import ForecastSettings, ModelName

#: Origins of the recent out-of-sample check.
CHECK_ORIGINS = 3
#: A mean this far below 0 (req/s) is rounding, not a bad model: ~0.09 requests a day.
NEGATIVE_TOLERANCE = 1e-6
#: A forecast mean above this multiple of the highest per-step rate in the history the
#: chain reads (7-14 days) is no forecast: nothing in the series supports it. Generous
#: on purpose — a burst, a flash crowd or a level shift already under way is in that
#: history, and a per-step maximum sits well above any window's mean — so only a model
#: that has gone wrong reaches it.
IMPLAUSIBLE_MULTIPLE = 3.0
#: ... plus this many requests per step, so that on a service that has been idle (one
#: request a week) a forecast of a request or two is never called implausible.
IMPLAUSIBLE_SLACK_REQUESTS = 2.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class StageReport:
    """How one model of the chain fared."""

    model: str
    served: bool
    #: ``Served``, ``ArtifactMissing``, ``ArtifactCorrupt``, ``ArtifactMismatch``,
    #: ``HistoryTooShort``, ``ModelError``, ``BudgetExceeded``, ``NonFiniteForecast``,
    #: ``NegativeForecast``, ``AccuracyTooLow``, ``WorseThanFallback`` or ``NotTried``;
    #: ``ServedAboveMaxError`` when every stage that ran failed an accuracy gate and this,
    #: the least inaccurate, serves anyway.
    reason: str
    message: str
    #: WAPE of the recent out-of-sample check, when it was computed.
    recent_error: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "served": self.served,
            "reason": self.reason,
            "message": self.message,
            "recent_error": _json_number(self.recent_error),
        }


@dataclass(frozen=True)
class StageRun:
    """A forecast a stage made at this decision (recorded for its track record)."""

    model: str
    forecast: Forecast
    served: bool


@dataclass(frozen=True)
class ChainResult:
    """The forecast (or none) with every stage's report."""

    forecast: Forecast | None
    served_by: str | None
    stages: tuple[StageReport, ...]
    #: ``Forecasted``, ``NoData`` or ``AllForecastersFailed``.
    reason: str
    message: str
    #: Every stage that forecast at this decision, served or not, for the track records.
    runs: tuple[StageRun, ...] = ()
    #: The LSTM artifact's path if it was loaded again at this decision, its files having
    #: changed since it was last loaded (retrained, replaced, repaired). Its stage's
    #: track record starts again then (:meth:`Records.forget`).
    reloaded: str | None = None
    #: The LSTM's record is to start again: the artifact serving now is another than the
    #: records were kept for (its digest differs from the one stored with them), or, in
    #: records from before digests were stored, it was loaded again here.
    forget_lstm: bool = False
    #: The digest of the LSTM artifact loaded now (None: none loaded, or trained in the
    #: process), for the records.
    lstm_digest: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "message": self.message,
            "served_by": self.served_by,
            "forecast": None if self.forecast is None else self.forecast.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }


def _json_number(x: float | None) -> float | None:
    # JSON has no infinity; a WAPE of inf (actuals all zero) is still in the message.
    if x is None or not math.isfinite(x):
        return None
    return round(x, 6)


class _Skip(Exception):  # noqa: N818 (control flow, not an error)
    """A stage cannot serve; carries the reason and the one-line message."""

    def __init__(self, reason: str, message: str, recent_error: float | None = None,
                 forecast: Forecast | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.recent_error = recent_error
        #: A valid forecast that failed only the accuracy gate: still recorded, so that
        #: the stage's track record can show when it has recovered.
        self.forecast = forecast


#: Gate reasons that leave a valid forecast behind (the stage ran, only its error was judged).
_ACCURACY_GATES = ("AccuracyTooLow", "WorseThanFallback")


def before_served(stages: Sequence[StageReport]) -> Sequence[StageReport]:
    """The stages before the one that served by passing every gate (all of them if none
    did): those skipped on the way to it."""
    served = next((k for k, s in enumerate(stages) if s.reason == "Served"), len(stages))
    return stages[:served]


def _least_inaccurate(stages: list[StageReport], runs: list[StageRun]) -> StageRun | None:
    """When no stage served but some only failed an accuracy gate, the one with the lowest
    recent error serves (``ServedAboveMaxError``), in ``stages`` and ``runs`` alike; its
    run, now serving.

    On a sparse service (a few requests a minute) every model's error is mostly counting
    noise and above ``maxError``; handing over to nothing would size for the last minute's
    count with no margin at all, while the least inaccurate forecast gets the calibrated
    bound, which is exactly as wide as its recent errors were. ``maxError`` still decides
    the order: a stage under it always serves first.
    """
    gated = [(s.recent_error, i) for i, s in enumerate(stages)
             if s.reason in _ACCURACY_GATES and s.recent_error is not None
             and any(r.model == s.model for r in runs)]
    if not gated:
        return None
    error, index = min(gated)
    stage = stages[index]
    stages[index] = StageReport(
        stage.model, True, "ServedAboveMaxError",
        f"every stage that ran is above the accuracy limit; the least inaccurate serves "
        f"(recent error {error:.3g}): {stage.message}", error)
    k = next(k for k, run in enumerate(runs) if run.model == stage.model)
    runs[k] = StageRun(stage.model, runs[k].forecast, True)
    return runs[k]


class ForecastChain:
    """Forecasts with the first model of ``settings.models`` that passes every gate.

    ``clock`` (seconds, monotonic) enables the per-stage budget; ``lstm`` is a preloaded
    model used instead of loading ``settings.lstm_model``.
    """

    def __init__(self, settings: ForecastSettings, *, clock: Clock | None = None,
                 lstm: Forecaster | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._preloaded_lstm = lstm
        #: Per artifact path: its files' fingerprint when loaded, and the model or why not.
        self._loaded_lstm: dict[str, tuple[Hashable, Forecaster | Exception]] = {}
        #: Set by :meth:`_refresh_lstm` when it loads the artifact again for this forecast().
        self._reloaded: str | None = None
        self._digest: str | None = None
        self._forget = False
        self._models: dict[str, Forecaster] = {}
        self._fitted_at: dict[str, float] = {}

    def forecast(self, history: Series, horizon: int, *, now: float,
                 records: Records | None = None, track_due: bool = False,
                 least: int | None = None) -> ChainResult:
        """Forecast the ``horizon`` steps after ``history``; ``now`` drives refits.

        ``records`` are the stages' track records (the plan keeps them in its state): with
        enough scored origins they replace the re-forecast accuracy check and enable the
        relative gate. ``track_due``: this decision is one of the aligned origins at which
        every runnable stage forecasts (shadow runs), so track records can be compared.
        ``least``: the steps the caller cannot do without (the plan's window; the rest is
        its scale-up look-ahead). Every stage then forecasts fewer than ``horizon`` steps,
        but not fewer than ``least``, when the LSTM artifact was trained for fewer: the
        look-ahead is shortened rather than the LSTM skipped.
        """
        check_horizon(horizon)
        self._refresh_lstm()
        self._digest = self._lstm_digest()
        stored = records.artifacts.get("lstm") if records is not None else None
        self._forget = (self._reloaded is not None if stored is None or self._digest is None
                        else self._digest != stored)
        if self._forget and records is not None:
            # A new model is judged on its own record, not its predecessor's, after a
            # restart too (the digest is in the records): the caller forgets it as well
            # (ChainResult.forget_lstm). Identical files synced again are the same model.
            records = records.copy()
            records.forget("lstm")
        if least is not None:
            horizon = self._horizon(history, horizon, check_horizon(least))
        if len(history) == 0 or history.missing == len(history):
            what = "history is empty" if len(history) == 0 else \
                f"all {len(history)} samples of history are missing"
            untried = tuple(StageReport(m, False, "NotTried", f"not tried: {what}")
                            for m in self.settings.models)
            return ChainResult(None, None, untried, "NoData", f"no data: {what}",
                               reloaded=self._reloaded, forget_lstm=self._forget,
                               lstm_digest=self._digest)
        # A young workload's window starts before it existed: counted as history (filled
        # with its first value), ten real samples passed ARIMA's 60, its error was scored
        # on the filler, and one real day fitted daily terms.
        history = history.since_first_observed()
        note = ""
        if history.missing:
            note = (f"; interpolated {history.missing} missing of {len(history)} samples "
                    f"(longest gap {_longest_gap(history)})")
            history = history.filled()

        stages: list[StageReport] = []
        runs: list[StageRun] = []
        served: Forecast | None = None
        served_by: str | None = None
        models = self.settings.models
        widths: dict[str, float | None] = {}  # the relative gate's, computed once per call
        # Each stage runs at most once per forecast: a later one may run before its turn,
        # when an earlier one would hand over to it (the relative gate below).
        outcomes: dict[str, tuple[Forecast, str, float | None] | _Skip] = {}

        def outcome(name: ModelName) -> tuple[Forecast, str, float | None] | _Skip:
            if name not in outcomes:
                start = self._clock() if self._clock is not None else 0.0
                try:
                    outcomes[name] = self._run_stage(name, history, horizon, now, start,
                                                     records)
                except _Skip as skip:
                    outcomes[name] = skip
            return outcomes[name]

        for i, name in enumerate(models):
            if served is not None:
                ran = outcomes.get(name)
                if isinstance(ran, _Skip):  # run as a fallback before its turn, and failed
                    stages.append(StageReport(name, False, ran.reason,
                                              f"{ran.message} (run as a fallback; "
                                              f"{served_by} served)", ran.recent_error))
                    continue
                if isinstance(ran, tuple):  # ran to be compared with: its run is recorded
                    runs.append(StageRun(name, _served_forecast(ran[0]), False))
                elif track_due:
                    self._shadow(name, history, horizon, now, runs)
                stages.append(StageReport(name, False, "NotTried",
                                          f"not tried: {served_by} served"))
                continue
            ran = outcome(name)
            if isinstance(ran, _Skip):
                stages.append(StageReport(name, False, ran.reason, ran.message,
                                          ran.recent_error))
                if ran.forecast is not None:
                    runs.append(StageRun(name, _served_forecast(ran.forecast), False))
                continue
            fc, detail, error = ran
            # Handed over only to a stage that can serve at this decision: one that fails a
            # gate now is no fallback, whatever its record says (the moving average served
            # in place of a healthy LSTM while ARIMA's record was better and ARIMA failed).
            failed: set[str] = set()
            while True:
                later = [m for m in models[i + 1:] if m not in failed]
                better = _better_fallback(name, later, records, self.settings, widths)
                if better is None or not isinstance(outcome(better[0]), _Skip):
                    break
                failed.add(better[0])
            if better is not None:
                runs.append(StageRun(name, _served_forecast(fc), False))
                stages.append(StageReport(name, False, "WorseThanFallback", better[1], error))
                continue
            served, served_by = _served_forecast(fc), name
            runs.append(StageRun(name, served, True))
            stages.append(StageReport(name, True, "Served", detail, error))

        if served is None:
            fallback = _least_inaccurate(stages, runs)
            if fallback is not None:
                served, served_by = fallback.forecast, fallback.model
        # A later one that failed when run as a fallback is in its own report, not "after".
        skipped = ", ".join(f"{s.model}: {s.reason}" for s in before_served(stages)
                            if not s.served and s.reason != "NotTried")
        if served is None:
            return ChainResult(None, None, tuple(stages), "AllForecastersFailed",
                               f"no forecaster could serve ({skipped}){note}", tuple(runs),
                               self._reloaded, self._forget, self._digest)
        after = f" after {skipped}" if skipped else ""
        return ChainResult(served, served_by, tuple(stages), "Forecasted",
                           f"forecast by {served_by}{after}{note}", tuple(runs),
                           self._reloaded, self._forget, self._digest)

    def _shadow(self, name: ModelName, history: Series, horizon: int, now: float,
                runs: list[StageRun]) -> None:
        """Forecast with a stage that is not serving, only to keep its track record; its
        failures are not reported (the serving stage's outcome is what the status says)."""
        try:
            model, _ = self._prepare(name, history, horizon, now)
            fc = model.forecast(history, horizon, self.settings.confidence)
            _check_values(fc, history, horizon)
        except Exception:  # a shadow run must never affect the decision
            return
        runs.append(StageRun(name, _served_forecast(fc), False))

    def _horizon(self, history: Series, horizon: int, least: int) -> int:
        """``horizon``, or the LSTM artifact's trained horizon if that is shorter but at
        least ``least``. An artifact that cannot be loaded or used sets no limit: its stage
        reports why when it runs."""
        if least >= horizon or "lstm" not in self.settings.models:
            return horizon
        try:
            model = self._compatible_lstm(history, least)
        except Exception:  # the stage itself reports it
            return horizon
        if len(history) < model.min_history:  # it cannot serve now (HistoryTooShort)
            return horizon
        limit = getattr(model, "horizon", None)
        return horizon if limit is None else max(least, min(horizon, int(limit)))

    # -- one stage -----------------------------------------------------------------------

    def _run_stage(self, name: ModelName, history: Series, horizon: int, now: float,
                   start: float, records: Records | None = None,
                   ) -> tuple[Forecast, str, float | None]:
        """Prepare, forecast and gate one model; raises :class:`_Skip` when it cannot serve."""
        level = self.settings.confidence
        try:
            model, prepared = self._prepare(name, history, horizon, now)
            forecast = model.forecast(history, horizon, level)
            self._check_budget(start)
            # Inside: a forecast too odd to check is the model's failure too.
            _check_values(forecast, history, horizon)
        except _Skip:
            raise
        except ArtifactError as exc:
            raise _Skip(exc.reason, _one_line(exc)) from None
        except Exception as exc:
            # Broad on purpose: whatever a model raises, the next stage should get its turn.
            raise _Skip("ModelError", f"{type(exc).__name__}: {_one_line(exc)}") from None
        tracked, scored = (records.recent_error(name) if records is not None
                           else (None, 0))
        if tracked is not None and scored >= MIN_COMMON:
            error: float | None = tracked
            source = f"over its last {scored} scored forecasts"
        else:
            error = self._recent_error(model, history, horizon)
            source = f"at {CHECK_ORIGINS} recent origins"
        self._check_budget(start)
        if error is not None and not error <= self.settings.max_error:
            raise _Skip("AccuracyTooLow",
                        f"recent error (WAPE) {error:.3g} {source} is above the limit "
                        f"{self.settings.max_error:g}", error, forecast)
        checked = (f"recent error {error:.3g} {source} (limit {self.settings.max_error:g})"
                   if error is not None else
                   "recent error not checked: history too short for one origin")
        return forecast, f"{prepared}; {checked}", error

    def _prepare(self, name: ModelName, history: Series, horizon: int,
                 now: float) -> tuple[Forecaster, str]:
        """The stage's model, ready to forecast ``history``, and what was done to it."""
        if name == "lstm":
            model = self._compatible_lstm(history, horizon)
            self._require_history(model, history)
            if self._reloaded is not None:
                return model, "pretrained artifact, loaded again: its files changed"
            return model, "pretrained artifact"
        if name not in self._models:
            self._models[name] = registry.create(name, self.settings)
        model = self._models[name]
        self._require_history(model, history)
        if name == "arima":
            why = self._refit_reason(model, history, now)
            if why is None:
                return model, "no refit: new samples filtered into the fitted state"
            # Forget the old fit first: if the refit raises, the next call retries it.
            self._fitted_at.pop(name, None)
            model.fit(history)
            self._fitted_at[name] = now
            return model, f"refitted ({why})"
        # The moving average (and any other stateless model) has nothing to keep: its fit
        # is free, so fitting on the current history every call is the simple, exact path.
        model.fit(history)
        return model, "stateless"

    def _refresh_lstm(self) -> None:
        """Load the LSTM artifact again if its files changed since it was last loaded
        (retrained, replaced, or mounted later), once per forecast: every use of it in
        this forecast then sees the same model, or the same reason it has none.

        An artifact found missing, corrupt or mismatched is remembered too, so it is read
        once rather than at every decision, and a retrained one serves from the next
        decision on. Any other error (an import, memory) is not the files' fault: it is
        not remembered, and the next forecast tries again."""
        self._reloaded = None
        path = self.settings.lstm_model
        if self._preloaded_lstm is not None or path is None \
                or "lstm" not in self.settings.models:
            return
        stamp = registry.artifact_fingerprint(self.settings)
        known = self._loaded_lstm.get(path)
        if known is not None and known[0] == stamp:
            return
        try:
            model = registry.create("lstm", self.settings)
        except ArtifactError as exc:
            self._loaded_lstm[path] = (stamp, exc)
        except Exception as exc:
            # Without a fingerprint: it never matches, so the next forecast tries again.
            self._loaded_lstm[path] = (None, exc)
        else:
            if known is not None and known[0] is not None:  # other files than last time
                self._reloaded = path
            self._loaded_lstm[path] = (stamp, model)

    def _lstm_digest(self) -> str | None:
        """The loaded LSTM artifact's digest, if an LSTM is in the chain and loaded."""
        if "lstm" not in self.settings.models:
            return None
        try:
            model = self._lstm()
        except Exception:  # missing, corrupt: its stage reports it
            return None
        digest = getattr(model, "artifact_digest", None)
        return digest if isinstance(digest, str) else None

    def _lstm(self) -> Forecaster:
        """The LSTM as :meth:`_refresh_lstm` left it for this forecast."""
        if self._preloaded_lstm is not None:
            return self._preloaded_lstm
        path = self.settings.lstm_model
        if path is None:
            raise _Skip("ArtifactMissing",
                        "no LSTM model configured")
        loaded = self._loaded_lstm[path][1]
        if isinstance(loaded, Exception):
            # A fresh traceback each time: re-raising the same object would grow it.
            raise loaded.with_traceback(None)
        return loaded

    def _compatible_lstm(self, history: Series, steps: int) -> Forecaster:
        """The LSTM, checked to forecast ``steps`` after ``history`` (raises
        ``ArtifactMismatch`` otherwise)."""
        model = self._lstm()
        check = getattr(model, "check_compatible", None)
        if callable(check):
            check(history, steps)
        return model

    def _refit_reason(self, model: Forecaster, history: Series, now: float) -> str | None:
        fitted_at = self._fitted_at.get("arima")
        if fitted_at is None or not model.fitted:
            return "first fit"
        if now < fitted_at:  # the clock stepped back: how old the fit is, nobody knows
            return f"last fit {fitted_at - now:.0f}s after now"
        if now - fitted_at >= self.settings.arima_refit_seconds:
            return f"last fit {now - fitted_at:.0f}s ago"
        continues: Any = getattr(model, "continues", None)
        # Revised newest samples (late scrapes) are no reason: refitSeconds says "at most".
        if callable(continues) and not continues(history, revisable=REVISABLE_STEPS):
            return "history does not continue the fitted one"
        return None

    @staticmethod
    def _require_history(model: Forecaster, history: Series) -> None:
        if len(history) < model.min_history:
            raise _Skip("HistoryTooShort",
                        f"needs at least {model.min_history} samples of history, "
                        f"has {len(history)}")

    def _check_budget(self, start: float) -> None:
        if self._clock is None:
            return
        elapsed = self._clock() - start
        if elapsed > self.settings.stage_budget_seconds:
            raise _Skip("BudgetExceeded",
                        f"took {elapsed:.2f}s, budget {self.settings.stage_budget_seconds:g}s")

    def _recent_error(self, model: Forecaster, history: Series, horizon: int) -> float | None:
        """WAPE of forecasts from recent history prefixes (see the module docstring)."""
        n = len(history)
        origins = [n - k * horizon for k in range(1, CHECK_ORIGINS + 1)
                   if n - k * horizon >= model.min_history]
        if not origins:
            return None
        actual, predicted = [], []
        for origin in sorted(origins):
            try:
                fc = model.forecast(history.head(origin), horizon, self.settings.confidence)
            except Exception as exc:
                raise _Skip("ModelError", f"recent-error check: {type(exc).__name__}: "
                                          f"{_one_line(exc)}") from None
            actual.append(float(history.values[origin: origin + horizon].sum()))
            predicted.append(float(fc.mean.sum()))
        error = wape(np.asarray(actual), np.asarray(predicted))
        # NaN (a non-finite past forecast) must fail the gate, not slip through a comparison.
        return error if not math.isnan(error) else math.inf


def _better_fallback(name: str, later: Sequence[ModelName], records: Records | None,
                     settings: ForecastSettings, widths: dict[str, float | None]
                     ) -> tuple[ModelName, str] | None:
    """The later healthy stage ``name`` should hand over to and why, or None.

    A later stage is healthy when its own track record is within ``max_error``. ``name``
    hands over when, against any healthy later stage (the nearest first), one of three
    measures is more than ``relative_margin`` above that stage's:

    - its WAPE over the origins both forecast (the centre of its errors, weighted by the
      traffic, over the last :data:`~forescale.core.calibration.TRACK_LENGTH` aligned
      origins: a model that has gone wrong);
    - its median absolute error over the same origins (its typical miss: a model that is
      off most of the time while a few large misses of the other's keep their WAPEs close);
    - its bound width (:meth:`Records.width`: the upper tail of its errors, over about a
      day: a model whose bound would cost more capacity for the same coverage).

    The ratio furthest above the margin is the one reported. Measured (one run each): WAPE
    alone kept a LSTM that cost NASA's second fortnight 1.82 x the oracle on a 14-day crop
    (1.71 x with the width); comparing only with the next healthy stage, and without the
    median, left the World Cup tournament's chain 1.8 points under the moving average alone
    at "within 10 %" (87.6 against 89.4 %) while the LSTM, the worst of the three there,
    served 61 % of origins, because it was rarely clearly worse than ARIMA; with every later
    stage and the median, 89.0 %. Without enough common origins or scores (a young service,
    a fresh state) a measure is not applied. ``widths`` caches each stage's bound width
    across the comparisons of one forecast (the records do not change within it).
    """
    if records is None:
        return None
    limit = 1.0 + settings.relative_margin
    for other in later:
        own, scored = records.recent_error(other)
        if own is None or scored < MIN_COMMON or not own <= settings.max_error:
            continue
        worst = _worst_measure(name, other, records, settings.relative_margin, widths)
        if worst is not None and worst[0] > limit:
            return other, worst[1]
    return None


def _worst_measure(name: str, other: str, records: Records, margin: float,
                   widths: dict[str, float | None]) -> tuple[float, str] | None:
    """The measure on which ``name`` is furthest above ``other``: (ratio, message)."""
    above = f"more than {margin:.0%} above {other}'s"
    found: list[tuple[float, str]] = []
    compared = records.compare(name, other)
    if compared is not None:
        (mine, theirs), n = compared.wape, compared.origins
        found.append((mine / max(theirs, 1e-12),
                      f"recent error (WAPE) {mine:.3g} is {above} {theirs:.3g} over the {n} "
                      f"origins both forecast"))
        mine, theirs = compared.median
        found.append((mine / max(theirs, 1e-12),
                      f"median error of the level {mine:.3g} req/s is {above} {theirs:.3g} "
                      f"over the {n} origins both forecast"))
    for stage in (name, other):
        if stage not in widths:
            widths[stage] = records.width(stage)
    mine_width, their_width = widths[name], widths[other]
    if mine_width is not None and their_width is not None:
        mine, theirs = math.exp(mine_width), math.exp(their_width)
        found.append((mine / theirs,
                      f"its calibrated bound reaches x{mine:.3g} its median error, "
                      f"{above} x{theirs:.3g} (the {WIDTH_COVERAGE:.0%} quantile of "
                      f"each stage's scored steps)"))
    return max(found, key=lambda f: f[0]) if found else None


def _check_values(forecast: Forecast, history: Series, horizon: int) -> None:
    """The forecast in hand, whatever the stage's record: its shape, then its values."""
    shapes = sorted({np.shape(a) for a in (forecast.mean, forecast.lower, forecast.upper)})
    if any(len(shape) != 1 for shape in shapes):
        raise _Skip("ModelError", f"forecast is not one value per step: arrays of shape "
                                  f"{', '.join(map(str, shapes))}")
    lengths = {len(a) for a in (forecast.mean, forecast.lower, forecast.upper)}
    if lengths != {horizon} or forecast.horizon != horizon:
        raise _Skip("ModelError", f"forecast has {sorted(lengths)} steps where {horizon} "
                                  f"were asked for")
    if not (math.isclose(forecast.step_seconds, history.step_seconds)
            and math.isclose(forecast.start_seconds, history.end_seconds, rel_tol=0.0,
                             abs_tol=1e-6 * history.step_seconds)):
        raise _Skip("ModelError", f"forecast starts at {forecast.start_seconds:.0f}s with "
                                  f"{forecast.step_seconds:g}s steps, not after the history "
                                  f"({history.end_seconds:.0f}s, {history.step_seconds:g}s)")
    bad = sum(int((~np.isfinite(a)).sum()) for a in (forecast.mean, forecast.lower,
                                                       forecast.upper))
    if bad:
        raise _Skip("NonFiniteForecast",
                    f"forecast has {bad} non-finite values (mean, lower and upper)")
    lowest = float(forecast.mean.min())
    if lowest < -NEGATIVE_TOLERANCE:
        raise _Skip("NegativeForecast",
                    f"forecast mean goes down to {lowest:.3g} req/s "
                    f"(step {int(forecast.mean.argmin()) + 1} of {forecast.horizon})")
    seen = history.values[np.isfinite(history.values)]
    if seen.size:
        highest = float(seen.max())
        limit = (IMPLAUSIBLE_MULTIPLE * highest
                 + IMPLAUSIBLE_SLACK_REQUESTS / history.step_seconds)
        peak = float(forecast.mean.max())
        if peak > limit:
            raise _Skip("ImplausibleForecast",
                        f"forecast mean reaches {peak:.3g} req/s (step "
                        f"{int(forecast.mean.argmax()) + 1} of {forecast.horizon}), above "
                        f"{IMPLAUSIBLE_MULTIPLE:g}x the highest rate in the history "
                        f"({highest:.3g} req/s)")


def _served_forecast(fc: Forecast) -> Forecast:
    """The forecast as served: a rate interval within [0, inf) that contains its mean.

    A Gaussian interval of a non-negative rate can dip below 0; that says nothing about the
    model (the mean has passed the gate) and the plan must never see a negative rate.
    """
    mean = np.maximum(fc.mean, 0.0)
    lower = np.clip(fc.lower, 0.0, mean)
    upper = np.maximum(fc.upper, mean)
    return Forecast(fc.model, fc.start_seconds, fc.step_seconds, mean, lower, upper, fc.level)


def _longest_gap(history: Series) -> int:
    nan = np.concatenate(([0], np.isnan(history.values).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(nan))
    return int((edges[1::2] - edges[0::2]).max()) if edges.size else 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
