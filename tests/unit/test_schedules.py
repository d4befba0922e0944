"""Declared events: cron in a time zone, counted from lead time before they start, floors,
ceilings and multipliers in plan(), and honoured by the backtest."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import forescale.backtest.forescale_policy as fp
from forescale.backtest.forescale_policy import build_forescale_policy
from forescale.backtest.world import ProtocolParameters, build_world, simulate
from forescale.core.errors import InvalidInputError
from forescale.core.plan import PlanState, plan
from forescale.core.schedules import Schedule, ScheduleEffect, bound, effect
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec

PARIS = ZoneInfo("Europe/Paris")


def paris(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()  # type: ignore[misc]


def launch(**kw: object) -> Schedule:
    args: dict[str, object] = {"name": "launch", "cron": "0 9 * * 1", "time_zone":
                               "Europe/Paris", "duration_seconds": 3600, "min_replicas": 20}
    args.update(kw)
    return Schedule(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "message"), [
    ({"cron": "61 9 * * 1"}, "not a valid cron expression"),
    ({"cron": "0 0 9 * * 1"}, "5 fields"),
    ({"cron": "soon"}, "not a valid cron expression"),
    # Valid syntax, no such day: it parsed, then failed every decision of the policy.
    ({"cron": "0 9 30 2 *"}, "never matches a date"),
    ({"cron": "0 0 31 4 *"}, "never matches a date"),
    ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
    # A tzdata directory (the CRD's pattern allows it) or a name too long for the file
    # system: an OSError escaped, so the policy failed every decision (DecisionFailed).
    ({"time_zone": "Europe"}, "unknown time zone"),
    ({"time_zone": "a" * 300}, "unknown time zone"),
    # croniter draws R at random: the plan changed at every call.
    ({"cron": "R R * * *"}, "draws a time"),
    ({"cron": "0 R(8-10) * * *"}, "draws a time"),
    ({"cron": "R/15 * * * *"}, "draws a time"),
    ({"duration_seconds": 0}, "durationSeconds must be positive"),
    ({"duration_seconds": 40 * 86400}, "at most 31 days"),
    ({"min_replicas": None}, "set minReplicas, maxReplicas or forecastMultiplier"),
    ({"min_replicas": 5, "max_replicas": 2}, "must not exceed"),
    ({"min_replicas": 0}, "positive integer"),
    ({"min_replicas": None, "forecast_multiplier": 0.0}, "positive number"),
])
def test_bad_schedules_are_one_line(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        launch(**kw)
    assert "\n" not in str(info.value) and "'launch'" in str(info.value)


def test_names_with_r_and_h_are_not_drawn_times() -> None:
    """MAR, APR, THU, FRI are names, not draws."""
    assert launch(cron="0 9 * MAR,APR THU-FRI").next_start(paris(2026, 3, 1, 0, 0)) == \
        paris(2026, 3, 5, 9, 0)


def test_a_schedule_near_the_last_accepted_time_has_no_next_start() -> None:
    """plan() accepts times up to the end of the year 9999; a start after it is none."""
    s = launch(cron="@yearly", time_zone="UTC")
    last = datetime(9999, 12, 31, 23, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert s.next_start(last) is None
    assert effect([s], (last - 30 * 86400, last)).active == ()
    p = plan(Series.from_array(np.full(120, 5.0), start_seconds=last - 7200,
                               step_seconds=60.0),
             PolicySpec(service_rate_per_replica=10.0,
                        schedules=(launch(cron="0 9 * * *", time_zone="UTC"),)),
             PlanState.initial(), last, current_replicas=3)
    assert p.schedules is not None and p.schedules.next_start_seconds is None


def test_a_leap_day_is_a_date() -> None:
    """29 February comes every four years: a schedule for it is kept and found."""
    s = launch(cron="0 9 29 2 *")
    assert s.next_start(paris(2026, 3, 1, 0, 0)) == paris(2028, 2, 29, 9, 0)
    assert s.last_start(paris(2026, 3, 1, 0, 0)) == paris(2024, 2, 29, 9, 0)


def test_cron_is_read_in_its_time_zone_across_daylight_saving() -> None:
    s = launch()
    # Paris moves from UTC+1 to UTC+2 on Sunday 2026-03-29.
    before, after = paris(2026, 3, 23, 9, 0), paris(2026, 3, 30, 9, 0)
    assert after - before == 7 * 86400 - 3600  # one hour less between the two Mondays
    assert s.next_start(paris(2026, 3, 22, 12, 0)) == before
    assert s.next_start(before) == after
    assert s.last_start(after) == after  # a start exactly at t counts
    assert s.last_start(after - 1) == before
    assert datetime.fromtimestamp(after, tz=PARIS).hour == 9


@pytest.mark.parametrize(("cron", "starts"), [
    ("30 1 * * *", ["05:30"]),  # 01:30 EDT only: not again at 01:30 EST
    ("@daily", ["04:00"]),
    # Every hour: both passes of 01:30 (05:30 and 06:30 UTC), an hour having passed.
    ("30 * * * *", ["03:30", "04:30", "05:30", "06:30"]),
    # A wildcard minute is a wildcard job to cron(8) too: both passes of 01:00-01:45.
    ("*/30 1 * * *", ["05:00", "05:30", "06:00", "06:30"]),
])
def test_a_fixed_time_starts_once_when_the_clocks_go_back(cron: str,
                                                          starts: list[str]) -> None:
    """A daily 01:30 in New York started at 01:30 EDT and again an hour later at 01:30
    EST: a one-hour batch window's ceiling held for two hours on that night."""
    batch = Schedule("batch", cron, 3600.0, "America/New_York", max_replicas=2)
    utc = ZoneInfo("UTC")
    night = datetime(2024, 11, 3, 3, 59, tzinfo=utc).timestamp()  # 23:59 EDT
    found = [datetime.fromtimestamp(a, tz=utc).strftime("%H:%M")
             for a, _ in batch.occurrences(night + 60, night + 3 * 3600 + 1)]
    assert found == starts
    if len(starts) == 1:
        active = sum(effect((batch,), (t, t + 1)).ceiling is not None
                     for t in np.arange(night + 60, night + 6 * 3600, 60.0))
        assert active == 60


