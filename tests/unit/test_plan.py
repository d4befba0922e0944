"""plan(): the decision pipeline, its behaviour rules and its invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.controller.worker import previous_state
from forescale.core.errors import InvalidInputError
from forescale.core.forecast.base import Forecast
from forescale.core.forecast.chain import ChainResult, StageReport
from forescale.core.plan import Plan, PlanState, plan, sizing_basis
from forescale.core.series import Series
from forescale.core.sizing import replicas_for_slo
from forescale.core.spec import (
    SLO,
    Behavior,
    Chaos,
    ChaosScenario,
    Costs,
    ForecastSettings,
    PolicySpec,
    RateLimit,
)

STEP = 60.0
T0 = 1_700_000_000.0


class FixedChain:
    """A chain double that forecasts a given level (with a ±10 % band) and counts calls."""

    def __init__(self, level: float | list[float] | None, served_by: str = "ma") -> None:
        self.level = level
        self.served_by = served_by
        self.calls: list[tuple[int, float]] = []

    def forecast(self, history: Series, horizon: int, *, now: float, records: object = None,
                 track_due: bool = False, least: int | None = None) -> ChainResult:
        self.calls.append((horizon, now))
        if self.level is None:
            stage = StageReport(model=self.served_by, served=False, reason="ModelError",
                                message="boom", recent_error=None)
            return ChainResult(forecast=None, served_by=None, stages=(stage,),
                               reason="AllForecastersFailed", message="every stage failed")
        if isinstance(self.level, list):
            mean = np.asarray(self.level[:horizon] + [self.level[-1]] * (horizon - len(self.level)))
        else:
            mean = np.full(horizon, float(self.level))
        fc = Forecast(self.served_by, history.end_seconds, history.step_seconds, mean,
                      mean * 0.9, mean * 1.1, 0.9)
        stage = StageReport(model=self.served_by, served=True, reason="Served", message="ok",
                            recent_error=0.05)
        return ChainResult(forecast=fc, served_by=self.served_by, stages=(stage,),
                           reason="Forecasted", message="ok")


def history_at(now: float, rate: float = 50.0, n: int = 120) -> Series:
    """``n`` samples of a flat rate whose last interval ends at ``now``."""
    return Series(now - n * STEP, STEP, np.full(n, rate))


def spec(**kw: object) -> PolicySpec:
    base: dict[str, object] = {"service_rate_per_replica": 10.0, "min_replicas": 1,
                               "max_replicas": 1000}
    base.update(kw)
    return PolicySpec(**base)  # type: ignore[arg-type]


def run(policy: PolicySpec, chain: FixedChain, current: int, now: float = T0,
        state: PlanState | None = None, history: Series | None = None) -> Plan:
    return plan(history if history is not None else history_at(now), policy,
                state or PlanState.initial(), now, current_replicas=current, chain=chain)


def test_sizes_for_the_upper_bound_of_the_window() -> None:
    p = run(spec(), FixedChain(100.0), current=20)
    # upper bound = 110 req/s; Erlang C sizing at mu = 10, 50 ms at 95 %.
    expected = replicas_for_slo(110.0, 10.0, SLO()).replicas
    assert p.planned_arrival_rate == pytest.approx(110.0)
    assert p.desired_replicas == expected
    assert p.metrics_available
    assert p.served_by == "ma"


def test_window_covers_lead_time_plus_period() -> None:
    # A spike three steps out (inside 120 s lead + 60 s period) is provisioned for now;
    # one at step five is not.
    quiet = history_at(T0, rate=1.0)  # below the forecast: the reactive floor stays out
    inside = run(spec(), FixedChain([10.0, 10.0, 200.0, 10.0, 10.0]), current=30,
                 history=quiet)
    outside = run(spec(), FixedChain([10.0, 10.0, 10.0, 10.0, 200.0, 10.0]), current=30,
                  history=quiet)
    assert inside.planned_arrival_rate == pytest.approx(220.0)
    assert outside.planned_arrival_rate == pytest.approx(11.0)
    # The forecast reaches three more periods, for a scale-up's look-ahead (below).
    chain = FixedChain(10.0)
    run(spec(), chain, current=3)
    assert chain.calls == [(6, T0)]
    chain = FixedChain(10.0)
    run(spec(behavior=Behavior(scale_up_lookahead_periods=0)), chain, current=3)
    assert chain.calls == [(3, T0)]


RAMP = [10.0 * (i + 1) for i in range(12)]  # +10 req/s a step


def test_a_scale_up_is_sized_for_the_bound_further_ahead() -> None:
    quiet = history_at(T0, rate=1.0)
    p = run(spec(), FixedChain(RAMP), current=1, history=quiet)
    # The window's bound is 1.1 x 30 (step 3); three more periods reach 1.1 x 60.
    assert p.planned_arrival_rate == pytest.approx(66.0)
    assert p.rate_source is not None and p.rate_source.reason == "ScaleUpLookahead"
    assert p.rate_source.candidates["ForecastBound"] == pytest.approx(33.0)
    assert "ScaleUpLookahead" in p.reasons and "look-ahead" in p.message
    assert p.desired_replicas == replicas_for_slo(66.0, 10.0, SLO()).replicas
    off = run(spec(behavior=Behavior(scale_up_lookahead_periods=0)), FixedChain(RAMP),
              current=1, history=quiet)
    assert off.planned_arrival_rate == pytest.approx(33.0)
    assert "ScaleUpLookahead" not in off.reasons
    assert off.desired_replicas == replicas_for_slo(33.0, 10.0, SLO()).replicas


def test_the_look_ahead_never_holds_pods_that_are_not_needed_yet() -> None:
    # Already above what the window needs: a rise further out keeps nothing.
    quiet = history_at(T0, rate=1.0)
    needed = replicas_for_slo(33.0, 10.0, SLO()).replicas
    held = run(spec(), FixedChain(RAMP), current=needed, history=quiet)
    assert held.desired_replicas == needed and "ScaleUpLookahead" not in held.reasons
    down = run(spec(behavior=Behavior(scale_down_stabilization_seconds=0)),
               FixedChain(RAMP), current=3 * needed, history=quiet)
    assert down.planned_arrival_rate == pytest.approx(33.0)
    assert down.desired_replicas == needed


def test_scale_up_is_rate_limited_like_the_hpa() -> None:
    # max(+4 pods, +100 %) per 60 s, one decision period.
    per_minute = spec(behavior=Behavior(scale_up=(RateLimit("Pods", 4, 60),
                                                  RateLimit("Percent", 100, 60))))
    p = run(per_minute, FixedChain(1000.0), current=3)
    assert p.desired_replicas == 7
    assert "ScaleUpLimited" in p.reasons
    assert p.recommended_replicas is not None and p.recommended_replicas > 7
    p = run(per_minute, FixedChain(1000.0), current=10)
    assert p.desired_replicas == 20


@pytest.mark.parametrize(("percent", "current", "hpa"), [(10, 10, 17), (10, 3, 7), (50, 1, 8)])
def test_a_percent_limit_compounds_with_the_hpas_rounding(percent: int, current: int,
                                                          hpa: int) -> None:
    """Per 15 s, over a 60 s decision: the HPA's four loops each round up (10 % of 10:
    11, 13, 15, 17); rounding once after compounding allowed 15."""
    rule = spec(behavior=Behavior(scale_up=(RateLimit("Percent", percent, 15),)))
    p = run(rule, FixedChain(1000.0), current=current)
    assert p.desired_replicas == hpa and "ScaleUpLimited" in p.reasons
    down = spec(behavior=Behavior(scale_down=(RateLimit("Percent", 10, 15),),
                                  scale_down_stabilization_seconds=0))
    q = run(down, FixedChain(0.0), current=100)
    assert q.desired_replicas == 64  # 90, 81, 72, 64: truncated at each loop (once: 65)


def test_rate_limits_compound_over_the_decision_period() -> None:
    # The default is the HPA's, max(+4 pods, +100 %) per 15 s: the HPA re-evaluates every
    # 15 s, so over one 60 s decision it could double four times (3 -> 48).
    p = run(spec(), FixedChain(5000.0), current=3)
    assert p.desired_replicas == 48
    assert "ScaleUpLimited" in p.reasons


def test_rate_limit_counts_changes_within_its_period() -> None:
    policy = spec(behavior=Behavior(scale_up=(RateLimit("Pods", 4, 120),)))
    first = run(policy, FixedChain(1000.0), current=10)
    assert first.desired_replicas == 14
    # 60 s later the 120 s period still holds the +4: nothing more is allowed.
    second = run(policy, FixedChain(1000.0), current=14, now=T0 + 60, state=first.state)
    assert second.desired_replicas == 14
    assert "ScaleUpLimited" in second.reasons
    third = run(policy, FixedChain(1000.0), current=14, now=T0 + 120, state=second.state)
    assert third.desired_replicas == 18


def test_a_rate_limit_period_starts_where_the_hpas_does() -> None:
    """The changes of both directions within a rule's period are undone to find its start,
    as the HPA does (pkg/controller/podautoscaler/horizontal.go, v1.37:
    ``periodStartReplicas = currentReplicas - added + deleted``): 30 s after 10 → 20, a
    "1 pod per 60 s" scale-down rule allows 9, as it does on the HPA."""
    policy = spec(decision_period_seconds=30.0,
                  behavior=Behavior(scale_down=(RateLimit("Pods", 1, 60),),
                                    scale_down_stabilization_seconds=0.0,
                                    scale_down_tolerance=0.0))
    state = PlanState(scale_events=((T0 - 30, 10),), last_scale_seconds=T0 - 30, replicas=20)
    p = run(policy, FixedChain(1.0), current=20, state=state, history=history_at(T0, 1.0))
    assert p.desired_replicas == 9 and "ScaleDownLimited" in p.reasons


@pytest.mark.parametrize(("early", "removed"), [(61.0, 0), (300.0, 0), (599.0, 10),
                                               (630.0, 10)])
def test_an_early_decision_gets_no_second_allowance(early: float, removed: int) -> None:
    """A decision gets its whole decision period's allowance (ten "1 pod per 60 s" periods
    in 600 s), but only the changes of the last 60 s counted against it: decisions 61 s
    apart (a retry, a restart, a Lease handover) each removed 10 pods. A decision a
    little early on its cadence still gets its own."""
    policy = spec(decision_period_seconds=600.0,
                  behavior=Behavior(scale_down=(RateLimit("Pods", 1, 60),),
                                    scale_down_stabilization_seconds=0.0))
    first = run(policy, FixedChain(1.0), current=40, history=history_at(T0, 1.0))
    assert first.desired_replicas == 30
    state = first.state_to_commit(applied=True)
    restored = PlanState.from_dict(state.to_dict())
    later = T0 + early
    p = run(policy, FixedChain(1.0), current=30, now=later, state=restored,
            history=history_at(later, 1.0))
    assert 30 - p.desired_replicas == removed


def test_an_earlier_scale_up_does_not_raise_the_scale_down_allowance() -> None:
    """Undoing every change over the allowance's span, a scale-up 400 s before raised the
    start of the scale-down's period by as much: 58 → 20 where 10 pods were allowed."""
    policy = spec(decision_period_seconds=600.0,
                  behavior=Behavior(scale_down=(RateLimit("Pods", 1, 60),),
                                    scale_down_stabilization_seconds=0.0))
    state = PlanState(scale_events=((T0 - 400, 28),), last_scale_seconds=T0 - 400,
                      replicas=58)
    p = run(policy, FixedChain(1.0), current=58, state=state, history=history_at(T0, 1.0))
    assert p.desired_replicas == 48 and "ScaleDownLimited" in p.reasons


