"""The scaling decision: ``plan(history, spec, state, now) -> Plan``, pure and deterministic.

The pipeline follows the HPA controller's, one small step at a time, each step returning its
result and the reason for it:

    metrics check → score past forecasts → forecast (chain, with its relative gate)
      → planned rate = max(calibrated bound of the intensity, reactive floor, recurring peak)
      → size (Erlang C) → chaos buffer → on a scale-up, the same for the bound over the
        look-ahead periods → guardrails → stabilisation (+ tolerance)
      → cooldown → rate limits → schedules → min/max clamp

Robust by construction, not tuned per trace:

* **Reactive floor** — never size below what the rate observed in the last decision period
  needs: a burst already in the metrics is met one decision later whatever a model says
  (``ReactiveFloor``), and when every forecaster fails the plan sizes for the observed rate
  instead of holding.
* **Calibrated bound of the intensity** — the margin over the forecast comes from the plan's
  own recent out-of-sample errors (weighted split conformal, per horizon step and regime;
  :mod:`forescale.core.calibration`), at coverage ``1 − slo.violationBudget``, for the rate
  averaged over ``forecast.intensitySeconds`` — not for each minute's Poisson noise, which
  Erlang C already models.
* **Recurring peaks** — a rise seen at this clock time on most of the last days is
  provisioned for one lead time ahead (``RecurringPeak``; :mod:`forescale.core.calendar`).
* **Scale-up look-ahead** — a scale-up is sized for the bound's highest over the window and
  ``behavior.scaleUp.lookaheadPeriods`` more decision periods (``ScaleUpLookahead``), so a
  rise that goes on is met in one step, not one a period.
* **Forecast-driven scale-down** — the plan sizes for the highest bound over the whole window
  in which removed pods could not come back, so it scales down as soon as that allows,
  except by less than the scale-down tolerance; the HPA's fixed window stays an option.

Unlike the HPA, the state that must survive a restart (recent recommendations, recent scale
events, last scale time, the forecasts' track records and calibration) comes in and goes
out as a plain structure — it lives in the ScalingPolicy's status — and ``now`` is passed
in, never read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from forescale.core.calendar import RecurringPeak, recurring_peak
from forescale.core.calibration import Records, collapsed, day_level, intensity_steps
from forescale.core.checks import MAX_TIMESTAMP, MIN_TIMESTAMP, finite, is_integer, is_number
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.chain import ChainResult, ForecastChain
from forescale.core.guardrail import GuardrailReading, GuardrailResult
from forescale.core.guardrail import recommend as guardrail_recommend
from forescale.core.schedules import ScheduleEffect, time_zone
from forescale.core.schedules import bound as schedule_bound
from forescale.core.schedules import effect as schedule_effect
from forescale.core.series import Series
from forescale.core.sizing import ChaosResult, SizingResult, chaos_buffer, size
from forescale.core.spec import SLO, PolicySpec, RateLimit

STATE_VERSION = 2
#: The most changes in replicas a state keeps (the newest): a lead time of hours and a
#: change every few seconds would otherwise outgrow the status and the Lease's scale intent.
MAX_CHANGES = 1000
#: Track records are kept at aligned origins this many decision periods apart, where every
#: runnable stage forecasts (a shadow run for those not serving), so they can be compared.
TRACK_PERIODS = 5


class Forecasting(Protocol):
    """What :func:`plan` needs of a chain (``ForecastChain`` or a test double)."""

    def forecast(self, history: Series, horizon: int, *, now: float,
                 records: Records | None = None, track_due: bool = False,
                 least: int | None = None) -> ChainResult: ...


@dataclass(frozen=True)
class PlanState:
    """What the plan remembers between decisions. Serialisable; lives in the status.

    ``recommendations``: (time, recommended replicas) within the scale-down stabilisation
    window. ``scale_events``: (time, change in replicas) within the longest rate-limit span.
    ``replicas``: what the last decision left the target at (written, or found and kept):
    when ``/scale`` then reports another count, someone else scaled the target, and the
    changes in ``scale_events`` no longer lead to the current count (None: not known, a
    state written before it was kept). ``changes``: (time, change in replicas) of every
    change within the last lead time, ours, a pin's or anyone's: a scale-up's pods serve
    only a lead time later (see :func:`serving_replicas`).
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()
    last_scale_seconds: float | None = None
    #: What the plan learnt from its own forecasts: track records and calibration. Treated
    #: as immutable: the plan changes a copy.
    records: Records = field(default_factory=Records, compare=False)
    replicas: int | None = None
    changes: tuple[tuple[float, int], ...] = ()

    @classmethod
    def initial(cls) -> PlanState:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "recommendations": [[t, n] for t, n in self.recommendations],
            "scaleEvents": [[t, d] for t, d in self.scale_events],
            "lastScaleSeconds": self.last_scale_seconds,
            "replicas": self.replicas,
            "changes": [[t, d] for t, d in self.changes],
            "forecasts": self.records.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PlanState:
        """Rebuild from :meth:`to_dict`'s output; ``None`` or ``{}`` is the initial state."""
        if not data:
            return cls.initial()
        try:
            version = int(data.get("version", STATE_VERSION))
            if version not in (1, STATE_VERSION):
                raise InvalidInputError(f"plan state version {version} is not supported "
                                        f"(expected {STATE_VERSION})")
            recs = tuple((finite(t), int(n)) for t, n in data.get("recommendations", []))
            events = tuple((finite(t), int(d)) for t, d in data.get("scaleEvents", []))
            last = data.get("lastScaleSeconds")
            # Version 1 had no forecast records: they start empty and are learnt again.
            records = Records.from_dict(data.get("forecasts")) if version > 1 else Records()
            replicas = data.get("replicas")  # absent in states written before it was kept
            if replicas is not None and not (is_integer(replicas) and replicas >= 0):
                raise ValueError(f"replicas {replicas!r} is not a non-negative integer")
            # Absent in states written before it was kept.
            changes = tuple((finite(t), _count_change(d)) for t, d in data.get("changes", []))
            return cls(recs, events, None if last is None else finite(last), records,
                       replicas, changes)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            # OverflowError: int() of a number JSON reads as infinite (1e999).
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
    #: What sizing plus chaos buffer (and guardrails) asked for before behaviour rules; None
    #: without metrics, unless a guardrail asked for more than the current replicas.
    recommended_replicas: int | None
    #: CamelCase, most important first: the outcome, then what shaped it.
    reasons: tuple[str, ...]
    message: str
    forecast: ChainResult | None
    #: The arrival rate sized for: the highest of the forecast's upper bound over the
    #: planning window, the reactive floor and a recurring peak.
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
    #: Which of the candidate rates set ``planned_arrival_rate`` (see :func:`planned_rate`).
    rate_source: RateSource | None = None
    #: The calibrated bound's note (whether it is calibrated yet, and how wide).
    bound_message: str = ""
    #: The upper bound of the intensity at every forecast step, and whether it was
    #: calibrated (False: the model's own interval, too little scored history yet).
    bound_upper: tuple[float, ...] | None = None
    bound_calibrated: bool = False

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
            "rateSource": None if self.rate_source is None else self.rate_source.to_dict(),
            "boundMessage": self.bound_message,
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


