"""The dashboard's and alerts' metrics: the forecast band at the lead time, the
recommendation, and conditions as 0/1 per status."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from forescale.controller.metrics import OperatorMetrics
from forescale.core.plan import PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"namespace": "ns", "policy": "p", **labels})


def test_forecast_band_at_the_lead_time_and_recommendation() -> None:
    now = 1_000_020.0
    rates = 20 + np.arange(120, dtype=float)  # a steady ramp, 1 req/s more every minute
    history = Series(now - 120 * 60, 60.0, rates)
    spec = PolicySpec(service_rate_per_replica=10.0, lead_time_seconds=300.0,
                      forecast=ForecastSettings(models=("ma",)))
    result = plan(history, spec, PlanState.initial(), now, current_replicas=3)
    metrics = OperatorMetrics()
    metrics.decision.observe_plan("ns", "p", result, lead_time_seconds=300.0)
    fc = result.forecast.forecast if result.forecast else None
    assert fc is not None
    i = int(np.searchsorted(fc.timestamps(), now + 300.0, side="right") - 1)
    r = metrics.registry
    assert value(r, "forescale_forecast_mean_arrival_rate") == float(fc.mean[i])
    assert value(r, "forescale_forecast_lower_arrival_rate") == float(fc.lower[i])
    assert value(r, "forescale_forecast_upper_arrival_rate") == float(fc.upper[i])
    assert float(fc.lower[i]) <= float(fc.mean[i]) <= float(fc.upper[i])
    assert value(r, "forescale_recommended_replicas") == result.recommended_replicas
    metrics.forget("ns", "p")
    assert value(r, "forescale_forecast_mean_arrival_rate") is None
    assert value(r, "forescale_recommended_replicas") is None


def test_conditions_are_one_for_the_current_status() -> None:
    metrics = OperatorMetrics()
    d = metrics.decision
    d.observe_conditions("ns", "p", [{"type": "Ready", "status": "True"},
                                     {"type": "MetricsAvailable", "status": "False"}])
    r = metrics.registry
    assert value(r, "forescale_condition", type="Ready", status="True") == 1.0
    assert value(r, "forescale_condition", type="Ready", status="False") == 0.0
    assert value(r, "forescale_condition", type="MetricsAvailable", status="False") == 1.0
    d.observe_conditions("ns", "p", [{"type": "MetricsAvailable", "status": "True"}])
    assert value(r, "forescale_condition", type="MetricsAvailable", status="False") == 0.0
    metrics.forget("ns", "p")
    assert value(r, "forescale_condition", type="Ready", status="True") is None


def test_condition_reasons_are_one_for_the_current_reason() -> None:
    metrics = OperatorMetrics()
    d = metrics.decision
    r = metrics.registry
    blocked = {"type": "ScalingActive", "status": "False"}
    d.observe_conditions("ns", "p", [{**blocked, "reason": "ObserveMode"},
                                     {"type": "Ready", "status": "True", "reason": "Ok"}])
    assert value(r, "forescale_condition_reason", type="ScalingActive",
                 reason="ObserveMode") == 1.0
    d.observe_conditions("ns", "p", [{**blocked, "reason": "InvalidSpec"}])
    assert value(r, "forescale_condition_reason", type="ScalingActive",
                 reason="ObserveMode") == 0.0
    assert value(r, "forescale_condition_reason", type="ScalingActive",
                 reason="InvalidSpec") == 1.0
    # Another condition's reasons are its own.
    assert value(r, "forescale_condition_reason", type="Ready", reason="Ok") == 1.0
    metrics.forget("ns", "p")
    for t, reason in (("ScalingActive", "ObserveMode"), ("ScalingActive", "InvalidSpec"),
                      ("Ready", "Ok")):
        assert value(r, "forescale_condition_reason", type=t, reason=reason) is None


def test_sized_for_is_one_for_what_set_the_rate() -> None:
    """A ramp with the plan scaling up: the look-ahead sets the rate; the same ramp with
    plenty of replicas: the calibrated bound does, and the look-ahead reads 0."""
    now = 1_000_020.0
    history = Series(now - 120 * 60, 60.0, 20 + 2.0 * np.arange(120, dtype=float))
    spec = PolicySpec(service_rate_per_replica=10.0,
                      forecast=ForecastSettings(models=("arima",), recurring_days=0))
    metrics = OperatorMetrics()
    r = metrics.registry
    up = plan(history, spec, PlanState.initial(), now, current_replicas=3)
    assert up.rate_source is not None and up.rate_source.reason == "ScaleUpLookahead"
    metrics.decision.observe_plan("ns", "p", up, lead_time_seconds=120.0)
    assert value(r, "forescale_sized_for", reason="ScaleUpLookahead") == 1.0
    held = plan(history, spec, PlanState.initial(), now, current_replicas=200)
    assert held.rate_source is not None and held.rate_source.reason == "ForecastBound"
    metrics.decision.observe_plan("ns", "p", held, lead_time_seconds=120.0)
    assert value(r, "forescale_sized_for", reason="ForecastBound") == 1.0
    assert value(r, "forescale_sized_for", reason="ScaleUpLookahead") == 0.0
    metrics.forget("ns", "p")
    assert value(r, "forescale_sized_for", reason="ForecastBound") is None
