"""The scaling decision: ``plan(history, spec, state, now) -> Plan``, pure and deterministic.

The pipeline follows the HPA controller's, one small step at a time, each step returning its
result and the reason for it:

    metrics check → forecast (chain) → planned rate → size (Erlang C) → chaos buffer
      → stabilisation → cooldown → rate limits → min/max clamp

Unlike the HPA, the state that must survive a restart (recent recommendations, recent scale
events, last scale time) comes in and goes out as a plain structure — it lives in the
ScalingPolicy's status — and ``now`` is passed in, never read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from forescale.core.errors import InvalidInputError
from forescale.core.forecast.chain import ChainResult, ForecastChain
from forescale.core.guardrail import GuardrailReading, GuardrailResult
from forescale.core.guardrail import recommend as guardrail_recommend
from forescale.core.schedules import ScheduleEffect
from forescale.core.schedules import bound as schedule_bound
from forescale.core.schedules import effect as schedule_effect
from forescale.core.series import Series
from forescale.core.sizing import ChaosResult, SizingResult, chaos_buffer, size
from forescale.core.spec import PolicySpec, RateLimit

STATE_VERSION = 1


class Forecasting(Protocol):
    """What :func:`plan` needs of a chain (``ForecastChain`` or a test double)."""

    def forecast(self, history: Series, horizon: int, *, now: float) -> ChainResult: ...


@dataclass(frozen=True)
class PlanState:
    """What the plan remembers between decisions. Serialisable; lives in the status.

    ``recommendations``: (time, recommended replicas) within the scale-down stabilisation
    window. ``scale_events``: (time, change in replicas) within the longest rate-limit period.
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()
    last_scale_seconds: float | None = None

    @classmethod
    def initial(cls) -> PlanState:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "recommendations": [[t, n] for t, n in self.recommendations],
            "scaleEvents": [[t, d] for t, d in self.scale_events],
            "lastScaleSeconds": self.last_scale_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PlanState:
        """Rebuild from :meth:`to_dict`'s output; ``None`` or ``{}`` is the initial state."""
        if not data:
            return cls.initial()
        try:
            version = int(data.get("version", STATE_VERSION))
            if version != STATE_VERSION:
                raise InvalidInputError(f"plan state version {version} is not supported "
                                        f"(expected {STATE_VERSION})")
            recs = tuple((float(t), int(n)) for t, n in data.get("recommendations", []))
            events = tuple((float(t), int(d)) for t, d in data.get("scaleEvents", []))
            last = data.get("lastScaleSeconds")
            return cls(recs, events, None if last is None else float(last))
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"plan state is malformed: {exc}") from None


@dataclass(frozen=True)
class LimitApplied:
    """One behaviour rule that changed the recommendation: ``before`` → ``after``."""

    reason: str
    before: int
    after: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "before": self.before, "after": self.after,
                "message": self.message}


@dataclass(frozen=True)
class Plan:
    """The decision and everything that led to it."""

    desired_replicas: int
    current_replicas: int
    #: What sizing plus chaos buffer asked for before behaviour rules; None without metrics.
    recommended_replicas: int | None
    #: CamelCase, most important first: the outcome, then what shaped it.
    reasons: tuple[str, ...]
    message: str
    forecast: ChainResult | None
    #: The arrival rate sized for: the highest upper bound over the planning window.
    planned_arrival_rate: float | None
    window_start_seconds: float
    window_end_seconds: float
    sizing: SizingResult | None
    chaos: ChaosResult | None
    limits: tuple[LimitApplied, ...]
    #: False when metrics were missing/stale or every forecaster failed: the plan held.
    metrics_available: bool
    #: The memory to keep if ``desired_replicas`` was applied (the write happened).
    state: PlanState = field(default_factory=PlanState)
    #: What the declared events changed (None when the plan held).
    schedules: ScheduleEffect | None = None
    #: What the guardrail metrics asked for (None when the plan held).
    guardrail: GuardrailResult | None = None
    #: The memory to keep if it was not (Observe mode, a locked target, a failed write):
    #: the recommendation is remembered, no scale event is. None means the same as ``state``.
    held_state: PlanState | None = None

    def state_to_commit(self, *, applied: bool) -> PlanState:
        """The one rule for what the status remembers: a scale event only if it happened."""
        if applied or self.held_state is None:
            return self.state
        return self.held_state

    @property
    def direction(self) -> int:
        return (self.desired_replicas > self.current_replicas) - (
            self.desired_replicas < self.current_replicas)

    @property
    def served_by(self) -> str | None:
        return None if self.forecast is None else self.forecast.served_by

    def to_dict(self) -> dict[str, Any]:
        return {
            "desiredReplicas": self.desired_replicas,
            "currentReplicas": self.current_replicas,
            "recommendedReplicas": self.recommended_replicas,
            "reasons": list(self.reasons),
            "message": self.message,
            "plannedArrivalRate": self.planned_arrival_rate,
            "windowStartSeconds": self.window_start_seconds,
            "windowEndSeconds": self.window_end_seconds,
            "servedBy": self.served_by,
            "forecast": None if self.forecast is None else self.forecast.to_dict(),
            "sizing": None if self.sizing is None else self.sizing.to_dict(),
            "chaos": None if self.chaos is None else self.chaos.to_dict(),
            "limits": [lim.to_dict() for lim in self.limits],
            "metricsAvailable": self.metrics_available,
            "state": self.state.to_dict(),
        }