def lookahead_window(spec: PolicySpec, window: tuple[float, float]) -> tuple[float, float]:
    """The planning window and ``behavior.scaleUp.lookaheadPeriods`` more decision periods:
    what a scale-up is sized for (see :func:`lookahead`)."""
    ahead = spec.behavior.scale_up_lookahead_periods * spec.decision_period_seconds
    return window[0], window[1] + ahead


def forecast_horizon(history: Series, window_end: float) -> int:
    """Steps from the end of the history to the end of the planning window (at least 1)."""
    return max(1, math.ceil((window_end - history.end_seconds) / history.step_seconds - 1e-9))


@dataclass(frozen=True)
class RateSource:
    """Which candidate set the planned rate: ``ForecastBound`` (the calibrated upper bound
    of the forecast intensity), ``ReactiveFloor`` (the rate observed in the last decision
    period), ``RecurringPeak`` (a rise seen at this clock time on most recent days) or, on a
    scale-up, ``ScaleUpLookahead`` (the bound further ahead, see :func:`lookahead`)."""

    reason: str
    rate: float
    message: str
    #: Every candidate's rate (req/s), for the status.
    candidates: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "rate": self.rate, "message": self.message,
                "candidates": {k: round(v, 6) for k, v in self.candidates.items()}}


def window_steps(fc_start: float, step: float, horizon: int,
                 window: tuple[float, float]) -> npt.NDArray[np.bool_]:
    """The forecast steps that overlap the planning window (at least the first)."""
    starts = fc_start + step * np.arange(horizon, dtype=np.float64)
    overlap = (starts + step > window[0]) & (starts < window[1])
    if not overlap.any():  # window before the forecast: use its first step
        overlap[0] = True
    return overlap