def test_a_survive_buffer_in_cost_mode_keeps_the_plans_own_count() -> None:
    """plan() hands the policy's costs to the chaos buffer: without them the survivors of
    a lost zone were sized for the SLO alone, 115 where cost mode runs 136."""
    from forescale.core.sizing.chaos import _lost

    zone = ChaosScenario("zone-a", 0.1, 0.34)
    policy = spec(costs=Costs(1.0, 10.0), slo=SLO(max_utilisation=1.0),
                  chaos=Chaos(rule="survive", scenarios=(zone,)))
    p = run(policy, FixedChain(1000.0), current=100, history=history_at(T0, 1000.0))
    assert p.sizing is not None and p.chaos is not None and p.recommended_replicas is not None
    assert p.sizing.replicas == 136
    total = p.recommended_replicas
    assert total - _lost(total, zone) >= p.sizing.replicas


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    policy = spec(behavior=Behavior(scale_down_stabilization_seconds=300.0))
    chain_high, chain_low = FixedChain(100.0), FixedChain(10.0)
    high = run(policy, chain_high, current=13)
    n_high = high.desired_replicas
    state = high.state
    for k in range(1, 6):  # 60..300 s later: the high recommendation is still in the window
        p = run(policy, chain_low, current=n_high, now=T0 + 60 * k, state=state)
        assert p.desired_replicas == n_high, k
        assert "ScaleDownStabilized" in p.reasons
        state = p.state
    p = run(policy, chain_low, current=n_high, now=T0 + 360, state=state)
    assert p.desired_replicas < n_high
    assert p.reasons[0] == "ScaleDown"


