"""forescale in the backtest: the operator's plan(), fed nothing from the future."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import forescale.backtest.forescale_policy as fp
from forescale.backtest.forescale_policy import build_forescale_policy
from forescale.backtest.plot import render_png
from forescale.backtest.runner import BacktestOptions, run_backtest
from forescale.backtest.world import ProtocolParameters, World, build_world, simulate
from forescale.core.errors import InvalidInputError
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec

WARMUP = 400
STEPS = 445
CHANGE = 430  # the two traces differ from this step on


def counts(seed: int, n: int = STEPS) -> np.ndarray:
    minutes = np.arange(n)
    rate = 60 + 40 * np.sin(2 * np.pi * minutes / 180)
    return np.random.default_rng(seed).poisson(rate).astype(float)


def world_from(values: np.ndarray) -> World:
    # No rescaling: k is computed from every scored step, so with it a different future
    # would rescale the past too (the protocol's one deliberate use of the whole trace).
    params = ProtocolParameters(p999_multiple=None, warmup_seconds=WARMUP * 60.0)
    return build_world(Series.from_array(values / 60.0 * 20), params)


def spec_for(world: World, models: tuple[str, ...]) -> PolicySpec:
    base = fp.world_policy_spec(world.params, world.step_seconds)
    settings = ForecastSettings(models=models, history_seconds=WARMUP * 60.0)  # type: ignore[arg-type]
    return replace(base, forecast=settings)


def decisions(world: World, models: tuple[str, ...], **kwargs: Any) -> np.ndarray:
    policy, _ = build_forescale_policy(world, spec_for(world, models), lstm_epochs=1,
                                       **kwargs)
    with policy.replay_scope():
        run = simulate(world, policy)
    return run.requested


@pytest.mark.slow
def test_changing_the_future_changes_no_earlier_decision() -> None:
    past = counts(1)
    future = past.copy()
    future[CHANGE:] = counts(2)[CHANGE:] * 3  # a different, much busier future
    a, b = world_from(past), world_from(future)
    models = ("lstm", "arima", "ma")
    da, db = decisions(a, models), decisions(b, models)
    first = a.first_step
    # The decision at the start of step CHANGE has seen steps up to CHANGE − 1 only.
    np.testing.assert_array_equal(da[:CHANGE - first + 1], db[:CHANGE - first + 1])
    assert (da != db).any()  # and the future did matter once it was the past


def test_lstm_is_trained_on_history_before_the_first_decision_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from forescale.core.forecast import lstm

    seen: list[Series] = []
    real = lstm.train_lstm

    def recording(history: Series, **kwargs: Any) -> Any:
        seen.append(history)
        return real(history, **kwargs)

    monkeypatch.setattr(lstm, "train_lstm", recording)
    world = world_from(counts(3))
    build_forescale_policy(world, spec_for(world, ("lstm", "ma")), lstm_epochs=1)
    (history,) = seen
    assert len(history) == world.first_step < world.warmup_steps
    assert history.end_seconds == world.time_of(world.first_step)
    np.testing.assert_array_equal(history.values, world.observed[:world.first_step])


def test_plan_gets_until_now_cut_to_the_history_window(monkeypatch: pytest.MonkeyPatch) -> None:
    world = world_from(counts(4))
    spec = spec_for(world, ("ma",))
    spec = replace(spec, forecast=replace(spec.forecast, history_seconds=3600.0))
    calls: list[tuple[Series, float, int]] = []
    real = fp.plan

    def recording(history: Series, spec: PolicySpec, state: Any, now: float,
                  **kwargs: Any) -> Any:
        calls.append((history, now, kwargs["current_replicas"]))
        return real(history, spec, state, now, **kwargs)

    monkeypatch.setattr(fp, "plan", recording)
    policy, _ = build_forescale_policy(world, spec, lstm_epochs=0)
    run = simulate(world, policy)
    assert len(calls) == len(world) - world.first_step
    full = world.observed_series()
    for i, (history, now, current) in enumerate(calls):
        expected = full.until(now).tail(60)
        assert history.start_seconds == expected.start_seconds
        np.testing.assert_array_equal(history.values, expected.values)
        assert now == world.time_of(world.first_step + i)
        previous = run.existing[i - 1] if i else world.initial_pods
        assert current == previous  # ready + starting, before this decision


@pytest.mark.slow
def test_the_lstm_memo_changes_no_decision() -> None:
    world = world_from(counts(5, n=440))
    models = ("lstm", "ma")
    np.testing.assert_array_equal(decisions(world, models, memo=True),
                                  decisions(world, models, memo=False))


def test_the_decision_period_must_be_the_step() -> None:
    world = world_from(counts(6))
    spec = replace(spec_for(world, ("ma",)), decision_period_seconds=30.0)
    with pytest.raises(InvalidInputError, match="decisionPeriodSeconds"):
        build_forescale_policy(world, spec)


def test_full_backtest_with_forescale_reports_and_plots() -> None:
    world = world_from(counts(7))
    options = BacktestOptions(policy_spec=spec_for(world, ("ma",)), lstm_epochs=0)
    result = run_backtest(world, options, trace_name="synthetic")
    doc = result.to_dict()
    assert [p["name"] for p in doc["policies"]][-1] == "forescale"
    forescale = doc["policies"][-1]
    assert forescale["served_by"] and forescale["reasons"]
    # The simulated world applies every decision: nothing else ever scales the target.
    assert "ExternallyScaled" not in forescale["reasons"]
    assert doc["equal_slo"] is not None and doc["distance_to_limit"] is not None
    assert doc["distance_to_limit"] == pytest.approx(forescale["cost_ratio_to_oracle"])
    assert result.forescale_policy is not None
    assert np.isfinite(result.forescale_policy.forecast_mean[world.warmup_steps:]).all()
    assert render_png(result)[:4] == b"\x89PNG"


@pytest.mark.parametrize(("field", "changed", "named"), [
    ("service_rate_per_replica", 40.0, "serviceRatePerReplica (40)"),
    ("slo", "wait", "slo.waitSeconds (0.1)"),
    ("slo", "percentile", "slo.percentile (0.99)"),
])
def test_a_policy_is_not_replayed_on_pods_it_does_not_plan_for(field: str, changed: Any,
                                                                named: str) -> None:
    """Only the CLI checked that the world's pods were the policy's: from Python (the
    backtest notebook) a policy for 40 req/s pods was replayed on pods serving 10, at
    99 % violations. The library refuses it; ``parameters_for`` builds the right world."""
    from forescale.backtest.world import parameters_for
    from forescale.core.spec import SLO

    world = world_from(counts(0))
    spec = spec_for(world, ("ma",))
    if field == "slo":
        slo = SLO(wait_seconds=0.1) if changed == "wait" else SLO(percentile=0.99)
        spec = replace(spec, slo=slo)
    else:
        spec = replace(spec, **{field: changed})
    with pytest.raises(InvalidInputError, match=re.escape(f"the policy's {named}")):
        build_forescale_policy(world, spec, lstm_epochs=0)
    params = parameters_for(spec, p999_multiple=world.params.p999_multiple)
    assert (params.service_rate, params.slo_wait_seconds, params.slo_percentile) == (
        spec.service_rate_per_replica, spec.slo.wait_seconds, spec.slo.percentile)