# --- the pipeline's steps ----------------------------------------------------------------


def metrics_problem(history: Series, spec: PolicySpec, now: float) -> tuple[str, str] | None:
    """Why the history cannot be trusted for a decision at ``now``, or None.

    Missing: no sample at all, or every sample of the last decision period is missing.
    Stale: the newest sample ended more than two decision periods (and three steps) ago —
    a stalled scrape or a Prometheus outage, not a quiet service.
    """
    if len(history) == 0 or np.isnan(history.values).all():
        return "MetricsMissing", "no arrival-rate samples in the history"
    recent = max(1, math.ceil(spec.decision_period_seconds / history.step_seconds))
    if np.isnan(history.values[-recent:]).all():
        return "MetricsMissing", f"the last {recent} arrival-rate samples are missing"
    age = now - history.end_seconds
    allowed = max(2 * spec.decision_period_seconds, 3 * history.step_seconds)
    if age > allowed:
        return "MetricsStale", (f"newest arrival-rate sample ended {age:.0f}s ago "
                                f"(more than {allowed:.0f}s)")
    return None


def planning_window(spec: PolicySpec, now: float) -> tuple[float, float]:
    """Pods asked for now serve from ``now + lead`` and must also carry the load until the
    next decision's pods are ready; pods removed now cannot come back before ``now + lead``.
    So the plan covers ``[now, now + lead time + decision period]``."""
    return now, now + spec.lead_time_seconds + spec.decision_period_seconds


def forecast_horizon(history: Series, window_end: float) -> int:
    """Steps from the end of the history to the end of the planning window (at least 1)."""
    return max(1, math.ceil((window_end - history.end_seconds) / history.step_seconds - 1e-9))


def planned_rate(result: ChainResult, window: tuple[float, float]) -> float:
    """The highest upper bound of the forecast over the steps that overlap the window."""
    fc = result.forecast
    assert fc is not None
    starts = fc.timestamps()
    ends = starts + fc.step_seconds
    overlap = (ends > window[0]) & (starts < window[1])
    if not overlap.any():  # window before the forecast: use its first step
        overlap[0] = True
    return float(np.max(fc.upper[overlap]))


def stabilise(raw: int, current: int, state: PlanState, spec: PolicySpec,
              now: float) -> tuple[int, LimitApplied | None]:
    """Scale-down stabilisation as the HPA does it: never go below the highest
    recommendation of the window (inclusive of this one); scale-ups are not delayed."""
    window = spec.behavior.scale_down_stabilization_seconds
    recent = [n for t, n in state.recommendations if now - t <= window]
    ceiling = max([raw, *recent])
    if raw > current:
        return raw, None
    result = min(ceiling, current)
    if result != raw:
        return result, LimitApplied(
            "ScaleDownStabilized", raw, result,
            f"holding {result} replicas: the highest recommendation of the last "
            f"{window:g}s")
    return result, None


def _period_start(current: int, state: PlanState, period: float, now: float) -> int:
    """Replicas at the start of a rate-limit period: undo the changes made within it."""
    changed = sum(d for t, d in state.scale_events if now - t < period)
    return current - changed