def test_an_event_counts_from_lead_time_before_it_starts() -> None:
    s = launch()
    start = paris(2026, 3, 30, 9, 0)
    lead_plus_period = 180.0
    def active_at(now: float) -> bool:
        return bool(effect([s], (now, now + lead_plus_period)).active)
    assert not active_at(start - lead_plus_period)   # window ends exactly at the start
    assert active_at(start - lead_plus_period + 60)  # the decision that must ask for it
    assert active_at(start + 3599)
    assert not active_at(start + 3600)               # over
    e = effect([s], (start - 120, start + 60))
    assert e == ScheduleEffect(active=("launch",), floor=20, ceiling=None, multiplier=1.0,
                               next_name="launch", next_start_seconds=start)


def test_several_events_combine() -> None:
    start = paris(2026, 3, 30, 9, 0)
    schedules = [launch(), launch(name="big", min_replicas=30),
                 launch(name="cap", min_replicas=None, max_replicas=25),
                 launch(name="x3", min_replicas=None, forecast_multiplier=3.0),
                 launch(name="x2", min_replicas=None, forecast_multiplier=2.0),
                 launch(name="later", cron="0 10 * * 1")]
    e = effect(schedules, (start, start + 180))
    assert e.active == ("launch", "big", "cap", "x3", "x2")
    assert (e.floor, e.ceiling, e.multiplier) == (30, 25, 3.0)
    assert (e.next_name, e.next_start_seconds) == ("later", start + 3600)
    # A floor above a ceiling wins: the declared event gets its capacity.
    assert bound(10, e)[:2] == (30, "ScheduledFloor")
    assert bound(40, ScheduleEffect(active=("cap",), ceiling=25)) == (
        25, "ScheduledCeiling", "capped at 25 replicas by schedule cap")
    assert bound(12, ScheduleEffect()) == (12, None, "")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.one_of(st.none(), st.integers(1, 100)),
       st.one_of(st.none(), st.integers(1, 100)))
def test_bound_only_moves_towards_the_declared_bounds(proposed: int, floor: int | None,
                                                      ceiling: int | None) -> None:
    result, reason, _ = bound(proposed, ScheduleEffect(active=("e",), floor=floor,
                                                       ceiling=ceiling))
    if floor is not None:
        assert result >= floor
    if ceiling is not None and (floor is None or floor <= ceiling):
        assert result <= ceiling
    assert (reason is None) == (result == proposed)


# --- in plan() ----------------------------------------------------------------------------

STEP = 60.0


def history(now: float, rate: float = 30.0, n: int = 120) -> Series:
    values = rate + np.random.default_rng(0).normal(0, 0.5, n)
    return Series(now - n * STEP, STEP, values)


