"""The protocol's world: scaling, the scoring rate, pods, cost and violations to the step."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.backtest.known_traces import known_missing
from forescale.backtest.world import (
    ExcludedInterval,
    Observation,
    ProtocolParameters,
    World,
    build_world,
    min_replicas,
    simulate,
    smoothed,
    violates,
)
from forescale.core.errors import InvalidInputError
from forescale.core.series import Series

DAY = 86400.0


def world_of(rates: list[float], *, warmup_steps: int = 2,
             startup_seconds: float = 120.0) -> World:
    """A world on the trace's own rates (no rescaling), for hand-computed checks."""
    params = ProtocolParameters(p999_multiple=None, warmup_seconds=warmup_steps * 60.0,
                                startup_seconds=startup_seconds)
    return build_world(Series.from_array(rates), params)


class Scripted:
    """Asks for a fixed count at every step and remembers what it was shown."""

    name = "scripted"

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts
        self.seen: list[Observation] = []

    def decide(self, observation: Observation) -> int:
        self.seen.append(observation)
        return self.counts[observation.step]


def test_min_replicas_by_hand() -> None:
    # λ = 5, μ = 10, one pod: C = ρ = 0.5, P(W > 50 ms) = 0.5·e^(−5·0.05) = 0.389 > 0.05.
    # Two pods: B = 1/13, C = B / (1 − 0.25·(1 − B)) = 0.1, P = 0.1·e^(−15·0.05) = 0.0472.
    params = ProtocolParameters()
    assert violates(1, 5.0, params)
    assert not violates(2, 5.0, params)
    assert min_replicas(5.0, params) == 2
    assert min_replicas(0.0, params) == 1
    assert violates(2, 20.0, params)  # λ = cμ is unstable, whatever Erlang C says


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0, 3000), pods=st.integers(1, 400))
def test_ready_below_required_is_the_section_4_rule(rate: float, pods: int) -> None:
    """The simulation scores ``ready < min_replicas(λ*)``; it must be §4's test exactly."""
    params = ProtocolParameters()
    assert (pods < min_replicas(rate, params)) == violates(pods, rate, params)


def test_smoothing_is_pandas_centred_with_cut_off_ends() -> None:
    rates = np.array([0.0, 0.0, 10.0, 0.0, 0.0, 0.0])
    expected = [10 / 3, 2.5, 2.0, 2.0, 2.5, 0.0]
    np.testing.assert_allclose(smoothed(rates, 5), expected)
    big = np.random.default_rng(1).poisson(50, 500).astype(float)
    np.testing.assert_array_equal(
        smoothed(big, 5), pd.Series(big).rolling(5, center=True, min_periods=1).mean())


def test_rescale_uses_p999_of_scored_steps_only() -> None:
    warmup = [1e6] * 10  # a warm-up spike must not change the scale
    scored = list(range(1, 1001))
    params = ProtocolParameters(warmup_seconds=600.0)
    world = build_world(Series.from_array(warmup + [float(x) for x in scored]), params)
    k = 100 * 10 / np.percentile(np.array(scored, dtype=float), 99.9)
    assert world.scale_factor == pytest.approx(k, rel=1e-12)
    assert np.percentile(world.observed[world.scored], 99.9) == pytest.approx(1000.0)
    assert world.warmup_steps == 10
    assert not world.scored[:10].any() and world.scored[10:].all()


def test_default_warmup_is_seven_days_or_four_for_short_traces() -> None:
    long = build_world(Series.from_array(np.ones(15 * 1440)), ProtocolParameters())
    short = build_world(Series.from_array(np.ones(15 * 1440 - 1)), ProtocolParameters())
    assert long.warmup_steps == 7 * 1440
    assert short.warmup_steps == 4 * 1440
    # Policies take over L steps before scoring starts (see the module's docstring).
    assert long.first_step == 7 * 1440 - 2


def test_refuses_coarse_short_and_empty_traces() -> None:
    with pytest.raises(InvalidInputError, match="300s steps"):
        build_world(Series.from_array(np.ones(10_000), step_seconds=300.0))
    with pytest.raises(InvalidInputError, match="shorter than the warm-up"):
        build_world(Series.from_array(np.ones(4 * 1440)))
    with pytest.raises(InvalidInputError, match="no traffic"):
        build_world(Series.from_array(np.zeros(5 * 1440)))
    with pytest.raises(InvalidInputError, match="missing samples"):
        build_world(Series.from_array([1.0, math.nan] * 3000))