def _policy_limit(rule: RateLimit, start: int, up: bool) -> int:
    if rule.type == "Pods":
        return start + int(rule.value) if up else start - int(rule.value)
    factor = rule.value / 100.0
    # Rounding as the HPA controller does: up rounds up, down truncates.
    if up:
        return math.ceil(start * (1 + factor))
    return math.floor(start * (1 - factor))


def rate_limit(proposed: int, current: int, state: PlanState, spec: PolicySpec,
               now: float) -> tuple[int, LimitApplied | None]:
    """HPA behaviour policies with ``selectPolicy: Max`` (the most permissive rule wins)."""
    if proposed > current and spec.behavior.scale_up:
        limit = max(_policy_limit(r, _period_start(current, state, r.period_seconds, now), True)
                    for r in spec.behavior.scale_up)
        limit = max(limit, current)
        if proposed > limit:
            return limit, LimitApplied("ScaleUpLimited", proposed, limit,
                                       f"scale-up limited to {limit} replicas by the "
                                       f"scale-up rate policies")
    if proposed < current and spec.behavior.scale_down:
        limit = min(_policy_limit(r, _period_start(current, state, r.period_seconds, now), False)
                    for r in spec.behavior.scale_down)
        limit = min(limit, current)
        if proposed < limit:
            return limit, LimitApplied("ScaleDownLimited", proposed, limit,
                                       f"scale-down limited to {limit} replicas by the "
                                       f"scale-down rate policies")
    return proposed, None


def cooldown(proposed: int, current: int, state: PlanState, spec: PolicySpec,
             now: float) -> tuple[int, LimitApplied | None]:
    """No scale-down within the cooldown after a scale; scale-ups are never held back,
    because they protect the SLO."""
    cool = spec.behavior.cooldown_seconds
    last = state.last_scale_seconds
    if proposed < current and cool > 0 and last is not None and now - last < cool:
        return current, LimitApplied(
            "ScaleDownCooldown", proposed, current,
            f"last scale {now - last:.0f}s ago, cooldown is {cool:g}s")
    return proposed, None


def clamp(proposed: int, spec: PolicySpec) -> tuple[int, LimitApplied | None]:
    if proposed < spec.min_replicas:
        return spec.min_replicas, LimitApplied(
            "TooFewReplicas", proposed, spec.min_replicas,
            f"raised to minReplicas ({spec.min_replicas})")
    if proposed > spec.max_replicas:
        return spec.max_replicas, LimitApplied(
            "TooManyReplicas", proposed, spec.max_replicas,
            f"capped at maxReplicas ({spec.max_replicas})")
    return proposed, None


def _next_state(state: PlanState, spec: PolicySpec, now: float, recommendation: int | None,
                current: int, desired: int) -> PlanState:
    keep_recs = spec.behavior.scale_down_stabilization_seconds
    keep_events = max([r.period_seconds for r in (*spec.behavior.scale_up,
                                                  *spec.behavior.scale_down)], default=0.0)
    recs = [(t, n) for t, n in state.recommendations if now - t < keep_recs]
    if recommendation is not None:
        recs.append((now, recommendation))
    events = [(t, d) for t, d in state.scale_events if now - t < keep_events]
    last = state.last_scale_seconds
    if desired != current:
        events.append((now, desired - current))
        last = now
    return PlanState(tuple(recs), tuple(events), last)


# --- the plan ----------------------------------------------------------------------------


