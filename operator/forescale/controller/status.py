"""A decision → the policy's status, its conditions and the Events to emit. Pure: no I/O.

Conditions follow the HPA's: every one has a CamelCase reason; ``lastTransitionTime`` moves
only when the condition's status changes. Events are emitted for scaling actions and on
transitions into a fallback or an error, not every period, so a stuck policy does not
flood the namespace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from forescale.core.forecast.chain import before_served
from forescale.core.plan import Plan

#: Forecast values kept in the status: enough for a dashboard, small enough for etcd.
MAX_FORECAST_VALUES = 60

CONDITION_TYPES = ("Ready", "ScalingActive", "ModelReady", "ScalingLimited",
                   "MetricsAvailable", "Paused")


@dataclass(frozen=True)
class Decision:
    """What one decision cycle found and did."""

    now: float
    generation: int | None
    mode: str
    identity: str
    plan: Plan | None = None
    #: Why the policy cannot be acted on, or None; its reason (InvalidSpec, or what the
    #: target's read found: TargetNotFound, TargetForbidden, TargetUnreadable).
    invalid_spec: str | None = None
    invalid_reason: str = "InvalidSpec"
    #: (reason, message) from the Prometheus adapter, or None when the read worked.
    metrics_error: tuple[str, str] | None = None
    #: (reason, message) why the target is not scaled although it could be:
    #: ObserveMode, TargetLocked, ConflictingAutoscaler, ScaleFailed.
    blocked: tuple[str, str] | None = None
    #: (reason, message) when the cycle itself failed (DecisionFailed): the status still
    #: says so, rather than a traceback in the log and a stale status.
    failure: tuple[str, str] | None = None
    #: Replicas written to /scale in this cycle, or None.
    scaled_to: int | None = None
    observed_rate: float | None = None
    #: Whether an LSTM artifact is configured: without one, its skip is not a fallback.
    lstm_configured: bool = False
    #: (reason, message) of a pause or pin annotation (controller.overrides), or None.
    paused: tuple[str, str] | None = None
    #: Whether the annotations were read in this cycle (not when the target could not be
    #: read, the spec was invalid or the cycle failed): else ``paused`` says nothing.
    override_read: bool = False
    #: The key of the Lease's scale intent this status accounts for (the write this cycle
    #: made or knows it did not make, or the one whose state it planned from;
    #: forescale.controller.intent), or None to keep the status's.
    scale_intent: str | None = None


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def _model_condition(d: Decision) -> tuple[str, str, str]:
    plan = d.plan
    if plan is None or plan.forecast is None:
        return "Unknown", "NoForecast", "no forecast was made in this cycle"
    fc = plan.forecast
    if fc.served_by is None:
        return "False", fc.reason, fc.message
    above = [s for s in fc.stages if s.served and s.reason == "ServedAboveMaxError"]
    if above:
        return "False", "ServedAboveMaxError", f"{above[0].model} serves: {above[0].message}"
    # Only the stages before the serving one: one after it that failed when run as a
    # fallback does not make the serving model any less ready.
    fallbacks = [s for s in before_served(fc.stages) if not s.served and s.reason != "NotTried"
                 and not (s.model == "lstm" and not d.lstm_configured)]
    if fallbacks:
        first = fallbacks[0]
        return "False", first.reason, (f"{first.model} skipped ({first.message}); "
                                       f"{fc.served_by} serves")
    return "True", "ModelServing", f"{fc.served_by} serves the forecast"


def conditions(d: Decision) -> dict[str, tuple[str, str, str]]:
    """type → (status, reason, message)."""
    out: dict[str, tuple[str, str, str]] = {}
    plan = d.plan
    if d.metrics_error is not None:
        out["MetricsAvailable"] = ("False", *d.metrics_error)
    elif plan is not None and not plan.metrics_available and plan.forecast is None:
        out["MetricsAvailable"] = ("False", plan.reasons[1], plan.message)
    elif plan is not None:
        out["MetricsAvailable"] = ("True", "MetricsRead", "arrival rate read from Prometheus")
    else:
        out["MetricsAvailable"] = ("Unknown", "NotRead", "metrics were not read")
    out["ModelReady"] = _model_condition(d)
    out["Paused"] = (("True", *d.paused) if d.paused is not None else
                     ("False", "NotPaused", "no pause annotation"))
    limits = plan.limits if plan is not None else ()
    if plan is None:
        out["ScalingLimited"] = ("Unknown", "NoDecision", "no replicas were decided in this "
                                                          "cycle")
    elif limits:
        out["ScalingLimited"] = ("True", limits[-1].reason, limits[-1].message)
    else:
        out["ScalingLimited"] = ("False", "DesiredWithinRange",
                                 "the desired replicas are within the limits")
    if d.invalid_spec is not None:
        out["ScalingActive"] = ("False", d.invalid_reason, d.invalid_spec)
        out["Ready"] = ("False", d.invalid_reason, d.invalid_spec)
        return out
    if d.failure is not None:
        out["ScalingActive"] = ("False", *d.failure)
        out["Ready"] = ("False", *d.failure)
        return out
    if d.blocked is not None:
        out["ScalingActive"] = ("False", *d.blocked)
    elif d.metrics_error is not None or (plan is not None and not plan.metrics_available):
        moved = plan is not None and plan.desired_replicas != plan.current_replicas
        out["ScalingActive"] = ("False", "HoldingReplicas", (
            f"no usable metrics: no forecast, but a guardrail or the bounds in force move "
            f"the replicas {plan.current_replicas} -> {plan.desired_replicas} "
            f"({plan.message})"
            if moved and plan is not None else
            "no usable metrics: holding the current replicas"))
    else:
        out["ScalingActive"] = ("True", "ScalingEnabled",
                                "the operator scales the target through /scale")
    if d.metrics_error is not None or plan is None:
        msg = d.metrics_error[1] if d.metrics_error else "no decision was made"
        out["Ready"] = ("False", "MetricsUnavailable", msg)
    elif d.blocked is not None and d.blocked[0] == "ScaleFailed":
        out["Ready"] = ("True", "DecisionMade", f"{plan.message}; not applied: the /scale "
                                                f"write failed")
    else:
        out["Ready"] = ("True", "DecisionMade", plan.message)
    return out


def plain(value: Any) -> Any:
    """``value`` as plain dicts and lists (kopf hands out read-only mapping views), a copy
    that compares by value and that later changes to the original do not reach."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` after the JSON merge patch ``patch`` (RFC 7386), as the API server applies
    a status write: objects merge key by key, ``null`` removes a key, anything else
    replaces. What this process knows the status to be after its write, which a status
    built without a plan (an invalid spec: no ``planState``) must not shrink."""
    if not isinstance(patch, Mapping):
        return plain(patch)
    result = plain(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def build_status(d: Decision, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The full status to write (a merge patch of ``status``)."""
    previous = previous or {}
    before = {c.get("type"): c for c in previous.get("conditions") or []
              if isinstance(c, Mapping)}
    conds = []
    for ctype, (state, reason, message) in sorted(conditions(d).items(),
                                                  key=lambda kv: CONDITION_TYPES.index(kv[0])):
        old = before.get(ctype) or {}
        if ctype == "Paused" and not d.override_read and old:
            conds.append(dict(old))  # not read in this cycle: what it was, unchanged
            continue
        changed = old.get("status") != state
        conds.append({"type": ctype, "status": state, "reason": reason,
                      "message": message[:1024],
                      "lastTransitionTime": rfc3339(d.now) if changed or not
                      old.get("lastTransitionTime") else old["lastTransitionTime"],
                      "observedGeneration": d.generation})
    status: dict[str, Any] = {
        "observedGeneration": d.generation,
        "conditions": conds,
        "lastDecisionTime": rfc3339(d.now),
        "decidedBy": d.identity,
        "observedArrivalRate": _num(d.observed_rate),
    }
    plan = d.plan
    if d.scaled_to is not None:
        status["lastScaleTime"] = rfc3339(d.now)
    # Carried over, not left out: the copy a retry plans from (its status write failed)
    # has the key, the API server's may not.
    accounted = d.scale_intent or previous.get("scaleIntent")
    if accounted is not None:
        status["scaleIntent"] = accounted
    if plan is not None:
        # What this plan has not (a hold: no forecast, no sizing) is removed (null in the
        # merge patch), not left from an earlier decision as if it were this one's.
        status.update(dict.fromkeys(("sizedFor", "schedules", "guardrail", "servingModel",
                                     "skippedModels", "forecast")))
        status.update({
            "currentReplicas": plan.current_replicas,
            "desiredReplicas": plan.desired_replicas,
            "reasons": list(plan.reasons),
            "plannedArrivalRate": _num(plan.planned_arrival_rate),
            # A scale event is remembered only if the write happened (the core's rule).
            "planState": plan.state_to_commit(applied=d.scaled_to is not None).to_dict(),
        })
        if plan.rate_source is not None:
            src = plan.rate_source
            status["sizedFor"] = {
                "reason": src.reason, "rate": _num(src.rate), "message": src.message[:512],
                "bound": plan.bound_message[:512],
                "candidates": {k: _num(v) for k, v in src.candidates.items()}}
        if plan.schedules is not None and (plan.schedules.active
                                           or plan.schedules.next_name is not None):
            ev = plan.schedules
            status["schedules"] = {
                "active": list(ev.active),
                **({"nextSchedule": ev.next_name,
                    "nextStartTime": rfc3339(ev.next_start_seconds)}
                   if ev.next_name is not None and ev.next_start_seconds is not None
                   else {})}
        if plan.guardrail is not None and plan.guardrail.per_guardrail:
            # Also without a value (a mistyped query): the message says which had none.
            g = plan.guardrail
            status["guardrail"] = {
                "message": g.message[:512],
                **({"decidedBy": g.decided_by, "replicas": g.replicas}
                   if g.replicas is not None else {})}
        if plan.forecast is not None:
            fc = plan.forecast
            status["servingModel"] = fc.served_by
            status["skippedModels"] = [{"model": s.model, "reason": s.reason,
                                        "message": s.message[:512]}
                                       for s in fc.stages if not s.served]
            if fc.forecast is not None:
                f = fc.forecast
                status["forecast"] = {
                    "startTime": rfc3339(f.start_seconds), "stepSeconds": f.step_seconds,
                    "level": f.level,
                    **{k: [_num(float(v)) for v in getattr(f, k)[:MAX_FORECAST_VALUES]]
                       for k in ("mean", "lower", "upper")}}
    # A merge patch keeps every key it does not name: a map written whole (planState's
    # calibration histograms, tracks and artifacts; sizedFor's candidates; schedules'
    # next start) must name what it dropped, or the dropped keys are read back next cycle.
    return {key: _replacing(previous.get(key), value) for key, value in status.items()}