def reactive_floor(history: Series, spec: PolicySpec) -> float | None:
    """The mean rate observed over the last decision period: what a burst already in the
    metrics needs, whatever a model predicts (the HPA at its best reacts to it too)."""
    recent = max(1, math.ceil(spec.decision_period_seconds / history.step_seconds - 1e-9))
    values = history.values[-recent:]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def planned_rate(bound: tuple[float, str] | None, floor: float,
                 peak: tuple[float, str] | None) -> RateSource:
    """The highest of the candidates, each a (rate, message), and which one it was (a tie
    goes to the forecast, then to the floor). Without a bound every forecaster failed: the
    plan sizes for what is seen (and a recurring peak), as a reactive autoscaler would,
    rather than hold."""
    candidates: dict[str, float] = {}
    messages: dict[str, str] = {}
    if bound is not None:
        candidates["ForecastBound"], messages["ForecastBound"] = bound
        messages["ReactiveFloor"] = (f"the rate observed in the last decision period "
                                     f"({floor:.4g} req/s) is above the forecast's bound")
    else:
        messages["ReactiveFloor"] = (f"no forecaster could serve: sized for the observed "
                                     f"{floor:.4g} req/s")
    candidates["ReactiveFloor"] = floor
    if peak is not None:
        candidates["RecurringPeak"] = peak[0]
        messages["RecurringPeak"] = peak[1]
    reason = max(candidates, key=lambda k: (candidates[k], k == "ForecastBound"))
    return RateSource(reason, candidates[reason], messages[reason], candidates)


def lookahead(source: RateSource, ahead: float | None, message: str) -> RateSource | None:
    """On a scale-up, the rate to size for instead: the bound's highest over the look-ahead
    window (``ahead``), when it is above the planned rate. Traffic that goes on rising is
    then met in one step rather than a step every period, each a scaling action; the pods
    asked for early cost a few minutes each. Never on the way down or when holding, so a
    rise further out than the planning window never keeps pods that are not needed yet."""
    if ahead is None or ahead <= source.rate:
        return None
    return RateSource("ScaleUpLookahead", ahead,
                      f"scaling up for the bound's highest over the next periods "
                      f"({ahead:.4g} req/s; {message})",
                      {**source.candidates, "ScaleUpLookahead": ahead})


def stabilise(raw: int, current: int, state: PlanState, spec: PolicySpec,
              now: float) -> tuple[int, LimitApplied | None]:
    """Scale-down stabilisation as the HPA does it: never go below the highest
    recommendation of the window (inclusive of this one); scale-ups are not delayed. Then
    the scale-down tolerance: a reduction smaller than that share of the current replicas
    is not made. A scale-up adds at least the minimum step's share of the current
    replicas."""
    if raw > current:
        step = spec.behavior.scale_up_min_step
        least = math.ceil(current * (1.0 + step) - 1e-9)
        if least > raw:
            return least, LimitApplied(
                "ScaleUpMinStep", raw, least,
                f"scaling up by at least {step:.0%} of {current} replicas: {least}")
        return raw, None
    if raw == current:
        return raw, None
    window = spec.behavior.scale_down_stabilization_seconds
    recent = [n for t, n in state.recommendations if now - t <= window]
    result = min(max([raw, *recent]), current)
    tolerance = spec.behavior.scale_down_tolerance
    if result < current and current - result < tolerance * current:
        # Also when the window's highest recommendation is what sets the result: as the
        # window slides over a falling recommendation it would otherwise shave a pod or
        # two off every period, each one a scaling action.
        return current, LimitApplied(
            "ScaleDownTolerance", result, current,
            f"holding {current} replicas: {result} is within the scale-down tolerance "
            f"({tolerance:.0%})")
    if result != raw:
        return result, LimitApplied(
            "ScaleDownStabilized", raw, result,
            f"holding {result} replicas: the highest recommendation of the last "
            f"{window:g}s")
    return result, None


def _count_change(value: object) -> int:
    if not is_integer(value):
        raise ValueError(f"a change in replicas must be a whole number, got {value!r}")
    return int(value)