def spec(**kw: object) -> PolicySpec:
    base = PolicySpec(service_rate_per_replica=10.0, max_replicas=200,
                      forecast=ForecastSettings(models=("ma",)))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_plan_raises_to_the_floor_before_the_event_starts() -> None:
    start = paris(2026, 3, 30, 9, 0)
    now = start - 120.0  # lead 120 s: this decision's pods are ready at 09:00
    quiet = plan(history(now), spec(), PlanState.initial(), now, current_replicas=5)
    assert quiet.desired_replicas < 20
    result = plan(history(now), spec(schedules=(launch(),)), PlanState.initial(), now,
                  current_replicas=5)
    assert result.desired_replicas == 20
    assert "ScheduledFloor" in result.reasons
    assert result.schedules is not None and result.schedules.active == ("launch",)
    # The policy's own bounds still win.
    capped = plan(history(now), spec(schedules=(launch(),), max_replicas=12),
                  PlanState.initial(), now, current_replicas=5)
    assert capped.desired_replicas == 12 and "TooManyReplicas" in capped.reasons


def test_plan_multiplies_the_planned_rate_for_an_event() -> None:
    start = paris(2026, 3, 30, 9, 0)
    now = start + 600.0
    base = plan(history(now), spec(), PlanState.initial(), now, current_replicas=5)
    tripled = plan(history(now), spec(schedules=(launch(min_replicas=None,
                                                        forecast_multiplier=3.0),)),
                   PlanState.initial(), now, current_replicas=5)
    assert base.planned_arrival_rate is not None
    assert tripled.planned_arrival_rate == pytest.approx(3 * base.planned_arrival_rate)
    assert tripled.desired_replicas > base.desired_replicas


def test_a_reducing_multiplier_counts_only_while_it_covers_the_window() -> None:
    """A quiet period's multiplier (below 1) counted from lead time before it started, so
    replicas were cut minutes before the traffic dropped, and until it ended, so the pods
    for the returning traffic were asked for only then. A raising one still counts early."""
    quiet = launch(min_replicas=None, forecast_multiplier=0.1)  # Mondays 09:00-10:00
    start = paris(2026, 3, 30, 9, 0)
    lead = 180.0  # the planning window: lead time plus one decision period
    for now, expected in [(start - 120, 1.0), (start, 0.1), (start + 3600 - lead, 0.1),
                          (start + 3600 - lead + 1, 1.0), (start + 3600 - 60, 1.0)]:
        e = effect((quiet,), (now, now + lead))
        assert e.multiplier == expected, (now - start, e)
        assert e.active == ("launch",)
    rush = launch(min_replicas=None, forecast_multiplier=3.0)
    assert effect((rush,), (start - 120, start - 120 + lead)).multiplier == 3.0
    both = (quiet, launch(name="rush", min_replicas=None, forecast_multiplier=2.0,
                          duration_seconds=60))
    assert effect(both, (start - 120, start - 120 + lead)).multiplier == 2.0


def test_a_multiplier_never_scales_the_rate_already_observed() -> None:
    """The multiplier scaled whichever candidate set the rate, the reactive floor too: in a
    0.1 window whose traffic had not dropped, the plan sized for a tenth of what it saw
    (and reported it as the observed rate)."""
    start = paris(2026, 3, 30, 9, 0)
    now = start + 600.0
    quiet = launch(min_replicas=None, forecast_multiplier=0.1)
    seen = plan(history(now, rate=500.0), spec(schedules=(quiet,)), PlanState.initial(),
                now, current_replicas=60)
    assert seen.rate_source is not None and seen.rate_source.reason == "ReactiveFloor"
    assert seen.planned_arrival_rate == pytest.approx(500.0, rel=0.01)
    assert seen.desired_replicas >= 51
    bound = seen.rate_source.candidates["ForecastBound"]
    assert bound < 100 and seen.rate_source.candidates["ReactiveFloor"] > 450


def test_a_raising_multiplier_applies_to_the_observed_rate_when_nothing_forecasts() -> None:
    """With no forecast (a young service whose chain has no moving average), the multiplier
    had nothing left to scale once it spared the observed rate: a declared launch got no
    capacity. There, the observed rate stands for the forecast (never to reduce it)."""
    start = paris(2026, 3, 30, 9, 0)
    now = start + 600.0
    young = history(now, rate=100.0, n=30)
    arima = spec(forecast=ForecastSettings(models=("arima",)))
    plain = plan(young, arima, PlanState.initial(), now, current_replicas=5)
    assert plain.served_by is None and plain.planned_arrival_rate == pytest.approx(100.0,
                                                                                    rel=0.02)
    rush = launch(min_replicas=None, forecast_multiplier=3.0)
    tripled = plan(young, replace(arima, schedules=(rush,)), PlanState.initial(), now,
                   current_replicas=5)
    assert tripled.planned_arrival_rate == pytest.approx(3 * plain.planned_arrival_rate)
    assert tripled.rate_source is not None and "x3 by an active schedule" in \
        tripled.rate_source.message
    quiet = launch(min_replicas=None, forecast_multiplier=0.1)
    held = plan(young, replace(arima, schedules=(quiet,)), PlanState.initial(), now,
                current_replicas=5)
    assert held.planned_arrival_rate == plain.planned_arrival_rate