def test_cooldown_holds_scale_down_but_never_scale_up() -> None:
    policy = spec(behavior=Behavior(scale_down_stabilization_seconds=0, cooldown_seconds=600))
    up = run(policy, FixedChain(100.0), current=5)
    assert up.desired_replicas > 5
    down = run(policy, FixedChain(10.0), current=up.desired_replicas, now=T0 + 60,
               state=up.state)
    assert down.desired_replicas == up.desired_replicas
    assert "ScaleDownCooldown" in down.reasons
    again = run(policy, FixedChain(300.0), current=up.desired_replicas, now=T0 + 120,
                state=down.state)
    assert again.desired_replicas > up.desired_replicas
    later = run(policy, FixedChain(10.0), current=up.desired_replicas, now=T0 + 660,
                state=up.state)
    assert later.desired_replicas < up.desired_replicas


def test_min_and_max_clamp() -> None:
    p = run(spec(min_replicas=5), FixedChain(0.0), current=5, history=history_at(T0, 0.0))
    assert p.desired_replicas == 5
    assert "TooFewReplicas" in p.reasons
    p = run(spec(max_replicas=8), FixedChain(500.0), current=8)
    assert p.desired_replicas == 8
    assert "TooManyReplicas" in p.reasons


def test_chaos_buffer_is_added() -> None:
    chaos = Chaos(rule="proportional",
                  scenarios=(ChaosScenario("zone", 0.01, 1 / 3),))
    policy = spec(chaos=chaos, behavior=Behavior(scale_up=(RateLimit("Percent", 1000, 15),)))
    plain = run(spec(), FixedChain(100.0), current=13)
    buffered = run(policy, FixedChain(100.0), current=13)
    assert plain.recommended_replicas is not None
    assert buffered.recommended_replicas == plain.recommended_replicas + math.ceil(
        plain.recommended_replicas * (1 / 3) * 1.2)
    assert "ProportionalBuffer" in buffered.reasons


