"""A fuzzer over the decision core with its real forecast chain: any history a Prometheus
could return (gaps, zeros, a service of one request a day, rates of 10¹², flat lines,
jumps by 10⁶) gives a plan within the policy's bounds, never a traceback, and a state that
survives the status' JSON round trip into the next decision.

Bounded as the input fuzzers are (derandomised, a fixed number of examples).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forescale.core.forecast.chain import ForecastChain
from forescale.core.plan import PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec

settings.register_profile("fuzz-plan", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz-plan-long", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE_FUZZ_PLAN", "fuzz-plan"))

STEP = 60.0
DAY = 1440
T0 = 1_700_000_000.0 - (1_700_000_000.0 % STEP)

SHAPES = ("constant", "daily", "sparse", "zeros", "jump", "spikes")


def _history(shape: str, level: float, days: int, gap_share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = days * DAY + 30
    t = np.arange(n)
    if shape == "constant":
        rate = np.full(n, level)
    elif shape == "daily":
        rate = level * (1.0 + 0.8 * np.sin(2 * np.pi * t / DAY))
    elif shape == "sparse":
        rate = np.full(n, level * 1e-6)
    elif shape == "zeros":
        rate = np.zeros(n)
    elif shape == "jump":
        rate = np.where(t < n - rng.integers(1, 60), level * 1e-3, level * 1e3)
    else:
        rate = np.where(rng.random(n) < 0.01, level * 1e4, level)
    values = rng.poisson(np.minimum(rate * STEP, 1e15)) / STEP if level < 1e12 \
        else rate.astype(float)
    gaps = rng.random(n) < gap_share
    values[gaps] = np.nan
    return np.asarray(values, dtype=float)


@FUZZ
@given(shape=st.sampled_from(SHAPES),
       level=st.sampled_from([1e-9, 1e-3, 0.5, 30.0, 5e3, 1e7, 1e13]),
       days=st.integers(1, 3), gap_share=st.sampled_from([0.0, 0.0, 0.05, 0.5, 0.97]),
       seed=st.integers(0, 2**16), current=st.integers(0, 500),
       models=st.sampled_from([("ma",), ("ma",), ("arima", "ma")]))
def test_any_history_gives_a_bounded_plan(shape: str, level: float, days: int,
                                          gap_share: float, seed: int, current: int,
                                          models: tuple[str, ...]) -> None:
    values = _history(shape, level, days, gap_share, seed)
    policy = PolicySpec(service_rate_per_replica=10.0, min_replicas=2, max_replicas=300,
                        forecast=ForecastSettings(models=models))  # type: ignore[arg-type]
    chain = ForecastChain(policy.forecast)
    state = PlanState.initial()
    decisions = 6
    start = len(values) - decisions
    for k in range(decisions):
        now = T0 + k * STEP
        history = Series(now - (start + k) * STEP, STEP, values[:start + k])
        p = plan(history, policy, state, now, current_replicas=current, chain=chain)
        assert policy.min_replicas <= p.desired_replicas <= policy.max_replicas
        assert p.reasons and all(r[:1].isupper() and r.isalnum() for r in p.reasons), p.reasons
        assert p.planned_arrival_rate is None or (math.isfinite(p.planned_arrival_rate)
                                                  and p.planned_arrival_rate >= 0)
        # The status carries the state between decisions, as JSON.
        state = PlanState.from_dict(json.loads(json.dumps(p.state.to_dict(),
                                                          allow_nan=False)))
        json.dumps(p.to_dict(), allow_nan=False)
        current = p.desired_replicas


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(first=st.sampled_from(SHAPES), then=st.sampled_from(SHAPES),
       level=st.sampled_from([1e-3, 30.0, 1e7]), seed=st.integers(0, 2**16))
def test_a_long_run_through_a_change_of_shape_stays_bounded(first: str, then: str,
                                                            level: float,
                                                            seed: int) -> None:
    """Enough decisions (150) for the calibration, the miss level and the track records to
    fill, then the traffic turns into something else at a thousand times the level."""
    before = _history(first, level, 2, 0.02, seed)
    after = _history(then, level * 1e3, 1, 0.02, seed + 1)[:90]
    values = np.concatenate([before, after])
    policy = PolicySpec(service_rate_per_replica=10.0, min_replicas=1, max_replicas=10_000,
                        forecast=ForecastSettings(models=("ma",)))
    chain = ForecastChain(policy.forecast)
    state = PlanState.initial()
    decisions = 150
    start = len(values) - decisions
    current = 1
    for k in range(decisions):
        now = T0 + k * STEP
        history = Series(now - (start + k) * STEP, STEP, values[:start + k])
        p = plan(history, policy, state, now, current_replicas=current, chain=chain)
        assert policy.min_replicas <= p.desired_replicas <= policy.max_replicas
        state = PlanState.from_dict(json.loads(json.dumps(p.state.to_dict(),
                                                          allow_nan=False)))
        current = p.desired_replicas