def test_a_world_says_where_it_is_not_protocol_v1() -> None:
    """A finer trace or a changed parameter is replayed, and every figure's title says the
    protocol was adapted and how (it was labelled "protocol v1" as it was)."""
    reference = build_world(Series.from_array(np.ones(5 * 1440)))
    assert reference.deviations() == () and reference.protocol() == "protocol v1"
    assert reference.to_dict()["deviations"] == []
    fine = build_world(Series.from_array(np.ones(10 * 2880), step_seconds=30.0),
                       ProtocolParameters(service_rate=20.0))
    assert fine.protocol().startswith("protocol v1, adapted (30s steps instead of 60s")
    assert "μ 20.0 instead of 10.0" in fine.protocol()
    assert len(fine.to_dict()["deviations"]) == 2  # type: ignore[arg-type]


def test_pods_cost_and_violations_to_the_step() -> None:
    """Constant λ = 5 (2 pods needed), warm-up 2 steps, L = 2, hand-traced:

    t  ask  ready  starting  exists  violates
    0   2     2       0        2      (warm-up)
    1   4     2       2        4      (warm-up)
    2   3     2       1        3      no     - newest starting pod removed first
    3   1     1       0        1      yes    - the pod ready at 3 arrives, then 2 go
    4   3     1       2        3      yes
    5   3     1       2        3      yes
    6   2     2       0        2      no     - 2 ready at 6, then 1 removed
    7   0→1   1       0        1      yes    - clamped to the 1-pod minimum
    """
    world = world_of([5.0] * 8)
    run = simulate(world, Scripted([2, 4, 3, 1, 3, 3, 2, 0]))
    assert world.first_step == 0 and world.initial_pods == 2
    assert run.requested.tolist() == [2, 4, 3, 1, 3, 3, 2, 1]
    assert run.ready.tolist() == [2, 2, 2, 1, 1, 1, 2, 1]
    assert run.existing.tolist() == [2, 4, 3, 1, 3, 3, 2, 1]
    assert run.violations == 4
    assert run.violation_rate == pytest.approx(4 / 6)
    assert run.cost_pod_hours == pytest.approx((3 + 1 + 3 + 3 + 2 + 1) / 60)
    # Requested count changed at scored steps 2, 3, 4, 6 and 7.
    assert run.scaling_actions == 5


def test_scale_down_removes_the_newest_starting_pods_first() -> None:
    world = world_of([5.0] * 6, warmup_steps=3, startup_seconds=180.0)  # L = 3
    run = simulate(world, Scripted([3, 5, 4, 4, 4, 4]))
    # t=0 asks 1 pod (ready at 3), t=1 asks 2 (ready at 4), t=2 drops one of t=1's.
    assert run.ready.tolist() == [2, 2, 2, 3, 4, 4]
    assert run.existing.tolist() == [3, 5, 4, 4, 4, 4]


def test_policies_see_only_finished_steps() -> None:
    world = world_of([1.0, 2.0, 3.0, 4.0, 5.0])
    policy = Scripted([1] * 5)
    simulate(world, policy)
    for obs in policy.seen:
        assert obs.observed.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0][:obs.step]
        assert obs.now_seconds == obs.step * 60.0
        assert not obs.observed.flags.writeable


def test_excluded_intervals_are_seen_but_not_scored() -> None:
    rates = [5.0] * 10
    params = ProtocolParameters(p999_multiple=None, warmup_seconds=120.0)
    excluded = [ExcludedInterval(300.0, 420.0)]  # steps 5 and 6
    world = build_world(Series.from_array(rates), params, excluded=excluded)
    assert world.scored.tolist() == [False] * 2 + [True] * 3 + [False] * 2 + [True] * 3
    run = simulate(world, Scripted([1] * 10))  # violates everywhere
    assert run.violations == 6 and run.violation_rate == 1.0
    assert run.cost_pod_hours == pytest.approx(6 / 60)
    # Scaling actions are not scoring (§7: cost and violations): they count there too.
    steps = simulate(world, Scripted([1, 1, 1, 2, 2, 3, 4, 4, 4, 5]))
    assert steps.scaling_actions == 4  # at steps 3, 5, 6 and 9; 5 and 6 are excluded
    # Every step is still visible to the policy.
    world_all = build_world(Series.from_array(rates), params)
    np.testing.assert_array_equal(world.observed, world_all.observed)


def test_known_missing_minutes_of_the_shared_traces() -> None:
    wc = known_missing("/somewhere/worldcup98_1min.csv")
    assert sum((iv.end_seconds - iv.start_seconds) / 60 for iv in wc) == 10
    assert known_missing("nasa_ksc_jul1995_1min.csv") == ()
    assert known_missing("my_trace.csv") == ()