def test_plan_ceiling_holds_a_batch_window() -> None:
    now = paris(2026, 3, 30, 2, 10)
    nightly = Schedule("batch", "0 2 * * *", 3600, "Europe/Paris", max_replicas=3)
    free = plan(history(now, rate=80), spec(), PlanState.initial(), now, current_replicas=8)
    held = plan(history(now, rate=80), spec(schedules=(nightly,)), PlanState.initial(), now,
                current_replicas=8)
    assert free.desired_replicas > 3
    assert held.desired_replicas == 3 and "ScheduledCeiling" in held.reasons


def test_an_event_keeps_its_bounds_while_metrics_are_missing() -> None:
    """A Prometheus blip just before a launch must not cancel the capacity declared for it:
    holding for lack of metrics, the plan still raises to the floor (and keeps a batch
    window's ceiling), and the status can show the active event."""
    start = paris(2026, 3, 30, 9, 0)
    now = start - 120.0
    stale = history(now - 900.0)  # the last 15 minutes missing
    held = plan(stale, spec(schedules=(launch(),)), PlanState.initial(), now,
                current_replicas=5)
    assert not held.metrics_available and "HoldingReplicas" in held.reasons
    assert held.desired_replicas == 20 and "ScheduledFloor" in held.reasons
    assert held.schedules is not None and held.schedules.active == ("launch",)
    plain = plan(stale, spec(), PlanState.initial(), now, current_replicas=5)
    assert plain.desired_replicas == 5 and "ScheduledFloor" not in plain.reasons
    night = paris(2026, 3, 30, 2, 10)
    nightly = Schedule("batch", "0 2 * * *", 3600, "Europe/Paris", max_replicas=3)
    capped = plan(history(night - 900.0, rate=80), spec(schedules=(nightly,)),
                  PlanState.initial(), night, current_replicas=8)
    assert capped.desired_replicas == 3 and "ScheduledCeiling" in capped.reasons


# --- in the backtest ----------------------------------------------------------------------

def test_backtest_shows_what_a_schedule_costs() -> None:
    """The backtest replays plan() at each step's simulated time: a floor schedule shows up
    as replicas during its occurrences and as extra pod-hours."""
    n, warmup = 1000, 900
    minutes = np.arange(n)
    counts = np.random.default_rng(4).poisson(600 + 200 * np.sin(2 * np.pi * minutes / 180))
    params = ProtocolParameters(p999_multiple=None, warmup_seconds=warmup * 60.0)
    world = build_world(Series.from_array(counts / 60.0, start_seconds=0.0), params)
    base = replace(fp.world_policy_spec(world.params, world.step_seconds),
                   forecast=ForecastSettings(models=("ma",), history_seconds=warmup * 60.0))
    # Every hour at :30 for 10 minutes, in UTC (the trace starts at the epoch).
    floor = Schedule("half-past", "30 * * * *", 600, min_replicas=40)

    def replay(policy_spec: PolicySpec) -> tuple[np.ndarray, float]:
        policy, _ = build_forescale_policy(world, policy_spec, lstm_epochs=0)
        with policy.replay_scope():
            run = simulate(world, policy)
        return run.requested, run.cost_pod_hours

    plain, plain_cost = replay(base)
    scheduled, scheduled_cost = replay(replace(base, schedules=(floor,)))
    starts = world.first_step + np.arange(len(scheduled))  # decision step index
    minute_of_hour = (starts * world.step_seconds / 60) % 60
    inside = (minute_of_hour >= 30) & (minute_of_hour < 40)
    assert inside.any() and (scheduled[inside] >= 40).all()
    assert plain[inside].max() < 40
    assert scheduled_cost > plain_cost


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["0 9 * * 1", "*/15 * * * *", "30 2 * * *", "0 10 1 * *", "@hourly"]),
       st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
       st.integers(60, 7200), st.integers(0, 400 * 86400), st.integers(1, 7200))
def test_the_fast_overlap_agrees_with_the_occurrences(cron: str, zone: str, duration: int,
                                                      offset: int, width: int) -> None:
    s = Schedule("s", cron, duration, zone, min_replicas=1)
    start = 1_767_225_600.0 + offset  # 2026-01-01 onwards, DST changes included
    overlaps, nxt = s.overlap_and_next(start, start + width)
    assert overlaps == bool(s.occurrences(start, start + width))
    assert nxt == s.next_start(start)