@pytest.mark.parametrize("case", ["empty", "all_nan", "recent_nan", "stale"])
def test_never_scales_down_without_metrics(case: str) -> None:
    now = T0
    history = history_at(now, rate=1.0)
    chain = FixedChain(1.0)
    if case == "empty":
        history = Series(now, STEP, np.array([]))
    elif case == "all_nan":
        history = Series(history.start_seconds, STEP, np.full(len(history), np.nan))
    elif case == "recent_nan":
        v = history.values.copy()
        v[-1] = np.nan
        history = Series(history.start_seconds, STEP, v)
    else:
        history = history_at(now - 600, rate=1.0)
    p = plan(history, spec(), PlanState.initial(), now, current_replicas=40, chain=chain)
    assert p.desired_replicas == 40
    assert not p.metrics_available
    assert "HoldingReplicas" in p.reasons
    assert p.recommended_replicas is None
    expected = {"empty": "MetricsMissing", "all_nan": "MetricsMissing",
                "recent_nan": "MetricsMissing", "stale": "MetricsStale"}[case]
    assert expected in p.reasons


def test_state_round_trips_and_rejects_garbage() -> None:
    p = run(spec(), FixedChain(100.0), current=3)
    restored = PlanState.from_dict(p.state.to_dict())
    assert restored == p.state and restored.replicas == p.desired_replicas
    assert PlanState.from_dict(None) == PlanState.initial()
    # A state written before the replicas were kept: not known, nothing taken as external.
    assert PlanState.from_dict({"version": 2}).replicas is None
    for replicas in (-1, 2.5, "3", True):
        with pytest.raises(InvalidInputError, match="not a non-negative integer"):
            PlanState.from_dict({"replicas": replicas})
    with pytest.raises(InvalidInputError):
        PlanState.from_dict({"recommendations": [["x", "y"]]})
    with pytest.raises(InvalidInputError):
        PlanState.from_dict({"version": 99})
    for bad in ({"recommendations": [["nan", 3]]}, {"scaleEvents": [["inf", 1]]},
                {"lastScaleSeconds": "nan"}):
        with pytest.raises(InvalidInputError, match="not a finite number"):
            PlanState.from_dict(bad)


