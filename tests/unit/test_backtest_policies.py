"""The reference policies: the oracle never violates and is cheapest; the HPA's timing;
the equal-SLO comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.backtest.hpa import HPA_TARGETS, HPAPolicy
from forescale.backtest.oracle import (
    LevelReference,
    OraclePolicy,
    level_reference,
    oracle_schedule,
)
from forescale.backtest.runner import BacktestOptions, equal_slo, run_backtest
from forescale.backtest.world import (
    Observation,
    PolicyRun,
    ProtocolParameters,
    World,
    build_world,
    simulate,
)
from forescale.core.series import Series


def world_of(rates: list[float], *, warmup_steps: int, startup_seconds: float = 120.0,
             p999_multiple: float | None = None) -> World:
    params = ProtocolParameters(p999_multiple=p999_multiple,
                                warmup_seconds=warmup_steps * 60.0,
                                startup_seconds=startup_seconds)
    return build_world(Series.from_array(rates), params)


# --- oracle -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 3000), min_size=12, max_size=120),
       startup_steps=st.integers(0, 4), extra_warmup=st.integers(0, 5),
       rescale=st.booleans())
def test_oracle_never_violates(counts: list[int], startup_steps: int, extra_warmup: int,
                               rescale: bool) -> None:
    warmup = min(startup_steps + extra_warmup, len(counts) - 1)
    rates = [c / 60.0 for c in counts]
    if rescale and max(rates[warmup:]) == 0:
        rates[-1] = 1.0
    world = world_of(rates, warmup_steps=warmup, startup_seconds=60.0 * startup_steps,
                     p999_multiple=100.0 if rescale else None)
    run = simulate(world, OraclePolicy(world))
    assert run.violations == 0
    # Exactly as many pods exist as must: max(r_t … r_{t+L}).
    schedule = oracle_schedule(world.required, startup_steps)[world.first_step:]
    np.testing.assert_array_equal(run.existing, schedule)


def test_oracle_asks_early_and_keeps_pods_through_short_dips() -> None:
    required = np.array([1, 1, 1, 3, 1, 1, 3, 1, 1, 1, 1, 2], dtype=np.int64)
    # Pods for step 3 asked at step 1; the dip at 4-5 (2 steps = L) is bridged.
    assert oracle_schedule(required, 2).tolist() == [1, 3, 3, 3, 3, 3, 3, 1, 1, 2, 2, 2]


@settings(max_examples=15, deadline=None)
@given(counts=st.lists(st.integers(0, 600), min_size=30, max_size=80),
       target=st.sampled_from(HPA_TARGETS))
def test_no_policy_that_never_violates_is_cheaper_than_the_oracle(counts: list[int],
                                                                  target: float) -> None:
    world = world_of([c / 60.0 for c in counts], warmup_steps=3)
    oracle = simulate(world, OraclePolicy(world))
    hpa = simulate(world, HPAPolicy(target, service_rate=10.0, step_seconds=60.0))
    if hpa.violations == 0:
        assert hpa.cost_pod_hours >= oracle.cost_pod_hours


# --- HPA --------------------------------------------------------------------------------


def test_hpa_reacts_one_step_late_and_holds_for_the_stabilisation_window() -> None:
    # λ = 10 (3 pods at target 0.35 is inside the tolerance), 40 from step 10, 10 from 20.
    rates = [10.0] * 10 + [40.0] * 10 + [10.0] * 15
    world = world_of(rates, warmup_steps=2)
    assert world.first_step == 0 and world.initial_pods == 3
    run = simulate(world, HPAPolicy(0.35, service_rate=10.0, step_seconds=60.0))
    asked = run.requested.tolist()
    # Step 10's surge is first measured by the decision before step 11:
    # util = 40 / (3·10), desired = ceil(3 · util / 0.35) = 12.
    assert asked[:11] == [3] * 11
    assert asked[11] == 12
    assert run.ready.tolist()[11:14] == [3, 3, 12]  # ready L = 2 steps later
    # Traffic falls at step 20; the raw recommendation drops to 3 at decision 21, but the
    # 12 recommended at decision 20 stays in the 300 s window through decision 25.
    assert asked[20:26] == [12] * 6
    assert asked[26] == 3


def test_hpa_keeps_the_current_count_inside_the_tolerance() -> None:
    policy = HPAPolicy(0.5, service_rate=10.0, step_seconds=60.0)

    def obs(rate: float) -> Observation:
        return Observation(step=5, now_seconds=300.0, observed=np.array([rate] * 5),
                           ready=10, starting=3, ready_last_step=10)

    assert policy.raw_recommendation(obs(54.0)) == 13  # util/target = 1.08: keep 10 + 3
    assert policy.raw_recommendation(obs(56.0)) == 12  # 1.12: ceil(10 · 1.12)
    assert policy.raw_recommendation(obs(44.0)) == 9   # 0.88: ceil(10 · 0.88)


def test_hpa_targets_are_the_protocol_sweep() -> None:
    assert HPA_TARGETS[0] == 0.30 and HPA_TARGETS[-1] == 0.90 and len(HPA_TARGETS) == 13
    assert all(round(b - a, 10) == 0.05 for a, b in itertools.pairwise(HPA_TARGETS))


# --- comparisons ------------------------------------------------------------------------


def fake_run(cost_steps: int, violations: int, scored: int = 100) -> PolicyRun:
    """A run with ``cost_steps`` pod-minutes and ``violations`` violating steps."""
    existing = np.zeros(scored, dtype=np.int64)
    existing[0] = cost_steps
    violating = np.arange(scored) < violations
    return PolicyRun(name="x", first_step=0, initial_pods=1, requested=existing,
                     ready=existing, existing=existing, violating=violating,
                     scored=np.ones(scored, dtype=bool), counted=np.ones(scored, dtype=bool),
                     step_seconds=60.0, wall_seconds=0.0)


def test_equal_slo_picks_the_cheapest_target_at_most_as_violating() -> None:
    forescale = fake_run(120, 5)
    hpa = [(0.30, fake_run(300, 2)), (0.40, fake_run(250, 5)), (0.45, fake_run(260, 4)),
           (0.50, fake_run(200, 9))]
    result = equal_slo(forescale, hpa)
    assert result.matched and result.hpa_target == 0.40
    assert result.cost_ratio == pytest.approx(120 / 250)


def test_equal_slo_reports_when_the_hpa_cannot_match() -> None:
    forescale = fake_run(120, 1)
    hpa = [(0.30, fake_run(300, 2)), (0.35, fake_run(280, 2)), (0.50, fake_run(200, 9))]
    result = equal_slo(forescale, hpa)
    assert not result.matched and result.cost_ratio is None
    # The lowest violation rate in the sweep, and the cheaper of the two that reach it.
    assert result.hpa_target == 0.35 and result.hpa_violation_rate == 0.02
    assert result.hpa_cost_pod_hours == pytest.approx(280 / 60)
    assert "HPA cannot match" in result.describe()


def test_runner_reports_every_policy_with_ratios_to_the_oracle() -> None:
    rng = np.random.default_rng(3)
    rates = list(rng.poisson(300, 200) / 60.0)
    world = world_of(rates, warmup_steps=20, p999_multiple=100.0)
    result = run_backtest(world, BacktestOptions(policies=("hpa",)))
    doc = result.to_dict()
    names = [(p["name"], p.get("target")) for p in doc["policies"]]
    assert names == [("oracle", None)] + [("hpa", t) for t in HPA_TARGETS]
    oracle = doc["policies"][0]
    assert oracle["violation_rate"] == 0 and oracle["cost_ratio_to_oracle"] == 1
    for p in doc["policies"]:
        assert set(p) >= {"cost_pod_hours", "violation_rate", "cost_ratio_to_oracle",
                          "scaling_actions", "wall_seconds"}
        assert p["cost_ratio_to_oracle"] >= 1 or p["violation_rate"] > 0
    assert doc["equal_slo"] is None
    assert doc["parameters"]["protocol"] == "v1"
    assert doc["parameters"]["scored_steps"] == 180


# --- level reference ----------------------------------------------------------------------


def noisy_world(seed: int = 3) -> World:
    """Poisson counts around a smooth daily-ish wave: a level to know, noise to cover."""
    rng = np.random.default_rng(seed)
    n = 3000
    level = 40.0 + 30.0 * np.sin(np.arange(n) / 200.0)
    counts = rng.poisson(level)
    return world_of([c / 60.0 for c in counts], warmup_steps=200, p999_multiple=100.0)


def test_level_reference_pays_for_the_noise_the_level_does_not_tell() -> None:
    """Knowing the quarter hour's mean is not knowing the scoring rate: with no margin it
    violates, the bisected margin meets the rate asked for, and a stricter rate costs
    more; the oracle stays cheaper than all of it."""
    world = noisy_world()
    oracle = simulate(world, OraclePolicy(world))
    bare = simulate(world, LevelReference(world, 1.0))
    assert bare.violation_rate > 0.05
    loose_k, loose = level_reference(world, 0.02)
    strict_k, strict = level_reference(world, 0.002)
    assert loose.violation_rate <= 0.02 and strict.violation_rate <= 0.002
    assert 1.0 < loose_k < strict_k
    assert oracle.cost_pod_hours < loose.cost_pod_hours < strict.cost_pod_hours
    # Bisection: a margin a little smaller would not have met the rate.
    tighter = simulate(world, LevelReference(world, loose_k - 0.01))
    assert tighter.violation_rate > 0.02