def _as_of(state: PlanState, now: float) -> PlanState:
    """``state`` with every time after ``now`` taken as ``now``: a state written by a clock
    that ran ahead (an NTP step back, a replica whose clock was fast) would otherwise hold
    its recommendations, rate-limit events and cooldown for as long as the clocks differ,
    where the window asked for at most its own length from now."""
    if not any(t > now for t, _ in (*state.recommendations, *state.scale_events,
                                     *state.changes)) and not (
            state.last_scale_seconds is not None and state.last_scale_seconds > now):
        return state
    last = state.last_scale_seconds
    return replace(state,
                   recommendations=tuple((min(t, now), n) for t, n in state.recommendations),
                   scale_events=tuple((min(t, now), d) for t, d in state.scale_events),
                   last_scale_seconds=None if last is None else min(last, now),
                   changes=tuple((min(t, now), d) for t, d in state.changes))


def _period_start(current: int, state: PlanState, rule: RateLimit, spec: PolicySpec,
                  now: float, up: bool) -> int:
    """Replicas at the start of a rule's period: undo the changes made within it, in both
    directions as the HPA does, and those in the limit's own direction over the whole span
    its allowance covers (:func:`_span`). Undone over the span, a scale-up 400 s earlier
    would have raised a scale-down's allowance by as much (58 → 20 where 48 was allowed)."""
    span = _span(rule, spec)
    changed = sum(d for t, d in state.scale_events
                  if now - t < rule.period_seconds or (now - t < span and (d > 0) == up))
    return current - changed


def _span(rule: RateLimit, spec: PolicySpec) -> float:
    """The seconds one decision's allowance (:func:`_periods` of the rule's periods) covers,
    whose changes count against it. One period when a decision gets one; else the periods
    less half of one, so that a decision a little early on its cadence still gets its own
    allowance, while one early by more (a retry, a restart, a Lease handover) no longer
    gets the whole allowance again (with 1 pod per 60 s and a 600 s decision period,
    decisions 61 s apart each removed 10 pods)."""
    periods = _periods(rule, spec)
    return rule.period_seconds * (periods - 0.5 if periods > 1 else 1)


def _policy_limit(rule: RateLimit, start: int, up: bool, periods: int, enough: int) -> int:
    """The limit after ``periods`` of the rule's periods (the HPA re-evaluates every 15 s,
    so over one 60 s decision period a "100 % per 15 s" rule allows 2**4 = 16x)."""
    if rule.type == "Pods":
        change = int(rule.value) * periods
        return start + change if up else start - change
    factor = rule.value / 100.0
    # Rounding as the HPA controller does at each of its loops: up rounds up, down
    # truncates (rounded once after compounding, 10 % per 15 s from 10 replicas allowed 15
    # over a minute where the HPA's four loops allow 17).
    # ``enough``: the proposal; past it the limit no longer binds (and cannot overflow).
    limit = start
    for _ in range(periods):
        following = math.ceil(limit * (1 + factor)) if up else \
            math.floor(limit * max(1 - factor, 0.0))
        if following == limit:
            break
        limit = following
        if (limit >= enough) if up else (limit <= enough):
            break
    return limit


def _periods(rule: RateLimit, spec: PolicySpec) -> int:
    """Whole rule periods in one decision period (at least one)."""
    return max(1, math.floor(spec.decision_period_seconds / rule.period_seconds + 1e-9))


def rate_limit(proposed: int, current: int, state: PlanState, spec: PolicySpec,
               now: float) -> tuple[int, LimitApplied | None]:
    """HPA behaviour policies with ``selectPolicy: Max`` (the most permissive rule wins)."""
    if proposed > current and spec.behavior.scale_up:
        limit = max(_policy_limit(r, _period_start(current, state, r, spec, now, True),
                                  True, _periods(r, spec), proposed)
                    for r in spec.behavior.scale_up)
        limit = max(limit, current)
        if proposed > limit:
            return limit, LimitApplied("ScaleUpLimited", proposed, limit,
                                       f"scale-up limited to {limit} replicas by the "
                                       f"scale-up rate policies")
    if proposed < current and spec.behavior.scale_down:
        limit = min(_policy_limit(r, _period_start(current, state, r, spec, now, False),
                                  False, _periods(r, spec), proposed)
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


def _limited(proposed: int, current: int, state: PlanState, spec: PolicySpec, now: float,
             events: ScheduleEffect, limits: list[LimitApplied]) -> int:
    """``proposed`` after the cooldown and the rate limits, then within the bounds (see
    :func:`_bounded`); the limits that applied are appended to ``limits``."""
    for step in (cooldown, rate_limit):
        proposed, lim = step(proposed, current, state, spec, now)
        limits += [lim] if lim else []
    desired, bounded = _bounded(proposed, events, spec)
    limits += bounded
    return desired


def _bounded(proposed: int, events: ScheduleEffect,
             spec: PolicySpec) -> tuple[int, list[LimitApplied]]:
    """``proposed`` within an active declared event's floor or ceiling, which bounds it like
    a temporary minReplicas (maxReplicas), then within min/max; the limits that applied.
    Last of the pipeline (after the rate limits, so an event gets its capacity), and on the
    hold path too."""
    limits = []
    scheduled, event_reason, event_note = schedule_bound(proposed, events)
    if event_reason is not None:
        limits.append(LimitApplied(event_reason, proposed, scheduled, event_note))
    desired, lim = clamp(scheduled, spec)
    return desired, limits + ([lim] if lim else [])


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
                current: int, desired: int, records: Records) -> PlanState:
    keep_recs = spec.behavior.scale_down_stabilization_seconds
    keep_events = max([_span(r, spec) for r in (*spec.behavior.scale_up,
                                                *spec.behavior.scale_down)], default=0.0)
    recs = [(t, n) for t, n in state.recommendations if now - t < keep_recs]
    if recommendation is not None:
        recs.append((now, recommendation))
    events = [(t, d) for t, d in state.scale_events if now - t < keep_events]
    last = state.last_scale_seconds
    if desired != current:
        events.append((now, desired - current))
        last = now
    return PlanState(tuple(recs), tuple(events), last, records, desired,
                     changed(state, spec, now, current, desired))