def test_the_sizing_basis_changes_with_what_judges_a_decision_not_with_the_budget() -> None:
    """Pending decisions are dropped when the sizing that judges them changes (service
    rate, SLO, costs); a budget edit rescales the miss level instead, so it is no part of
    the basis. The state keeps both, so an edit is seen across restarts."""
    base = sizing_basis(spec())
    assert sizing_basis(spec()) == base
    assert sizing_basis(spec(slo=SLO(violation_budget=0.05))) == base
    for edited in (spec(service_rate_per_replica=5.0), spec(slo=SLO(wait_seconds=0.1)),
                   spec(costs=Costs(per_replica_hour=1.0, per_violation=0.01))):
        assert sizing_basis(edited) != base
    p = run(spec(), FixedChain(100.0), current=3)
    restored = PlanState.from_dict(p.state.to_dict()).records
    assert restored.basis == base and restored.budget == SLO().violation_budget


def test_a_state_with_non_finite_times_costs_only_its_memory() -> None:
    """A stored "nan" time once passed from_dict and failed every decision after it
    (round(nan) in the calibration records): the worker now sets it aside for the initial
    state and the decision is made."""
    damaged = {"version": 2, "forecasts": {"pending": [["nan", "ma", 1, [50.0]]],
                                           "aci": {"decisions": [["nan", 5]]}}}
    assert previous_state({"planState": damaged}) == PlanState.initial()
    p = run(spec(), FixedChain(100.0), current=3, state=previous_state({"planState": damaged}))
    assert p.desired_replicas >= 1 and p.recommended_replicas is not None


def test_damaged_forecast_records_keep_the_rest_of_the_state(
        caplog: pytest.LogCaptureFixture) -> None:
    """Damaged forecast records once cost the whole state: the stabilisation, cooldown and
    rate-limit memory went with them. Now only the records are learnt again, and the
    loss is logged (it was silent)."""
    good = run(spec(), FixedChain(100.0), current=3).state.to_dict()
    damaged = {**good, "forecasts": {"aci": {"alpha": "many"}}}
    state = previous_state({"planState": damaged}, "shop/web")
    assert state.recommendations == PlanState.from_dict(good).recommendations != ()
    assert state.records == PlanState.initial().records
    assert "shop/web: status.planState: plan state is malformed" in caplog.text
    assert "the rest is kept" in caplog.text
    caplog.clear()
    assert previous_state({"planState": {**damaged, "scaleEvents": "x"}}) == \
        PlanState.initial()
    assert "starts from the initial state" in caplog.text


