"""The metrics behind the chart's Grafana dashboard and alert rules.

Registered on the operator's own registry (:class:`~forescale.controller.metrics.
OperatorMetrics` holds one of these as ``decision``), labelled by namespace and policy:

* ``forescale_forecast_{mean,lower,upper}_arrival_rate``: the forecast and its prediction
  band for the step ``leadTimeSeconds`` ahead, the moment pods asked for now are ready. The
  dashboard shows them ``offset`` by the lead time, so each is drawn at the time it was a
  forecast *for*, next to what was then observed.
* ``forescale_recommended_replicas``: what sizing asked for before behaviour rules and
  bounds; above ``forescale_desired_replicas`` for long means maxReplicas or the rate
  limits hold the SLO back (the "SLO at risk" alert).
* ``forescale_condition{type, status}``: 1 for each condition's current status, 0 for the
  other two (kube-state-metrics' convention), so alerts select ``status="False"``.
* ``forescale_condition_reason{type, reason}``: 1 for each condition's current reason, 0
  for the reasons it had before, so an alert can tell an intended state (``ObserveMode``,
  ``PausedByAnnotation``) from a fault with the same status.
* ``forescale_decided_by{source}``: 1 for what set the last recommendation: ``forecast``,
  ``guardrail:<name>`` (a guardrail metric raised it) or ``schedule:<names>`` (a declared
  event's floor or ceiling bounded it); 0 for the sources seen before.
* ``forescale_sized_for{reason}``: 1 for what set the rate the last decision sized for —
  ``ForecastBound``, ``ReactiveFloor``, ``RecurringPeak`` or ``ScaleUpLookahead``, as the
  status's ``sizedFor.reason`` — and 0 for those seen before: how often the floor, a
  recurring peak or a scale-up's look-ahead overrides the calibrated bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from forescale.core.plan import Plan

LABELS = ("namespace", "policy")
STATUSES = ("True", "False", "Unknown")


class DecisionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        band = "for the step leadTimeSeconds ahead (req/s)."
        self.forecast_mean = Gauge("forescale_forecast_mean_arrival_rate",
                                   "Mean forecast arrival rate " + band, LABELS, registry=r)
        self.forecast_lower = Gauge("forescale_forecast_lower_arrival_rate",
                                    "Lower bound of the forecast's prediction interval "
                                    + band, LABELS, registry=r)
        self.forecast_upper = Gauge("forescale_forecast_upper_arrival_rate",
                                    "Upper bound of the forecast's prediction interval "
                                    + band, LABELS, registry=r)
        self.recommended = Gauge("forescale_recommended_replicas",
                                 "Replicas sizing asked for, before behaviour rules and "
                                 "min/max.", LABELS, registry=r)
        self.condition = Gauge("forescale_condition",
                               "1 for a condition's current status, 0 for the others.",
                               (*LABELS, "type", "status"), registry=r)
        self.condition_reason = Gauge("forescale_condition_reason",
                                      "1 for a condition's current reason, 0 for the "
                                      "reasons it had before.",
                                      (*LABELS, "type", "reason"), registry=r)
        self.decided_by = Gauge("forescale_decided_by",
                                "1 for what set the last decision: forecast, "
                                "guardrail:<name> or schedule:<names>.",
                                (*LABELS, "source"), registry=r)
        self.sized_for = Gauge("forescale_sized_for",
                               "1 for what set the rate the last decision sized for: "
                               "ForecastBound, ReactiveFloor, RecurringPeak or "
                               "ScaleUpLookahead.", (*LABELS, "reason"), registry=r)
        self._condition_types: dict[tuple[str, str], set[str]] = {}
        #: Per (namespace, policy), the label values after those each one-hot gauge has had.
        self._condition_reasons: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self._sources: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self._rate_sources: dict[tuple[str, str], set[tuple[str, ...]]] = {}

    def observe_plan(self, namespace: str, policy: str, plan: Plan, *,
                     lead_time_seconds: float) -> None:
        """The plan's values; a value the plan has not (a hold: no recommendation, no
        forecast) is removed rather than left at the last one, which an alert would read
        as current (a stale recommendation above the held replicas is "SLO at risk")."""
        if plan.recommended_replicas is not None:
            self.recommended.labels(namespace, policy).set(plan.recommended_replicas)
            _one_hot(self.decided_by, self._sources, namespace, policy, decided_by(plan))
        else:
            remove_series(self.recommended, namespace, policy)
            _one_hot(self.decided_by, self._sources, namespace, policy, None)
        _one_hot(self.sized_for, self._rate_sources, namespace, policy,
                 plan.rate_source.reason if plan.rate_source is not None else None)
        fc = plan.forecast.forecast if plan.forecast is not None else None
        if fc is None or fc.horizon == 0:
            for gauge in (self.forecast_mean, self.forecast_lower, self.forecast_upper):
                remove_series(gauge, namespace, policy)
            return
        # The step that contains now + lead time (or the last one, if the forecast is short).
        at = plan.window_start_seconds + lead_time_seconds
        starts = fc.timestamps()
        i = int(np.clip(np.searchsorted(starts, at, side="right") - 1, 0, len(starts) - 1))
        self.forecast_mean.labels(namespace, policy).set(float(fc.mean[i]))
        self.forecast_lower.labels(namespace, policy).set(float(fc.lower[i]))
        self.forecast_upper.labels(namespace, policy).set(float(fc.upper[i]))

    def observe_conditions(self, namespace: str, policy: str,
                           conditions: Iterable[Mapping[str, Any]]) -> None:
        seen = self._condition_types.setdefault((namespace, policy), set())
        for c in conditions:
            ctype, status = str(c.get("type")), str(c.get("status"))
            seen.add(ctype)
            for s in STATUSES:
                self.condition.labels(namespace, policy, ctype, s).set(
                    1.0 if s == status else 0.0)
            _one_hot(self.condition_reason, self._condition_reasons, namespace, policy,
                     str(c.get("reason")), within=(ctype,))

    def forget_plan(self, namespace: str, policy: str) -> None:
        """Remove the series of the policy's last plan: a cycle that made none (an invalid
        spec, a missing target, a failure) must not leave them for the alerts to read."""
        for gauge in (self.forecast_mean, self.forecast_lower, self.forecast_upper,
                      self.recommended):
            remove_series(gauge, namespace, policy)
        for gauge, seen in ((self.decided_by, self._sources),
                            (self.sized_for, self._rate_sources)):
            for labels in seen.pop((namespace, policy), set()):
                remove_series(gauge, namespace, policy, *labels)

    def forget(self, namespace: str, policy: str) -> None:
        self.forget_plan(namespace, policy)
        for labels in self._condition_reasons.pop((namespace, policy), set()):
            remove_series(self.condition_reason, namespace, policy, *labels)
        for ctype in self._condition_types.pop((namespace, policy), set()):
            for s in STATUSES:
                remove_series(self.condition, namespace, policy, ctype, s)


def remove_series(gauge: Gauge, *labels: str) -> None:
    """Remove the gauge's series with these label values, if it has one."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def _one_hot(gauge: Gauge, seen: dict[tuple[str, str], set[tuple[str, ...]]],
             namespace: str, policy: str, value: str | None, *,
             within: tuple[str, ...] = ()) -> None:
    """1 for ``value``, 0 for every other value this policy's gauge has had with the same
    leading labels ``within`` (a condition's type: each condition has its own reason);
    ``None`` (a hold: nothing set it) sets them all to 0."""
    labels = seen.setdefault((namespace, policy), set())
    if value is not None:
        labels.add((*within, value))
    for other in labels:
        if other[:-1] == within:
            gauge.labels(namespace, policy, *other).set(1.0 if other[-1] == value else 0.0)


def decided_by(plan: Plan) -> str:
    """What set the plan's outcome: the last of a schedule's bound or a guardrail's raise
    among its limits (the schedule's comes later in the pipeline), else the forecast."""
    for lim in reversed(plan.limits):
        if lim.reason in ("ScheduledFloor", "ScheduledCeiling") and plan.schedules:
            return "schedule:" + ",".join(plan.schedules.active)
        if lim.reason == "GuardrailRaised" and plan.guardrail and plan.guardrail.decided_by:
            return "guardrail:" + plan.guardrail.decided_by
    return "forecast"