# --- the plan ----------------------------------------------------------------------------


def plan(history: Series, spec: PolicySpec, state: PlanState, now: float, *,
         current_replicas: int, chain: Forecasting | None = None,
         guardrails: Sequence[GuardrailReading] = ()) -> Plan:
    """Decide the replicas for one policy at ``now``.

    ``history`` is the observed arrival rate (req/s) up to now (samples whose interval ends
    after ``now`` are not looked at: no decision sees the future); ``current_replicas`` the
    target's replicas as its ``/scale`` reports them (ready plus starting). ``chain`` keeps
    fitted models between calls (the operator and the backtest hold one per policy); without
    one a fresh chain is built, which gives the same answer, only slower.
    """
    if not (is_integer(current_replicas) and current_replicas >= 0):
        raise InvalidInputError(f"current replicas must be a non-negative integer, "
                                f"got {current_replicas!r}")
    if not (is_number(now) and math.isfinite(now)):
        raise InvalidInputError(f"now must be a finite time, got {now!r}")
    if not MIN_TIMESTAMP <= now <= MAX_TIMESTAMP:  # milliseconds were "year 55848"
        raise InvalidInputError(f"now must be Unix seconds between 1970 and 9999, got "
                                f"{now!r} (milliseconds?)")
    if history.end_seconds > now:
        history = history.until(now)
    chain = chain if chain is not None else ForecastChain(spec.forecast)
    state = _as_of(state, now)
    prior_replicas = state.replicas
    external = prior_replicas is not None and prior_replicas != current_replicas
    if prior_replicas is not None and external:
        # Someone else scaled the target: the rate limits' periods start from what it has
        # now (undoing our own changes from a count we no longer have would pin a
        # scale-up at a hand-set 1 for a whole period). A scale-up's pods, as anyone's,
        # serve a lead time later (when it was made is not known: now, at the latest).
        state = replace(state, scale_events=(), changes=changed(
            state, spec, now, prior_replicas, current_replicas))
    window = planning_window(spec, now)
    events = schedule_effect(spec.schedules, window)
    ahead_window = lookahead_window(spec, window)
    limits: list[LimitApplied] = []
    records = state.records.copy()
    intensity_steps = _intensity_steps(spec, history)
    half_life = spec.forecast.calibration_half_life_seconds
    budget = spec.slo.violation_budget
    # What was learnt under an earlier spec or grid, carried over or dropped (first: a
    # forecast made on another grid must not be scored on this one).
    records.rebase(budget=budget, basis=sizing_basis(spec),
                   grid=f"{history.step_seconds:g}/{intensity_steps}" if len(history) else None)
    # The day's median rate, median intensity and ε: the collapse rule's level, the
    # regimes' split and the scores' ε, once.
    level = day_level(history, intensity_steps)
    records.score(history, intensity_steps=intensity_steps, half_life=half_life, now=now,
                  level=level)
    records.score_decisions(
        history, intensity_steps=intensity_steps, budget=budget, now=now,
        needed=lambda rate: size(rate, spec.service_rate_per_replica, spec.slo,
                                 spec.costs).replicas)

    problem = metrics_problem(history, spec, now)
    from_collapse = False
    result: ChainResult | None = None
    peak: RecurringPeak | None = None
    if problem is None:
        from_collapse = collapsed(history, level.median)
        origin = history.end_seconds
        last = records.last_track_origin()
        period = TRACK_PERIODS * spec.decision_period_seconds
        due = last is None or math.floor(origin / period) > math.floor(last / period)
        result = chain.forecast(history, forecast_horizon(history, ahead_window[1]), now=now,
                                records=records, track_due=due,
                                least=forecast_horizon(history, window[1]))
        if result.forget_lstm:
            records.forget("lstm")  # as the chain did: the new model's record starts now
        if result.lstm_digest is not None:
            records.artifacts["lstm"] = result.lstm_digest
        peak = recurring_peak(history, window, now, days=spec.forecast.recurring_days,
                              quorum=spec.forecast.recurring_quorum,
                              zone=time_zone(spec.forecast.recurring_time_zone),
                              intensity_steps=intensity_steps)
        # What the bound is calibrated on: the errors of forecasts that it alone answers
        # for. Not those made from a collapse (see COLLAPSE_SHARE), and not those made while
        # a recurring peak is provisioned for: the peak's own rate covers the burst the
        # forecast misses, and its errors would widen every other hour's bound.
        calibrate = not from_collapse and peak is None
        for run in result.runs:
            records.record(origin, run.model, served=run.served and calibrate, track=due,
                           means=run.forecast.mean)

    floor = None if problem is not None else reactive_floor(history, spec)
    if problem is None and floor is None:
        problem = ("MetricsMissing", "no arrival-rate sample in the last decision period")
    if problem is not None or floor is None:
        assert problem is not None
        return _held(problem, spec, state, now, current_replicas, guardrails, events,
                     limits, records, result, window)

    assert result is not None
    fc = result.forecast
    if fc is not None:
        overlap = window_steps(fc.start_seconds, fc.step_seconds, fc.horizon, window)
        bound = records.upper_bound(fc.mean, fc.upper, history,
                                    coverage=1.0 - records.level(budget), now=now,
                                    half_life=half_life, intensity_steps=intensity_steps,
                                    level=level)
        highest = float(np.max(bound.upper[overlap]))
        ahead = window_steps(fc.start_seconds, fc.step_seconds, fc.horizon, ahead_window)
        highest_ahead: float | None = float(np.max(bound.upper[ahead]))
        forecast_bound: tuple[float, str] | None = (highest, bound.message)
        bound_message = bound.message
        bound_upper: tuple[float, ...] | None = tuple(float(x) for x in bound.upper)
        bound_calibrated = bound.calibrated
        if peak is not None:
            peak = _with_margin(peak, highest, float(np.max(fc.mean[overlap])),
                                level.epsilon)
    else:
        forecast_bound, bound_upper, bound_calibrated = None, None, False
        highest_ahead = None
        bound_message = "no forecast: " + result.message
    # Declared events (forescale.core.schedules): an active schedule's forecastMultiplier
    # scales what is forecast (the bound, a recurring peak, the look-ahead), e.g. a launch
    # the history has never seen; never the rate already observed, which is what it is
    # (×3 on a sale's tripled traffic sized for 9×; ×0.1 on traffic that had not dropped
    # sized for a tenth of it).
    # Without a forecast (no stage could serve) the observed rate stands for it, for a
    # multiplier that raises it only: a declared launch still gets its capacity.
    peak_rate = None if peak is None else (peak.rate, peak.message)
    observed = floor
    if events.multiplier != 1.0:
        def times(candidate: tuple[float, str]) -> tuple[float, str]:
            return (candidate[0] * events.multiplier,
                    f"{candidate[1]}; x{events.multiplier:g} by an active schedule")
        forecast_bound = None if forecast_bound is None else times(forecast_bound)
        peak_rate = None if peak_rate is None else times(peak_rate)
        highest_ahead = None if highest_ahead is None else highest_ahead * events.multiplier
        if forecast_bound is None and events.multiplier > 1.0:
            observed = floor * events.multiplier
    source = planned_rate(forecast_bound, observed, peak_rate)
    if observed != floor and source.reason == "ReactiveFloor":
        source = replace(source, message=(
            f"no forecaster could serve: sized for the observed {floor:.4g} req/s "
            f"x{events.multiplier:g} by an active schedule"))
    rate, sizing, chaos = _sized(source.rate, spec)
    further = lookahead(source, highest_ahead, bound_message)
    if further is not None and sizing.replicas + chaos.extra_replicas > current_replicas:
        source = further
        rate, sizing, chaos = _sized(source.rate, spec)
    recommended = sizing.replicas + chaos.extra_replicas

    # Guardrails (forescale.core.guardrail): extra metrics can only raise the
    # recommendation, HPA-style max-of; stabilisation and rate limits then apply to it.
    guard = guardrail_recommend(guardrails, current_replicas,
                                serving_replicas(state, spec, now, current_replicas))
    if guard.replicas is not None and guard.replicas > recommended:
        limits.append(LimitApplied("GuardrailRaised", recommended, guard.replicas,
                                   guard.message))
        recommended = guard.replicas

    proposed, lim = stabilise(recommended, current_replicas, state, spec, now)
    limits += [lim] if lim else []
    # The chaos buffer is spare capacity on top: a decision is judged without it, so the
    # miss-rate controller never spends the buffer on forecast errors.
    # A decision made from a collapse misses when the traffic returns whatever the bound's
    # level: its outcome would only teach the controller to over-provision for hours.
    if not from_collapse:
        records.record_decision(now + spec.lead_time_seconds,
                                max(proposed - chaos.extra_replicas, 0), history.step_seconds)
    desired = _limited(proposed, current_replicas, state, spec, now, events, limits)

    outcome = outcome_of(desired, current_replicas)
    reasons = [outcome, sizing.reason]
    if fc is None:
        reasons.append(result.reason)
    if source.reason != "ForecastBound":
        reasons.append(source.reason)
    if chaos.extra_replicas:
        reasons.append(chaos.reason)
    if external:
        reasons.append("ExternallyScaled")
    reasons += [lim.reason for lim in limits]
    served = result.served_by or "none"
    message = (f"{outcome}: {current_replicas} -> {desired} replicas for "
               f"{rate:.3g} req/s ({_describe_source(source, served)})")
    if external:
        message += (f"; the target was scaled to {current_replicas} outside forescale "
                    f"(last left at {prior_replicas})")
    return Plan(
        desired_replicas=desired, current_replicas=current_replicas,
        recommended_replicas=recommended, reasons=tuple(reasons), message=message,
        forecast=result, planned_arrival_rate=rate, window_start_seconds=window[0],
        window_end_seconds=window[1], sizing=sizing, chaos=chaos, limits=tuple(limits),
        metrics_available=True, schedules=events, guardrail=guard,
        state=_next_state(state, spec, now, recommended, current_replicas, desired, records),
        held_state=_next_state(state, spec, now, recommended, current_replicas,
                               current_replicas, records),
        rate_source=source, bound_message=bound_message, bound_upper=bound_upper,
        bound_calibrated=bound_calibrated)