def _replacing(old: Any, new: Any) -> Any:
    """``new`` as a merge patch that replaces ``old`` whole: every key of ``old`` that
    ``new`` lacks is ``null`` (removed), at every depth of nested objects."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {key: _replacing(old.get(key), value) for key, value in new.items()}
    patch.update((key, None) for key in old if key not in new)
    return patch


def scale_event(d: Decision) -> Event | None:
    """ScaledUp or ScaledDown, if this cycle wrote /scale."""
    if d.scaled_to is None or d.plan is None:
        return None
    reason = "ScaledUp" if d.scaled_to > d.plan.current_replicas else "ScaledDown"
    return Event("Normal", reason, d.plan.message)


def events(d: Decision, previous: Mapping[str, Any] | None) -> list[Event]:
    """Events for this cycle: every scale, and every transition into a problem."""
    previous = previous or {}
    before = {c.get("type"): (c.get("status"), c.get("reason"))
              for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    out: list[Event] = []
    plan = d.plan
    scaled = scale_event(d)
    if scaled is not None:
        out.append(scaled)
    if plan is not None and plan.forecast is not None and plan.forecast.reloaded:
        out.append(Event("Normal", "ModelReloaded",
                         f"lstm artifact {plan.forecast.reloaded} loaded again: its files "
                         "changed"))
    paused_before, paused_reason = before.get("Paused", (None, None))
    if not d.override_read:
        pass  # the annotations were not read: nothing is known to have changed
    elif d.paused is not None and (paused_before != "True" or paused_reason != d.paused[0]):
        out.append(Event("Normal", d.paused[0], d.paused[1]))  # paused, or pause ⇄ pin
    elif d.paused is None and paused_before == "True":
        out.append(Event("Normal", "Resumed", "pause annotation removed: forescale scales "
                                              "the target again"))
    for ctype, (status, reason, message) in conditions(d).items():
        if ctype == "Paused" or reason == "PausedByAnnotation":
            continue  # its Events are the pause/pin and Resumed ones above
        # Only transitions into False: Unknown (e.g. metrics not read because the spec is
        # invalid) is no problem of its own, and the InvalidSpec event already says why.
        if status != "False" or before.get(ctype) == (status, reason):
            continue
        if ctype == "ScalingLimited":
            continue
        if ctype == "ScalingActive" and reason in ("ObserveMode", "TargetLocked",
                                                   "ScalingDisabled"):
            kind = "Normal"
        elif ctype == "Ready" and reason not in ("InvalidSpec", "DecisionFailed"):
            continue  # already said by MetricsAvailable
        else:
            kind = "Warning"
        out.append(Event(kind, reason, message))
    return _unique(out)


def _unique(items: Sequence[Event]) -> list[Event]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in items:
        if (e.reason, e.message) not in seen:
            seen.add((e.reason, e.message))
            out.append(e)
    return out
