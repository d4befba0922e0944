"""status.py: a decision → the policy's status, its conditions and its Events (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from forescale.controller.status import (
    CONDITION_TYPES,
    MAX_FORECAST_VALUES,
    Decision,
    build_status,
    conditions,
    events,
    rfc3339,
)
from forescale.core.forecast.base import Forecast
from forescale.core.forecast.chain import ChainResult, StageReport
from forescale.core.plan import LimitApplied, Plan, PlanState, RateSource

T0 = 1_700_000_000.0


def stage(model: str, served: bool, reason: str = "Served", message: str = "ok") -> StageReport:
    return StageReport(model=model, served=served, reason=reason, message=message,
                       recent_error=None)


def chain_result(*stages: StageReport, horizon: int = 100) -> ChainResult:
    served = next((s.model for s in stages if s.served), None)
    if served is None:
        return ChainResult(forecast=None, served_by=None, stages=stages,
                           reason="AllForecastersFailed", message="every stage failed")
    mean = np.full(horizon, 50.0)
    fc = Forecast(served, T0, 60.0, mean, mean * 0.9, mean * 1.1, 0.9)
    return ChainResult(forecast=fc, served_by=served, stages=stages, reason="Forecasted",
                       message="ok")


def make_plan(*, desired: int = 5, current: int = 3, metrics: bool = True,
              forecast: ChainResult | str | None = "default",
              limits: tuple[LimitApplied, ...] = (), reasons: tuple[str, ...] = (
                  "ScaleUp", "Forecasted")) -> Plan:
    fc = chain_result(stage("arima", True), stage("ma", False, "NotTried")) \
        if forecast == "default" else forecast
    assert not isinstance(fc, str)
    return Plan(desired_replicas=desired, current_replicas=current, recommended_replicas=desired,
                reasons=reasons, message=f"scale {current} → {desired}", forecast=fc,
                planned_arrival_rate=50.0, window_start_seconds=T0,
                window_end_seconds=T0 + 600, sizing=None, chaos=None, limits=limits,
                metrics_available=metrics, state=PlanState.initial())


def decision(**changes: Any) -> Decision:
    base = Decision(now=T0, generation=3, mode="Scale", identity="op-a", plan=make_plan())
    return replace(base, **changes)


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# -- conditions: every type, every reason ---------------------------------------------


def test_a_good_decision_is_ready_and_all_five_conditions_are_there() -> None:
    c = conditions(decision())
    assert set(c) == set(CONDITION_TYPES)
    assert c["Ready"][:2] == ("True", "DecisionMade")
    assert c["ScalingActive"][:2] == ("True", "ScalingEnabled")
    assert c["ModelReady"][:2] == ("True", "ModelServing")
    assert c["ScalingLimited"][:2] == ("False", "DesiredWithinRange")
    assert c["MetricsAvailable"][:2] == ("True", "MetricsRead")


def test_invalid_spec() -> None:
    c = conditions(decision(plan=None, invalid_spec="min > max"))
    assert c["Ready"] == ("False", "InvalidSpec", "min > max")
    assert c["ScalingActive"] == ("False", "InvalidSpec", "min > max")
    assert c["MetricsAvailable"][:2] == ("Unknown", "NotRead")
    assert c["ModelReady"][:2] == ("Unknown", "NoForecast")


@pytest.mark.parametrize("reason", ["PrometheusUnavailable", "BadQuery", "AmbiguousQuery",
                                    "NoData"])
def test_a_metrics_error_holds_replicas_and_is_not_ready(reason: str) -> None:
    c = conditions(decision(plan=make_plan(desired=3, metrics=False, forecast=None),
                            metrics_error=(reason, "why")))
    assert c["MetricsAvailable"] == ("False", reason, "why")
    assert c["ScalingActive"][:2] == ("False", "HoldingReplicas")
    assert c["Ready"] == ("False", "MetricsUnavailable", "why")


def test_metrics_the_plan_found_unusable() -> None:
    p = make_plan(desired=3, metrics=False, forecast=None, reasons=("Hold", "MetricsStale"))
    c = conditions(decision(plan=p))
    assert c["MetricsAvailable"][:2] == ("False", "MetricsStale")
    assert c["ScalingActive"][:2] == ("False", "HoldingReplicas")
    assert c["Ready"][:2] == ("True", "DecisionMade")  # holding is a decision


@pytest.mark.parametrize("reason", ["ObserveMode", "TargetLocked", "ConflictingAutoscaler"])
def test_blocked(reason: str) -> None:
    c = conditions(decision(blocked=(reason, "msg")))
    assert c["ScalingActive"] == ("False", reason, "msg")
    assert c["Ready"][:2] == ("True", "DecisionMade")


@pytest.mark.parametrize("reason", ["TooManyReplicas", "TooFewReplicas", "ScaleUpLimited",
                                    "ScaleDownLimited", "ScaleDownStabilized",
                                    "ScaleDownCooldown"])
def test_scaling_limited_reports_the_last_limit(reason: str) -> None:
    limits = (LimitApplied("ScaleUpLimited", 9, 7, "first"), LimitApplied(reason, 7, 6, "last"))
    c = conditions(decision(plan=make_plan(limits=limits)))
    assert c["ScalingLimited"] == ("True", reason, "last")


def test_model_ready_names_the_first_skipped_stage() -> None:
    fc = chain_result(stage("lstm", False, "ArtifactMissing", "no artifact"),
                      stage("arima", False, "AccuracyTooLow", "mape 0.4"), stage("ma", True))
    c = conditions(decision(plan=make_plan(forecast=fc), lstm_configured=True))
    assert c["ModelReady"][:2] == ("False", "ArtifactMissing")
    assert "ma serves" in c["ModelReady"][2]


def test_a_fallback_that_failed_after_the_serving_stage_does_not_unready_it() -> None:
    """ARIMA, run as the LSTM's possible fallback, failed; the LSTM serves: ready."""
    fc = chain_result(stage("lstm", True),
                      stage("arima", False, "NegativeForecast", "run as a fallback"),
                      stage("ma", False, "NotTried"))
    c = conditions(decision(plan=make_plan(forecast=fc), lstm_configured=True))
    assert c["ModelReady"][:2] == ("True", "ModelServing")