def _recent(state: PlanState, spec: PolicySpec, now: float) -> list[tuple[float, int]]:
    """The state's changes within the lead time before ``now``, oldest first: in the order
    they were made where their times are the same (an outside change and the decision's
    own write that saw it; times a clock step took back to ``now``)."""
    return sorted(((t, d) for t, d in state.changes if 0 <= now - t < spec.lead_time_seconds),
                  key=lambda change: change[0])


def serving_replicas(state: PlanState, spec: PolicySpec, now: float, current: int) -> int:
    """The replicas that serve at ``now``: the current ones but the pods scale-ups asked
    for within the lead time, which start only that long after; a scale-down removes
    starting pods first, as a ReplicaSet does. The fewest the target had over the lead
    time, that is."""
    starting = 0
    for _, change in _recent(state, spec, now):
        starting = max(0, starting + change)
    return max(0, current - starting)


def changed(state: PlanState, spec: PolicySpec, now: float, current: int,
            desired: int) -> tuple[tuple[float, int], ...]:
    """The state's ``changes`` once ``current`` became ``desired`` at ``now`` (those older
    than the lead time dropped)."""
    kept = _recent(state, spec, now)
    if desired != current:
        kept.append((now, desired - current))
    return tuple(kept[-MAX_CHANGES:])


