"""forescale in the backtest: the operator's own :func:`~forescale.core.plan.plan`, nothing
re-implemented, fed only what the operator would have seen at each decision.

* History: the observed (rescaled) rates of the finished steps — ``history.until(now)``,
  built from the observation's read-only view, so nothing later can leak in — cut to the
  last ``forecast.historySeconds``, the window the operator reads from Prometheus.
* One :class:`~forescale.core.forecast.chain.ForecastChain` for the whole replay, as the
  operator keeps one per policy (it caches fitted models and refits ARIMA on schedule).
* The LSTM stage is trained once, before the first decision, on the history up to that
  decision only (inside the warm-up), so it cannot have seen any scored step. A pre-trained
  artifact named by a policy file is deliberately not used: it may have been trained on the
  very trace being replayed.
* ``current_replicas`` is ready plus starting, what ``/scale`` reports.
* The chain gets no clock, so its per-stage wall-clock budget is off: a replay's decisions
  must not depend on how busy the machine was (the operator injects one).

Speed: the chain's accuracy gate forecasts again from the three most recent origins at
every decision, so each history end is forecast by the LSTM up to four times over a
replay. :class:`WindowMemo` remembers those forecasts; it returns exactly what the model
would (the LSTM reads only its last ``window`` samples, which are part of the key), so the
decisions are the same, only cheaper (a unit test compares them).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from forescale.backtest.world import (
    Observation,
    World,
    check_policy_world,
    world_policy_spec,
)
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecast, Forecaster
from forescale.core.forecast.chain import ForecastChain
from forescale.core.plan import PlanState, plan
from forescale.core.series import FloatArray, Series
from forescale.core.spec import PolicySpec
from forescale.core.window import history_steps

TrainingProgress = Callable[[int, int], None]


class WindowMemo(Forecaster):
    """A fitted window model (one whose forecast depends only on the last ``window`` samples
    and their times) with its recent forecasts remembered.

    The key is the window's end time, its values, the horizon and the level: everything
    the forecast depends on, so a hit is the forecast the model would make.
    """

    def __init__(self, model: Forecaster, *, window: int, size: int = 256) -> None:
        super().__init__()
        self.model = model
        self.name = model.name
        self.window = window
        self._size = size
        self._memo: OrderedDict[tuple[float, bytes, int, float], Forecast] = OrderedDict()
        self._fitted = True
        self.hits = 0
        self.misses = 0

    @property
    def min_history(self) -> int:
        return self.model.min_history

    @property
    def horizon(self) -> int | None:
        """The wrapped model's longest forecast, if it has one (an LSTM's trained
        horizon)."""
        return getattr(self.model, "horizon", None)

    def check_compatible(self, history: Series, horizon: int) -> None:
        check = getattr(self.model, "check_compatible", None)
        if callable(check):
            check(history, horizon)

    def forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        key = (history.end_seconds, history.values[-self.window:].tobytes(), horizon, level)
        found = self._memo.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        found = self.model.forecast(history, horizon, level)  # errors are not remembered
        self._memo[key] = found
        if len(self._memo) > self._size:
            self._memo.popitem(last=False)
        return found

    def _fit(self, history: Series) -> None:
        raise NotImplementedError("WindowMemo wraps a fitted model; fit the model itself")

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        raise AssertionError("unreachable: forecast() is overridden")


class ForescalePolicy:
    name = "forescale"

    def __init__(self, spec: PolicySpec, *, world: World, chain: ForecastChain,
                 uses_torch: bool = False) -> None:
        self.spec = spec
        self.chain = chain
        self.uses_torch = uses_torch
        self.state = PlanState.initial()
        self._start = world.start_seconds
        self._step = world.step_seconds
        self._lead = world.startup_steps
        self._history_steps = history_steps(spec.forecast.history_seconds, world.step_seconds)
        n = len(world)
        # The forecast each decision made for the step its new pods become ready in,
        # indexed by that step (for the plot), and what it provisioned for.
        self.forecast_mean: FloatArray = np.full(n, np.nan)
        self.forecast_lower: FloatArray = np.full(n, np.nan)
        self.forecast_upper: FloatArray = np.full(n, np.nan)
        self.planned_rate: FloatArray = np.full(n, np.nan)
        #: The calibrated bound of the intensity for that step (NaN: not calibrated yet),
        #: to compare with the scoring rate: nominal against empirical coverage.
        self.bound_upper: FloatArray = np.full(n, np.nan)
        self.coverage_nominal = 1.0 - spec.slo.violation_budget
        self._world = world
        self.rate_sources: Counter[str] = Counter()
        self.served_by: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def decide(self, observation: Observation) -> int:
        seen = observation.observed
        first = max(len(seen) - self._history_steps, 0)
        history = Series(self._start + first * self._step, self._step, seen[first:])
        decision = plan(history, self.spec, self.state, observation.now_seconds,
                        current_replicas=observation.current, chain=self.chain)
        # The simulated world applies every decision: the core's rule for what to remember.
        self.state = decision.state_to_commit(applied=True)
        self.reasons.update(decision.reasons)
        self.served_by[decision.served_by or "none"] += 1
        t = observation.step
        if decision.planned_arrival_rate is not None:
            self.planned_rate[t] = decision.planned_arrival_rate
        fc = decision.forecast.forecast if decision.forecast is not None else None
        target = t + self._lead
        if fc is not None and self._lead < fc.horizon and target < self.forecast_mean.size:
            self.forecast_mean[target] = fc.mean[self._lead]
            self.forecast_lower[target] = fc.lower[self._lead]
            self.forecast_upper[target] = fc.upper[self._lead]
            if decision.bound_calibrated and decision.bound_upper is not None:
                self.bound_upper[target] = decision.bound_upper[self._lead]
        if decision.rate_source is not None:
            self.rate_sources[decision.rate_source.reason] += 1
        return decision.desired_replicas

    @contextlib.contextmanager
    def replay_scope(self) -> Iterator[None]:
        """Run the replay with one torch thread when the LSTM is in the chain.

        Each decision runs one batch-1 forward pass of a small LSTM; splitting that over
        threads only adds synchronisation, and on a busy 2-core machine it measured 0.5 ms
        on one thread against 14 ms on two. Restored afterwards.
        """
        if not self.uses_torch:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def coverage(self) -> tuple[float, float | None, int]:
        """Nominal and empirical coverage of the calibrated bound, over the scored steps it
        was calibrated for: the share where the scoring rate λ* stayed within it."""
        mask = ~np.isnan(self.bound_upper) & self._world.scored
        n = int(mask.sum())
        if n == 0:
            return self.coverage_nominal, None, 0
        within = self._world.underlying[mask] <= self.bound_upper[mask] * (1 + 1e-9)
        return self.coverage_nominal, float(within.mean()), n

    def details(self) -> dict[str, object]:
        nominal, empirical, n = self.coverage()
        return {"served_by": dict(self.served_by.most_common()),
                "rate_sources": dict(self.rate_sources.most_common()),
                "coverage": {"nominal": nominal, "empirical": empirical, "steps": n},
                "reasons": dict(self.reasons.most_common())}


def train_warmup_lstm(world: World, *, epochs: int,
                      progress: TrainingProgress | None = None) -> Forecaster:
    """The LSTM trained on the history before the first decision, seed 0."""
    from forescale.core.forecast.lstm import EpochProgress, train_lstm

    history = Series(world.start_seconds, world.step_seconds,
                     world.observed[:world.first_step])

    def report(p: EpochProgress) -> None:
        if progress is not None:
            progress(p.epoch, p.epochs)

    return train_lstm(history, epochs=epochs, seed=0, progress=report)


def build_forescale_policy(world: World, spec: PolicySpec | None = None, *,
                           lstm_epochs: int = 3,
                           progress: TrainingProgress | None = None, memo: bool = True,
                           ) -> tuple[ForescalePolicy, float]:
    """The policy, and the wall seconds spent training its LSTM (0 without one)."""
    spec = spec or world_policy_spec(world.params, world.step_seconds)
    check_policy_world(spec, world.params)
    if not math.isclose(spec.decision_period_seconds, world.step_seconds):
        # The world decides once per step; a policy that expects another cadence would be
        # judged on a schedule it was not written for.
        raise InvalidInputError(
            f"the policy's decisionPeriodSeconds ({spec.decision_period_seconds:g}) must "
            f"equal the trace step ({world.step_seconds:g}s) in a backtest")
    lstm: Forecaster | None = None
    training_seconds = 0.0
    if "lstm" in spec.forecast.models and lstm_epochs > 0:
        began = time.perf_counter()
        trained = train_warmup_lstm(world, epochs=lstm_epochs, progress=progress)
        training_seconds = time.perf_counter() - began
        lstm = WindowMemo(trained, window=trained.min_history) if memo else trained
    settings = spec.forecast
    if lstm is None and "lstm" in settings.models:
        # Without a trained model the stage could only fail on every decision; say so once
        # by leaving it out.
        settings = replace(settings, models=tuple(m for m in settings.models if m != "lstm"))
        if not settings.models:
            raise InvalidInputError("the policy forecasts with the LSTM only, and "
                                    "--lstm-epochs 0 trains none")
        spec = replace(spec, forecast=settings)
    chain = ForecastChain(settings, lstm=lstm)
    policy = ForescalePolicy(spec, world=world, chain=chain, uses_torch=lstm is not None)
    return policy, training_seconds