@pytest.mark.parametrize("current", [-1, True, 2.0, None, "3"])
def test_bad_current_replicas(current: object) -> None:
    with pytest.raises(InvalidInputError, match="current replicas"):
        run(spec(), FixedChain(1.0), current=current)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [1.7e12, -1.0])
def test_now_out_of_the_calendars_range(now: float) -> None:
    """Milliseconds for seconds was a raw 'year 55848 is out of range' from datetime."""
    with pytest.raises(InvalidInputError, match="now must be Unix seconds between 1970 and "
                                                "9999"):
        plan(history_at(T0), spec(), PlanState.initial(), now, current_replicas=3,
             chain=FixedChain(1.0))


@pytest.mark.parametrize("now", [math.nan, math.inf, None, "now"])
def test_bad_now(now: object) -> None:
    with pytest.raises(InvalidInputError, match="now must be a finite time"):
        plan(history_at(T0), spec(), PlanState.initial(), now,  # type: ignore[arg-type]
             current_replicas=3, chain=FixedChain(1.0))


def test_plan_with_the_real_chain_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    n = 3 * 1440
    t = np.arange(n)
    rate = 50 + 30 * np.sin(2 * np.pi * t / 1440)
    values = rng.poisson(rate * STEP) / STEP
    now = T0
    history = Series(now - n * STEP, STEP, values)
    policy = spec(forecast=ForecastSettings(models=("arima", "ma")))
    a = plan(history, policy, PlanState.initial(), now, current_replicas=5)
    b = plan(history, policy, PlanState.initial(), now, current_replicas=5)
    assert a.to_dict() == b.to_dict()
    assert a.served_by in ("arima", "ma")
    assert a.metrics_available


# --- invariants --------------------------------------------------------------------------

levels = st.one_of(st.none(), st.floats(min_value=0, max_value=5000, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(
    min_r=st.integers(1, 20), extra=st.integers(0, 200), current=st.integers(0, 400),
    steps=st.lists(st.tuples(levels, st.integers(0, 400)), min_size=1, max_size=8),
    up_pods=st.integers(1, 10), down_pct=st.integers(1, 100),
)
def test_plan_invariants(min_r: int, extra: int, current: int,
                         steps: list[tuple[float | None, int]], up_pods: int,
                         down_pct: int) -> None:
    policy = spec(min_replicas=min_r, max_replicas=min_r + max(extra, 1),
                  behavior=Behavior(scale_up=(RateLimit("Pods", up_pods, 60),),
                                    scale_down=(RateLimit("Percent", down_pct, 60),)))
    state = PlanState.initial()
    now = T0
    for i, (level, observed) in enumerate(steps):
        cur = current if i == 0 else observed
        chain = FixedChain(level)
        p = run(policy, chain, current=cur, now=now, state=state)
        again = run(policy, FixedChain(level), current=cur, now=now, state=state)
        assert p.to_dict() == again.to_dict()  # deterministic
        assert policy.min_replicas <= p.desired_replicas <= policy.max_replicas
        clamped = any(lim.reason in ("TooFewReplicas", "TooManyReplicas") for lim in p.limits)
        if level is None:
            # Every forecaster failed, the metrics are there: sized for the observed rate.
            assert p.metrics_available and "AllForecastersFailed" in p.reasons
        if not clamped:
            # Each decision is its own 60 s period: the rate limits bound the step.
            assert p.desired_replicas - cur <= max(up_pods, 0)
            assert cur - p.desired_replicas <= cur - math.floor(cur * (1 - down_pct / 100))
        state = p.state
        now += 60


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="minReplicas"):
        spec(min_replicas=5, max_replicas=2)
    with pytest.raises(InvalidInputError, match="percentile"):
        replace(SLO(), percentile=1.5)
    with pytest.raises(InvalidInputError, match="unknown forecast model"):
        ForecastSettings(models=("prophet",))  # type: ignore[arg-type]