def _held(problem: tuple[str, str], spec: PolicySpec, state: PlanState, now: float,
          current_replicas: int, guardrails: Sequence[GuardrailReading],
          events: ScheduleEffect, limits: list[LimitApplied], records: Records,
          result: ChainResult | None, window: tuple[float, float]) -> Plan:
    """The plan when the arrival rate cannot be used: hold, never scale down on missing
    data. What does not need the rate still applies: a guardrail asking for more (as the
    HPA scales up on the metrics it can read when one fails; rate limits and cooldown
    count), then a declared event's floor or ceiling (a Prometheus blip before a launch
    must not cancel the capacity declared for it) and the user's bounds."""
    reason, message = problem
    guard = guardrail_recommend(guardrails, current_replicas, serving_replicas(
        state, spec, now, current_replicas)) if guardrails else None
    asked = None if guard is None or guard.replicas is None or \
        guard.replicas <= current_replicas else guard.replicas
    if asked is not None:
        assert guard is not None
        limits.append(LimitApplied("GuardrailRaised", current_replicas, asked, guard.message))
        desired = _limited(asked, current_replicas, state, spec, now, events, limits)
    else:  # nothing moves on missing data but the bounds in force
        desired, bounded = _bounded(current_replicas, events, spec)
        limits += bounded
    outcome = outcome_of(desired, current_replicas)
    return Plan(
        desired_replicas=desired, current_replicas=current_replicas,
        recommended_replicas=asked,
        reasons=(outcome, reason, *(("HoldingReplicas",) if asked is None else ()),
                 *(lim.reason for lim in limits)),
        message=(f"{message}; holding {desired} replicas" if asked is None else
                 f"{message}; a guardrail asks for {asked} replicas: {desired}"),
        forecast=result, planned_arrival_rate=None, window_start_seconds=window[0],
        window_end_seconds=window[1], sizing=None, chaos=None, limits=tuple(limits),
        metrics_available=False, schedules=events, guardrail=guard,
        state=_next_state(state, spec, now, asked, current_replicas, desired, records),
        held_state=_next_state(state, spec, now, asked, current_replicas,
                               current_replicas, records))