def plan(history: Series, spec: PolicySpec, state: PlanState, now: float, *,
         current_replicas: int, chain: Forecasting | None = None,
         guardrails: Sequence[GuardrailReading] = ()) -> Plan:
    """Decide the replicas for one policy at ``now``.

    ``history`` is the observed arrival rate (req/s) up to now; ``current_replicas`` the
    target's replicas as its ``/scale`` reports them (ready plus starting). ``chain`` keeps
    fitted models between calls (the operator and the backtest hold one per policy); without
    one a fresh chain is built, which gives the same answer, only slower.
    """
    if not (isinstance(current_replicas, int) and current_replicas >= 0):
        raise InvalidInputError(f"current replicas must be a non-negative integer, "
                                f"got {current_replicas!r}")
    if not math.isfinite(now):
        raise InvalidInputError(f"now must be a finite time, got {now!r}")
    chain = chain if chain is not None else ForecastChain(spec.forecast)
    window = planning_window(spec, now)
    limits: list[LimitApplied] = []

    problem = metrics_problem(history, spec, now)
    result: ChainResult | None = None
    if problem is None:
        result = chain.forecast(history, forecast_horizon(history, window[1]), now=now)
        if result.forecast is None:
            problem = (result.reason, result.message)

    if problem is not None:
        # Hold: never scale down on missing data. Only the user's bounds still apply.
        reason, message = problem
        desired, lim = clamp(current_replicas, spec)
        if lim:
            limits.append(lim)
        outcome = _outcome(desired, current_replicas)
        return Plan(
            desired_replicas=desired, current_replicas=current_replicas,
            recommended_replicas=None,
            reasons=(outcome, reason, "HoldingReplicas", *(lim.reason for lim in limits)),
            message=f"{message}; holding {desired} replicas", forecast=result,
            planned_arrival_rate=None, window_start_seconds=window[0],
            window_end_seconds=window[1], sizing=None, chaos=None, limits=tuple(limits),
            metrics_available=False,
            state=_next_state(state, spec, now, None, current_replicas, desired),
            held_state=_next_state(state, spec, now, None, current_replicas,
                                   current_replicas))

    assert result is not None
    rate = planned_rate(result, window)
    # Declared events (forescale.core.schedules): an active schedule's forecastMultiplier
    # scales the rate sized for, e.g. a launch the history has never seen.
    events = schedule_effect(spec.schedules, window)
    rate *= events.multiplier
    # Sized without the policy's maxReplicas, so that a binding max shows as TooManyReplicas
    # (the SLO is at risk) rather than disappearing inside the sizing.
    sizing = size(rate, spec.service_rate_per_replica, spec.slo, spec.costs)
    chaos = chaos_buffer(sizing.replicas, rate, spec.service_rate_per_replica, spec.slo,
                         spec.chaos)
    recommended = sizing.replicas + chaos.extra_replicas

    # Guardrails (forescale.core.guardrail): extra metrics can only raise the
    # recommendation, HPA-style max-of; stabilisation and rate limits then apply to it.
    guard = guardrail_recommend(guardrails, current_replicas)
    if guard.replicas is not None and guard.replicas > recommended:
        limits.append(LimitApplied("GuardrailRaised", recommended, guard.replicas,
                                   guard.message))
        recommended = guard.replicas

    proposed, lim = stabilise(recommended, current_replicas, state, spec, now)
    limits += [lim] if lim else []
    for step in (cooldown, rate_limit):
        proposed, lim = step(proposed, current_replicas, state, spec, now)
        limits += [lim] if lim else []
    # Declared events: an active floor (ceiling) bounds the proposal like a temporary
    # minReplicas (maxReplicas), after the rate limits, so the event gets its capacity.
    scheduled, event_reason, event_note = schedule_bound(proposed, events)
    if event_reason is not None:
        limits.append(LimitApplied(event_reason, proposed, scheduled, event_note))
    proposed = scheduled
    desired, lim = clamp(proposed, spec)
    limits += [lim] if lim else []

    outcome = _outcome(desired, current_replicas)
    reasons = [outcome, sizing.reason]
    if chaos.extra_replicas:
        reasons.append(chaos.reason)
    reasons += [lim.reason for lim in limits]
    served = result.served_by or "none"
    message = (f"{outcome}: {current_replicas} -> {desired} replicas for "
               f"{rate:.3g} req/s (upper {spec.forecast.confidence:.0%} bound, "
               f"forecast by {served})")
    return Plan(
        desired_replicas=desired, current_replicas=current_replicas,
        recommended_replicas=recommended, reasons=tuple(reasons), message=message,
        forecast=result, planned_arrival_rate=rate, window_start_seconds=window[0],
        window_end_seconds=window[1], sizing=sizing, chaos=chaos, limits=tuple(limits),
        metrics_available=True, schedules=events, guardrail=guard,
        state=_next_state(state, spec, now, recommended, current_replicas, desired),
        held_state=_next_state(state, spec, now, recommended, current_replicas,
                               current_replicas))


def _outcome(desired: int, current: int) -> str:
    if desired > current:
        return "ScaleUp"
    if desired < current:
        return "ScaleDown"
    return "NoChange"