def test_a_stage_serving_above_the_accuracy_limit_says_so() -> None:
    fc = chain_result(stage("arima", False, "AccuracyTooLow", "wape 0.9"),
                      stage("ma", True, "ServedAboveMaxError", "the least inaccurate serves"))
    c = conditions(decision(plan=make_plan(forecast=fc)))
    assert c["ModelReady"] == ("False", "ServedAboveMaxError",
                               "ma serves: the least inaccurate serves")


def test_an_unconfigured_lstm_is_not_a_fallback() -> None:
    fc = chain_result(stage("lstm", False, "ArtifactMissing"), stage("arima", True))
    assert conditions(decision(plan=make_plan(forecast=fc)))["ModelReady"][:2] == (
        "True", "ModelServing")


def test_every_forecaster_failed() -> None:
    fc = chain_result(stage("arima", False, "ModelError", "boom"))
    c = conditions(decision(plan=make_plan(forecast=fc)))
    assert c["ModelReady"] == ("False", "AllForecastersFailed", "every stage failed")


# -- build_status ------------------------------------------------------------------------


def test_status_fields_and_observed_generation() -> None:
    d = decision(scaled_to=5, observed_rate=48.123456)
    s = build_status(d, None)
    assert s["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in s["conditions"])
    assert [c["type"] for c in s["conditions"]] == list(CONDITION_TYPES)
    assert s["currentReplicas"] == 3 and s["desiredReplicas"] == 5
    assert s["decidedBy"] == "op-a" and s["lastDecisionTime"] == rfc3339(T0)
    assert s["lastScaleTime"] == rfc3339(T0)
    assert s["observedArrivalRate"] == 48.1235
    assert s["servingModel"] == "arima"
    assert s["skippedModels"] == [{"model": "ma", "reason": "NotTried", "message": "ok"}]
    assert len(s["forecast"]["mean"]) == MAX_FORECAST_VALUES
    assert s["planState"] == PlanState.initial().to_dict()
    assert "lastScaleTime" not in build_status(decision(), None)


def test_last_transition_time_moves_only_when_the_status_changes() -> None:
    first = build_status(decision(), None)
    assert all(c["lastTransitionTime"] == rfc3339(T0) for c in first["conditions"])
    # Same statuses, other reasons/messages, later: the times stay.
    later = decision(now=T0 + 60, blocked=None, generation=4,
                     plan=make_plan(limits=(LimitApplied("TooManyReplicas", 9, 5, "max"),)))
    second = build_status(later, first)
    t1 = by_type(second)
    assert t1["Ready"]["lastTransitionTime"] == rfc3339(T0)
    assert t1["ScalingLimited"]["status"] == "True"
    assert t1["ScalingLimited"]["lastTransitionTime"] == rfc3339(T0 + 60)
    assert t1["ScalingActive"]["lastTransitionTime"] == rfc3339(T0)
    assert t1["Ready"]["observedGeneration"] == 4
    # A reason change within one status keeps the time.
    third = build_status(replace(later, now=T0 + 120, blocked=("TargetLocked", "held")),
                         build_status(replace(later, now=T0 + 90,
                                              blocked=("ObserveMode", "observe")), second))
    assert by_type(third)["ScalingActive"]["reason"] == "TargetLocked"
    assert by_type(third)["ScalingActive"]["lastTransitionTime"] == rfc3339(T0 + 90)


def test_a_previous_condition_without_a_time_gets_one() -> None:
    prev = {"conditions": [{"type": "Ready", "status": "True"}]}
    assert by_type(build_status(decision(), prev))["Ready"]["lastTransitionTime"] == \
        rfc3339(T0)


# -- events ------------------------------------------------------------------------------


def test_scaling_emits_scaled_up_or_down() -> None:
    assert [e.reason for e in events(decision(scaled_to=5), None)] == ["ScaledUp"]
    down = decision(plan=make_plan(desired=2, current=4), scaled_to=2)
    assert [(e.type, e.reason) for e in events(down, None)] == [("Normal", "ScaledDown")]
    assert events(decision(), None) == []


def test_events_on_transitions_into_a_problem_only() -> None:
    d = decision(plan=make_plan(desired=3, metrics=False, forecast=None),
                 metrics_error=("PrometheusUnavailable", "down"))
    first = events(d, None)
    assert {(e.type, e.reason) for e in first} >= {("Warning", "PrometheusUnavailable"),
                                                   ("Warning", "HoldingReplicas")}
    assert "MetricsUnavailable" not in {e.reason for e in first}  # said by MetricsAvailable
    # The same problem next cycle: no new events.
    assert events(replace(d, now=T0 + 5), build_status(d, None)) == []


def test_invalid_spec_is_a_warning_event_once() -> None:
    d = decision(plan=None, invalid_spec="min > max")
    assert ("Warning", "InvalidSpec") in {(e.type, e.reason) for e in events(d, None)}
    # One event (Ready and ScalingActive say the same), and none for the Unknown ones.
    assert [(e.type, e.reason) for e in events(d, None)] == [("Warning", "InvalidSpec")]
    assert events(d, build_status(d, None)) == []


@pytest.mark.parametrize(("reason", "kind"), [("ObserveMode", "Normal"),
                                              ("TargetLocked", "Normal"),
                                              ("ScalingDisabled", "Normal"),
                                              ("ConflictingAutoscaler", "Warning")])
def test_blocked_events(reason: str, kind: str) -> None:
    assert [(e.type, e.reason) for e in events(decision(blocked=(reason, "m")), None)] == [
        (kind, reason)]


def test_a_reloaded_artifact_is_a_normal_event_at_that_decision_only() -> None:
    reloaded = replace(chain_result(stage("lstm", True)), reloaded="/models/shop")
    d = decision(plan=make_plan(forecast=reloaded))
    assert [(e.type, e.reason, e.message) for e in events(d, None)] == [
        ("Normal", "ModelReloaded", "lstm artifact /models/shop loaded again: its files "
                                    "changed")]
    assert events(decision(plan=make_plan(forecast=chain_result(stage("lstm", True)))),
                  build_status(d, None)) == []


def test_scaling_limited_never_emits() -> None:
    d = decision(plan=make_plan(limits=(LimitApplied("TooManyReplicas", 9, 5, "max"),)))
    assert events(d, None) == []


def test_status_says_what_set_the_rate_sized_for() -> None:
    source = RateSource("ReactiveFloor", 120.0, "the rate observed in the last decision "
                        "period (120 req/s) is above the forecast's bound",
                        {"ForecastBound": 80.0, "ReactiveFloor": 120.0})
    plan = replace(make_plan(), rate_source=source,
                   bound_message="calibrated 99.5% bound of the intensity (up to x1.30)")
    status = build_status(decision(plan=plan), None)
    assert status["sizedFor"] == {
        "reason": "ReactiveFloor", "rate": 120.0, "message": source.message,
        "bound": "calibrated 99.5% bound of the intensity (up to x1.30)",
        "candidates": {"ForecastBound": 80.0, "ReactiveFloor": 120.0}}
    # Without one it is removed (null in the merge patch), not left from a decision before.
    assert build_status(decision(), None)["sizedFor"] is None


def test_the_written_status_replaces_maps_the_plan_dropped() -> None:
    """The status is a merge patch, which keeps every key it does not name: histograms of
    an old grid, the track record of a replaced LSTM and candidates of an earlier decision
    were read back after the plan had dropped them. What the API server stores after the
    write is now exactly what was built, at every depth."""
    from forescale.controller.status import merge_patch
    from tests.support.kubeapi import merge_patch as server_merge_patch

    state = {"version": 2, "recommendations": [[T0, 5]], "scaleEvents": [],
             "forecasts": {"grid": [60.0, 15], "calibration": {"0:all": [T0, [[3, 1.0]]]},
                           "tracks": {"ma": [[T0, 1.0, 1.0]]}}}
    plan = replace(make_plan(), state=PlanState.from_dict(state),
                   rate_source=RateSource("ForecastBound", 50.0, "bound", {
                       "ForecastBound": 50.0, "ReactiveFloor": 10.0}))
    previous = {
        "planState": {**state, "forecasts": {
            "grid": [60.0, 5], "calibration": {"0:all": [T0, [[1, 2.0], [7, 1.0]]],
                                               "lstm|0": [T0, [[2, 1.0]]],
                                               "3:all": [T0, [[2, 1.0]]]},
            "tracks": {"ma": [[T0, 2.0, 2.0]], "lstm": [[T0, 3.0, 3.0]]},
            "artifacts": {"lstm": "digest-old"}}},
        "sizedFor": {"reason": "ScaleUpLookahead", "rate": 66.0, "candidates": {
            "ForecastBound": 5.5, "ScaleUpLookahead": 66.0, "RecurringPeak": 70.0}},
        "schedules": {"active": [], "nextSchedule": "launch", "nextStartTime": "x"},
        "lastScaleTime": "kept",
    }
    d = decision(plan=plan)
    written = build_status(d, previous)
    for apply in (merge_patch, server_merge_patch):
        stored = apply(previous, written)
        # (null values of the state are absent once stored: its reader reads them so)
        assert PlanState.from_dict(stored["planState"]) == plan.state_to_commit(applied=False)
        kept = stored["planState"]["forecasts"]
        assert (list(kept["calibration"]), list(kept["tracks"]), kept["artifacts"]) == \
            (["0:all"], ["ma"], {})
        assert stored["sizedFor"]["candidates"] == {"ForecastBound": 50.0,
                                                    "ReactiveFloor": 10.0}
        assert "schedules" not in stored and stored["lastScaleTime"] == "kept"
        assert stored == merge_patch({"lastScaleTime": "kept"}, build_status(d, {}))