def sizing_basis(spec: PolicySpec) -> str:
    """What a decision's replicas are judged by when its outcome is known: the service rate,
    the SLO (but its violation budget, which the miss level follows) and the costs, as a
    short digest (it is stored with every plan state)."""
    slo = replace(spec.slo, violation_budget=SLO().violation_budget)
    key = repr((spec.service_rate_per_replica, slo, spec.costs))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _sized(rate: float, spec: PolicySpec) -> tuple[float, SizingResult, ChaosResult]:
    """The rate sized for, its Erlang C sizing and chaos buffer. Sized without the policy's
    maxReplicas, so that a binding max shows as TooManyReplicas (the SLO is at risk)
    rather than disappearing inside the sizing."""
    sizing = size(rate, spec.service_rate_per_replica, spec.slo, spec.costs)
    chaos = chaos_buffer(sizing.replicas, rate, spec.service_rate_per_replica, spec.slo,
                         spec.chaos, costs=spec.costs)
    return rate, sizing, chaos


def _with_margin(peak: RecurringPeak, bound: float, mean: float,
                 eps: float) -> RecurringPeak:
    """The recurring peak's rate with the margin the calibrated bound keeps above the
    forecast: the peak is a level (the median day's rise), and the traffic around that
    level is as uncertain as around any other. Without it, on the scheduled-burst scenario
    the bursts' misses drove the miss level down and every other hour's bound up.

    The margin is the bound's own, ``(bound + ε) / (mean + ε)``, applied as the bound is
    (:meth:`Records.upper_bound`): a ratio to a forecast of almost nothing (a sparse
    service's quiet hour) once multiplied a peak by 10¹⁶."""
    if bound <= mean:
        return peak
    margin = (bound + eps) / (mean + eps)
    return replace(peak, rate=(peak.rate + eps) * margin - eps,
                   message=f"{peak.message}, with the bound's margin x{margin:.2f}")


def _describe_source(source: RateSource, served: str) -> str:
    if source.reason == "ForecastBound":
        return f"upper bound of the forecast by {served}"
    if source.reason == "ReactiveFloor":
        return "reactive floor: the rate just observed"
    if source.reason == "ScaleUpLookahead":
        return f"look-ahead: the upper bound of the forecast by {served} further ahead"
    return "recurring peak: " + source.message


def _intensity_steps(spec: PolicySpec, history: Series) -> int:
    return intensity_steps(spec.forecast.intensity_seconds, history.step_seconds)


def outcome_of(desired: int, current: int) -> str:
    """The decision's first reason: ``ScaleUp``, ``ScaleDown`` or ``NoChange``."""
    if desired > current:
        return "ScaleUp"
    if desired < current:
        return "ScaleDown"
    return "NoChange"
