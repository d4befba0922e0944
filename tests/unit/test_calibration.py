"""Calibrated intensity bounds and track records (forescale.core.calibration)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import numpy as np
import pytest

from forescale.core.calibration import (
    ACI_SLOW_GAMMA,
    BIN_WIDTH,
    LOW,
    MAX_PENDING_VALUES,
    MIN_COMMON,
    MIN_WEIGHT,
    Bound,
    Histogram,
    Pending,
    Records,
    Scored,
    day_level,
    step_group,
)
from forescale.core.errors import InvalidInputError
from forescale.core.series import Series

STEP = 60.0
T0 = 1_700_000_000.0
HALF_LIFE = 86400.0


def _intensity(n: int) -> np.ndarray:
    """A daily cycle between 20 and 100 req/s: the true arrival intensity."""
    t = np.arange(n) * STEP
    return 60.0 + 40.0 * np.sin(2 * np.pi * t / 86400.0)


def _centred(values: np.ndarray, k: int, width: int = 5) -> float:
    half = width // 2
    return float(values[k - half:k + width - half].mean())


def _walk_coverage(observed: np.ndarray, means_at: Callable[[int], np.ndarray],
                   nominal: float, *, model_factor: float, scored_from: int = 3000,
                   counted: Callable[[int], bool] = lambda t: True) -> tuple[float, Records]:
    """Forecasts ``means_at(t)`` of 3 steps at every minute t, scored as they are observed;
    the share of the observed intensities (the centred 5-minute mean) the calibrated bound
    covered at the minutes ``counted`` from ``scored_from`` on (a day and more of
    calibration: every bound there is calibrated), and the records learnt."""
    records = Records()
    hits = scored = 0
    for t in range(1500, len(observed) - 10):
        history = Series(T0, STEP, observed[:t])
        now = history.end_seconds
        records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=now)
        means = means_at(t)
        if t >= scored_from and counted(t):
            bound = records.upper_bound(means, means * model_factor, history,
                                        coverage=nominal, now=now, half_life=HALF_LIFE,
                                        intensity_steps=5)
            assert bound.calibrated, bound.message
            hits += sum(_centred(observed, t + h) <= bound.upper[h] for h in range(3))
            scored += 3
        records.record(now, "ma", served=True, track=False, means=means)
    return hits / scored, records


@pytest.mark.parametrize("nominal", [0.8, 0.9, 0.95])
def test_conformal_coverage_matches_nominal_on_a_synthetic_process(nominal: float) -> None:
    """Poisson counts around a known intensity, forecast by a model with its own
    multiplicative error: the calibrated bound covers the observed intensity (the centred
    5-minute mean) at the nominal rate, within 2 points, out of sample."""
    rng = np.random.default_rng(7)
    n = 9000
    truth = _intensity(n)
    observed = rng.poisson(truth * STEP) / STEP
    # The model is right on average but wrong by ~10 % (lognormal) at each origin.
    model_error = np.exp(rng.normal(0.0, 0.1, size=n))
    coverage, _ = _walk_coverage(observed, lambda t: truth[t:t + 3] * model_error[t], nominal,
                                 model_factor=10)
    assert abs(coverage - nominal) <= 0.02, f"coverage {coverage:.3f} vs nominal {nominal}"


def test_bound_is_the_models_own_until_enough_is_scored() -> None:
    records = Records()
    history = Series(T0, STEP, np.full(100, 10.0))
    bound = records.upper_bound(np.full(3, 10.0), np.full(3, 99.0), history, coverage=0.99,
                                now=history.end_seconds, half_life=HALF_LIFE, intensity_steps=5)
    assert not bound.calibrated
    assert list(bound.upper) == [99.0] * 3
    assert "too few" in bound.message


def test_calibration_adapts_when_the_error_grows() -> None:
    """Weights halve every half-life: when the forecasts turn worse, coverage recovers to
    nominal within a few half-lives, where a frozen calibration stays far below it."""
    rng = np.random.default_rng(1)
    n, half_life, nominal = 6000, 6 * 3600.0, 0.9
    observed = rng.poisson(np.full(n, 50.0) * STEP) / STEP
    records = Records()
    frozen: Records | None = None
    hits = {"adaptive": 0, "frozen": 0}
    scored = 0
    for t in range(100, n - 10):
        history = Series(T0, STEP, observed[:t])
        now = history.end_seconds
        records.score(history, intensity_steps=5, half_life=half_life, now=now)
        error_sd = 0.02 if t < 3000 else 0.3
        means = np.full(3, 50.0 * math.exp(rng.normal(0, error_sd)))
        if t == 3000:
            frozen = records.copy()
        if t >= 4500:
            assert frozen is not None
            y = _centred(observed, t)
            # The frozen copy keeps its weights (an infinite half-life when asked).
            for name, r, life in (("adaptive", records, half_life), ("frozen", frozen, 1e12)):
                bound = r.upper_bound(means, means * 10, history, coverage=nominal, now=now,
                                      half_life=life, intensity_steps=5)
                assert bound.calibrated
                hits[name] += y <= bound.upper[0]
            scored += 1
        records.record(now, "ma", served=True, track=False, means=means)
    assert hits["adaptive"] / scored >= nominal - 0.03
    assert hits["frozen"] / scored < nominal - 0.2


def test_pending_forecasts_stay_within_the_status_size_budget() -> None:
    """A day's lead time at one decision a minute: 1,440 forecasts of 1,500 steps were
    pending at once, ~13 MB of status where etcd takes 1.5 MiB. Past the budget new ones
    wait until older ones are scored, and recording resumes then."""
    records = Records()
    horizon = 1500
    for k in range(1440):
        records.record(T0 + k * STEP, "ma", served=True, track=False,
                       means=np.full(horizon, 10.0))
    held = sum(len(p.means) for p in records.pending)
    assert held <= MAX_PENDING_VALUES and len(records.pending) == MAX_PENDING_VALUES // horizon
    assert len(json.dumps(records.to_dict())) < 1_000_000
    # The first forecast's outcome is observed: it is scored, and a new one fits again.
    history = Series(T0, STEP, np.full(horizon + 10, 10.0))
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
    before = len(records.pending)
    assert before < MAX_PENDING_VALUES // horizon
    records.record(history.end_seconds, "ma", served=True, track=False,
                   means=np.full(horizon, 10.0))
    assert len(records.pending) == before + 1


def test_track_records_are_scored_only_after_the_outcome_is_observed() -> None:
    records = Records()
    values = np.full(200, 10.0)
    history = Series(T0, STEP, values[:100])
    records.record(history.end_seconds, "lstm", served=False, track=True,
                   means=np.full(3, 12.0))
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
    assert records.recent_error("lstm") == (None, 0)  # the future is not known yet
    later = Series(T0, STEP, values[:105])
    records.score(later, intensity_steps=5, half_life=HALF_LIFE, now=later.end_seconds)
    error, n = records.recent_error("lstm")
    assert n == 1 and error == pytest.approx(0.2)
    assert records.pending == []


def test_track_records_are_scored_against_the_intensity_not_the_raw_steps() -> None:
    """One noisy minute inside a three-step horizon moves the raw mean by a fifth; the
    intensity over the horizon (here the seven steps from two before its first to two
    after its last) by a twelfth — the rate the bound and the SLO are judged on."""
    records = Records()
    values = np.full(200, 10.0)
    values[101] = 16.0  # the middle of the horizon
    history = Series(T0, STEP, values[:100])
    records.record(history.end_seconds, "ma", served=False, track=True,
                   means=np.full(3, 10.0))
    later = Series(T0, STEP, values[:110])
    records.score(later, intensity_steps=5, half_life=HALF_LIFE, now=later.end_seconds)
    (scored,) = records.tracks["ma"]
    assert scored.actual == pytest.approx((6 * 10.0 + 16.0) / 7)
    assert scored.actual != pytest.approx(np.mean(values[100:103]))


def test_compare_needs_common_origins() -> None:
    records = Records()
    values = np.full(400, 10.0)
    for k in range(MIN_COMMON):
        history = Series(T0, STEP, values[:100 + 5 * k])
        records.score(history, intensity_steps=5, half_life=HALF_LIFE,
                      now=history.end_seconds)
        records.record(history.end_seconds, "lstm", served=True, track=True,
                       means=np.full(3, 13.0))
        if k:
            records.record(history.end_seconds, "arima", served=False, track=True,
                           means=np.full(3, 10.5))
    history = Series(T0, STEP, values)
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
    assert records.compare("lstm", "arima") is None  # one origin short
    assert records.recent_error("lstm") == (pytest.approx(0.3), MIN_COMMON)


def test_records_round_trip_through_json() -> None:
    rng = np.random.default_rng(3)
    observed = rng.poisson(np.full(600, 20.0) * STEP) / STEP
    records = Records()
    for t in range(100, 600):
        history = Series(T0, STEP, observed[:t])
        records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
        records.record(history.end_seconds, "ma", served=True, track=t % 5 == 0,
                       means=np.full(3, 20.0))
    again = Records.from_dict(json.loads(json.dumps(records.to_dict())))
    history = Series(T0, STEP, observed)
    for r in (records, again):
        r.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
    a = records.upper_bound(np.full(3, 20.0), np.full(3, 99.0), history, coverage=0.9,
                            now=history.end_seconds, half_life=HALF_LIFE, intensity_steps=5)
    b = again.upper_bound(np.full(3, 20.0), np.full(3, 99.0), history, coverage=0.9,
                          now=history.end_seconds, half_life=HALF_LIFE, intensity_steps=5)
    assert a.calibrated and np.allclose(a.upper, b.upper, rtol=1e-3)
    assert records.recent_error("ma")[1] == again.recent_error("ma")[1]


@pytest.mark.parametrize("bad", [
    {"pending": [[1.0, "ma", 1, []]]},
    {"pending": [[1.0, "ma", 1, [float("nan")]]]},
    {"calibration": {"0:all": [None, [[9999, 1.0]]]}},
    {"tracks": {"ma": [[1.0, 2.0]]}},
    {"calibration": {"0:all": "nonsense"}},
    # A status's "nan" or "inf" parses as a float, then failed every decision (round(nan)).
    {"pending": [["nan", "ma", 1, [50.0]]]},
    {"aci": {"decisions": [["nan", 5]]}},
    {"aci": {"decisions": [["inf", 5]]}},
    {"aci": {"fastTime": "inf"}},
    {"tracks": {"ma": [[1.0, "nan", 2.0]]}},
    {"calibration": {"0:all": ["-inf", [[3, 1.0]]]}},
    # Each counted as a miss, pushing the miss level down; and int(1e999) overflows.
    {"aci": {"decisions": [[1.0, -3]]}},
    {"aci": {"decisions": [[1.0, 1e999]]}},
    {"calibration": {"0:all": [None, [[1e999, 1.0]]]}},
])
def test_malformed_records_are_refused_with_one_line(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match="forecast records are malformed"):
        Records.from_dict(bad)


def test_histogram_quantile_is_interpolated_and_finite_sample_corrected() -> None:
    hist = Histogram()
    for score in np.linspace(-0.5, 0.5, 98):
        hist.add(float(score))
    # Split conformal at 0.99 needs n >= 99 scores for a finite bound.
    assert hist.quantile(0.99) == math.inf
    hist.add(0.5)
    assert hist.quantile(0.99) == pytest.approx(0.5, abs=0.03)  # the largest score
    assert hist.quantile(0.9) == pytest.approx(0.41, abs=0.02)  # interpolated in its bin


def test_adaptive_conformal_inference_holds_the_miss_rate_at_the_budget() -> None:
    """The miss level moves with the plan's own misses: a plan that provisions for the
    forecast's bound at level ``alpha`` misses about ``budget`` of the time in the long
    run, whether the forecasts are too narrow or too wide to start with."""
    rng = np.random.default_rng(11)
    n, budget = 20000, 0.02
    truth = np.full(n, 100.0)
    observed = rng.poisson(truth * STEP) / STEP
    for error_sd in (0.02, 0.2):  # the histogram does not know this; the misses tell it
        records = Records()
        misses = decided = 0
        for t in range(2000, n - 10):
            history = Series(T0, STEP, observed[:t])
            now = history.end_seconds
            records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=now)
            records.score_decisions(history, intensity_steps=5, budget=budget, now=now,
                                    needed=lambda rate: int(np.ceil(rate)))
            means = np.full(3, 100.0 * math.exp(rng.normal(0, error_sd)))
            bound = records.upper_bound(means, means * 2, history,
                                        coverage=1 - records.level(budget), now=now,
                                        half_life=HALF_LIFE, intensity_steps=5)
            replicas = int(np.ceil(bound.upper[2]))
            records.record(now, "ma", served=True, track=False, means=means)
            records.record_decision(now + 2 * STEP, replicas, STEP)
            if t >= 8000:
                decided += 1
                misses += int(np.ceil(_centred(observed, t + 2))) > replicas
        assert abs(misses / decided - budget) <= 0.01, (error_sd, misses / decided)


def test_a_budget_edit_moves_the_learnt_miss_level_with_it() -> None:
    """The miss level learnt at a 5 % budget (0.12: the floors and the stabilisation
    protect too) starts at the same multiple of a new 0.3 % budget, not at 0.12, which the
    controller's small step took days to bring down. A state from before the budget was
    kept is left as it is, and an unchanged budget changes nothing."""
    records = Records(alpha=0.12, fast=0.01, budget=0.05, basis="a")
    records.rebase(budget=0.003, basis="a")
    assert records.alpha == pytest.approx(0.0072) and records.fast == pytest.approx(0.0006)
    assert records.level(0.003) == pytest.approx(0.0078) and records.budget == 0.003
    records.rebase(budget=0.003, basis="a")
    assert records.alpha == pytest.approx(0.0072)
    old = Records(alpha=0.12)
    old.rebase(budget=0.003, basis="a")
    assert old.alpha == 0.12 and old.budget == 0.003


def test_decisions_made_under_another_sizing_are_not_scored() -> None:
    """Halving the service rate per pod made every pending decision a "miss" under the new
    sizing, and the miss level fell to its floor for hours: they are dropped instead."""
    budget = 0.003
    history = Series(T0, STEP, np.full(600, 100.0))
    now = T0 + 600 * STEP

    def after_edit(basis: str) -> float:
        records = Records(alpha=0.008, budget=budget, basis="before",
                          decisions=[(T0 + (500 + i) * STEP, 12) for i in range(5)])
        records.rebase(budget=budget, basis=basis)
        records.score_decisions(history, intensity_steps=5, budget=budget, now=now,
                                needed=lambda rate: int(np.ceil(rate / 5.0)))  # μ = 5
        return records.level(budget)

    assert after_edit("before") < 0.002  # judged by the new sizing: five misses
    assert after_edit("after") == pytest.approx(0.008)  # dropped: the level stands


def test_what_was_learnt_on_another_grid_is_learnt_again() -> None:
    """Pending forecasts hold one mean per step, histograms one per horizon step: after the
    operator's step changes (15 s -> 60 s) they would be scored and read at the wrong
    horizon, so they are dropped; the decisions, kept by time, and the miss level stay.
    A state from before the grid was kept is taken as it is."""
    def learnt(grid: str | None) -> Records:
        hist = Histogram()
        hist.add(0.1)
        return Records(pending=[Pending(T0, "ma", True, True, (1.0, 2.0))],
                       tracks={"ma": [Scored(T0, 1.0, 1.0)]},
                       histograms={"0:all": hist}, alpha=0.004,
                       decisions=[(T0 + 60.0, 3)], grid=grid)

    moved = learnt("15/20")
    moved.rebase(budget=0.003, basis="a", grid="60/5")
    assert (moved.pending, moved.tracks, moved.histograms) == ([], {}, {})
    assert moved.decisions == [(T0 + 60.0, 3)] and moved.alpha == 0.004
    assert moved.grid == "60/5"
    for grid in ("60/5", None):
        kept = learnt(grid)
        kept.rebase(budget=0.003, basis="a", grid="60/5")
        assert kept.pending and kept.tracks and kept.histograms and kept.grid == "60/5"
    moved.artifacts["lstm"] = "0123abcd"
    again = Records.from_dict(json.loads(json.dumps(moved.to_dict())))
    assert again.grid == "60/5" and again.artifacts == {"lstm": "0123abcd"}


def test_decisions_more_often_than_the_step_count_each_outcome_once() -> None:
    """A 15 s decision period on a 60 s history: four decisions a step recorded the same
    forecast four times (the histograms trusted a quarter of the evidence) and four
    decisions ready in one step (the miss level moved four times per outcome)."""
    records = Records()
    means = np.array([50.0, 50.0])
    for i in range(8):  # two steps' worth of decisions, 15 s apart
        now = T0 + 15.0 * i
        origin = T0 + 60.0 * (i // 4)  # the history's end moves once a step
        records.record(origin, "ma", served=True, track=False, means=means)
        records.record_decision(now + 120.0, 10 + i, STEP)
    assert [p.origin for p in records.pending] == [T0, T0 + 60.0]
    slots = [math.floor(t / STEP) for t, _ in records.decisions]
    assert len(slots) == len(set(slots))
    assert records.decisions[-1] == (T0 + 105.0 + 120.0, 17)  # the latest of its step


def test_a_stage_record_a_day_old_is_forgotten() -> None:
    """After downtime, or a stage removed from the chain and added back a week later, its
    week-old track and bound width gated a healthy model out at once. Records last scored
    a day or more ago are dropped; the plan's own bound keeps its histograms (they decay
    where they are read), and recent scores stay."""
    def hist(updated: float) -> Histogram:
        h = Histogram(updated=updated)
        for _ in range(200):
            h.add(0.5)
        return h

    week = 7 * 86400.0
    now = T0 + week
    records = Records(tracks={"lstm": [Scored(T0 + k * 300.0, 160.0, 100.0) for k in range(30)],
                              "ma": [Scored(now - 600.0, 101.0, 100.0)]},
                      histograms={"lstm|0": hist(T0), "ma|0": hist(now - 600.0),
                                  "0:all": hist(T0)})
    history = Series(now - 600 * STEP, STEP, np.full(600, 100.0))
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=now)
    assert set(records.tracks) == {"ma"} and records.recent_error("lstm") == (None, 0)
    assert set(records.histograms) == {"ma|0", "0:all"}
    assert records.width("lstm") is None


def test_a_cluster_of_misses_widens_the_bound_at_once_and_not_for_hours() -> None:
    """Two time scales: eight minutes of misses (traffic returning after an outage,
    a flash crowd) drops the miss level at once; its fast part has decayed two hours
    later, and the slow part it leaves behind is the small one that keeps the long-run
    miss share at the budget."""
    budget = 0.005
    n = 600
    history = Series(T0, STEP, np.full(n, 100.0))
    records = Records(alpha=0.03)
    before = records.level(budget)

    def outcomes(first: int, count: int, replicas: int) -> None:
        records.decisions = [(T0 + (first + i) * STEP, replicas) for i in range(count)]
        records.score_decisions(history, intensity_steps=5, budget=budget,
                                now=T0 + n * STEP, needed=lambda rate: int(np.ceil(rate)))

    outcomes(10, 8, 0)  # eight misses in a row
    after = records.level(budget)
    assert after <= 0.001  # at once: the bound widens as far as it can
    outcomes(18, 120, 10_000)  # two hours of hits
    recovered = records.level(budget)
    slow_part = before - 8 * ACI_SLOW_GAMMA * (1 - budget) + 120 * ACI_SLOW_GAMMA * budget
    # Two half-lives: what is left of the fast part is at most a quarter of the slow part.
    assert 0.75 * slow_part <= recovered <= slow_part, (before, after, recovered)
    assert recovered > 0.01  # a single integrator fast enough to react sat near its floor


def test_a_level_beyond_what_the_scores_support_is_capped_at_the_largest_not_dropped() -> None:
    """After a run of misses the controller asks for a level (here 99.95 %) that needs ~2000
    scores; with 100 the bound is their largest score — wider than at 95 % — and never the
    model's own interval, which would be narrower exactly when a wider one was asked for."""
    records = Records()
    hist = records.histograms.setdefault("0:all", Histogram())
    for score in np.linspace(-0.5, 0.5, 100):
        hist.add(float(score))
    hist.updated = T0
    history = Series(T0 - 1440 * STEP, STEP, np.full(1440, 100.0))
    means, model_upper = np.array([100.0]), np.array([105.0])
    usual = records.upper_bound(means, model_upper, history, coverage=0.95, now=T0,
                                half_life=HALF_LIFE, intensity_steps=5)
    high = records.upper_bound(means, model_upper, history, coverage=0.9995, now=T0,
                               half_life=HALF_LIFE, intensity_steps=5)
    assert usual.calibrated and high.calibrated
    assert "capped at the largest" in high.message and "capped" not in usual.message
    assert usual.upper[0] < high.upper[0]
    assert high.upper[0] == pytest.approx((100.0 + 2.0) * math.exp(0.5) - 2.0, rel=0.03)


def _bound(scores: np.ndarray, coverage: float) -> Bound:
    """The bound of a forecast of 100 (model's own upper 105) from these scores."""
    records = Records()
    hist = records.histograms.setdefault("0:all", Histogram())
    for score in scores:
        hist.add(float(score))
    hist.updated = T0
    history = Series(T0 - 1440 * STEP, STEP, np.full(1440, 100.0))
    return records.upper_bound(np.array([100.0]), np.array([105.0]), history,
                               coverage=coverage, now=T0, half_life=HALF_LIFE, intensity_steps=5)


def _bound_for(scores: np.ndarray, coverage: float) -> tuple[float, str]:
    bound = _bound(scores, coverage)
    assert bound.calibrated
    return float(bound.upper[0]), bound.message


@pytest.mark.parametrize("jump", [12.0, 30.0])
def test_jumps_beyond_the_far_out_fence_do_not_set_the_bound(jump: float) -> None:
    """A service whose forecasts are within ~10 % but which jumps to 12 x (or 30 x, beyond
    the histogram's last finite bin, x20, where the quantile is infinite) on 3 % of the
    minutes (a crawler, a flash crowd): at 99 % the plain quantile is in the jumps, at every
    decision. The bound stops at Tukey's far-out fence of the scores, Q3 + 3 IQR, and says
    so — never the model's own interval, which a wider bound was asked to replace; the
    jumps are the reactive floor's."""
    rng = np.random.default_rng(3)
    bulk = rng.normal(0.0, 0.1, 970)
    scores = np.concatenate([bulk, np.full(30, math.log(jump))])
    upper, message = _bound_for(scores, 0.99)
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    fence = q3 + 3.0 * (q3 - q1)
    assert fence < 0.6  # the bulk's, nowhere near the jumps
    assert upper == pytest.approx((100.0 + 2.0) * math.exp(fence) - 2.0, rel=0.03)
    assert upper < 2 * 100.0
    assert "far-out fence" in message


def test_the_fence_never_binds_for_well_behaved_errors() -> None:
    """Errors normal in log space: the fence is 4.7 standard deviations out, so even the
    99.9 % bound is the plain quantile."""
    rng = np.random.default_rng(4)
    scores = rng.normal(0.0, 0.1, 5000)
    upper, message = _bound_for(scores, 0.999)
    plain = float(np.quantile(scores, 0.999))
    assert upper == pytest.approx((100.0 + 2.0) * math.exp(plain) - 2.0, rel=0.03)
    assert "fence" not in message


def _sparse_bound(scores: np.ndarray, coverage: float) -> tuple[float, float, float, str]:
    """The bound of a forecast of ~1 request a window on a service that sees one request
    every 4 minutes: (bound, mean, ε, message)."""
    values = np.zeros(1440)
    values[::4] = 1.0 / 60.0
    history = Series(T0 - 1440 * STEP, STEP, values)
    level = day_level(history, 5)
    mean = float(np.mean(values))
    records = Records()
    hist = records.histograms.setdefault("0:all", Histogram())
    for score in scores:
        hist.add(float(score))
    hist.updated = T0
    bound = records.upper_bound(np.array([mean]), np.array([2 * mean]), history,
                                coverage=coverage, now=T0, half_life=HALF_LIFE,
                                intensity_steps=5, level=level)
    assert bound.calibrated
    return float(bound.upper[0]), mean, level.epsilon, bound.message


def test_scores_without_spread_are_not_fenced() -> None:
    """A sparse service: in 80 % of its windows no request came, so 80 % of the scores are
    one value, and Q1 = Q3. The fence would sit on that value and hold the bound below
    the forecast; with no spread to measure there is no fence, and the 99 % bound covers
    the windows with requests."""
    scores = np.concatenate([np.full(800, -0.4), np.full(150, 0.3), np.full(40, 0.7),
                             np.full(10, 1.0)])
    upper, mean, eps, message = _sparse_bound(scores, 0.99)
    assert upper >= (mean + eps) * math.exp(0.7) - eps
    assert "fence" not in message


def test_a_busy_service_over_forecast_keeps_its_fence() -> None:
    """The same shape on busy traffic is a model over-forecasting by a third with tight
    scores, not windows without a request (there are thousands a window): it lost its
    fence too, and one old score (a spiked sample's, x11) set the bound whenever the level
    asked for more scores than there were — 196 replicas where 14 were needed."""
    scores = np.concatenate([np.full(80, -0.4), np.full(19, -0.35), [math.log(11.3)]])
    upper, message = _bound_for(scores, 0.997)
    assert upper < 100.0
    assert "fence" in message
    sparse, mean, eps, message = _sparse_bound(scores, 0.997)
    assert sparse >= (mean + eps) * 11.0 - eps and "fence" not in message


def test_a_fence_never_holds_the_bound_below_one_request_on_a_sparse_service() -> None:
    """Below a tenth of a request per window (NASA thinned to ~0.1 a minute, a Sunday) the
    windows without a request score log(ε / (ŷ + ε)) ≈ −0.095: 95 % of the scores in one
    bin just below 0, not the sparse exception's. A fence at two bins' spread held the
    bound at ~0.2 request whatever the level asked for, so every request was a miss; the
    fence's spread is at least the score of one request, and the 99.7 % bound covers one."""
    one = 1.0 / 60.0  # one request in a minute, req/s
    values = np.zeros(1440)
    values[::20] = one
    values[7] = 2 * one
    history = Series(T0 - 1440 * STEP, STEP, values)
    level = day_level(history, 5)
    eps = level.epsilon
    assert eps == pytest.approx(one / 5)  # one request in the 5-minute window
    mean = 0.1 * eps
    records = Records()
    hist = records.histograms.setdefault("0:all", Histogram())
    for _ in range(950):
        hist.add(math.log(eps / (mean + eps)))
    for _ in range(50):
        hist.add(math.log((eps + eps) / (mean + eps)))
    hist.updated = T0
    bound = records.upper_bound(np.array([mean]), np.array([2 * mean]), history,
                                coverage=0.997, now=T0, half_life=HALF_LIFE,
                                intensity_steps=5, level=level)
    assert bound.calibrated
    assert bound.upper[0] >= 0.97 * eps
    assert "fence" not in bound.message


def test_a_jump_on_smooth_traffic_is_fenced_too() -> None:
    """A busy, smooth service (forecasts within 1 %: 95 % of the scores in one bin) and one
    level shift (x3; 1 % of the scores). Without a fence its few scores set the 99.7 %
    bound at x3 the forecast for as long as they keep weight; the fence, its spread taken
    as at least the bins' resolution, holds it within ~x1.2 and says so."""
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.normal(0.005, 0.003, 950), rng.normal(0.03, 0.01, 40),
                             np.full(10, math.log(3.0))])
    upper, message = _bound_for(scores, 0.997)
    assert upper < 100.0 * 1.25
    assert "far-out fence" in message


def test_scores_too_spread_for_the_histogram_give_the_models_interval_and_say_why() -> None:
    """Half the scores beyond x20 (a service so sparse its forecasts say little): the
    quantile and the far-out fence are both past the histogram's last finite bin, so no
    calibrated bound can be read; the plan says so rather than pretend it is young."""
    rng = np.random.default_rng(6)
    scores = np.concatenate([rng.normal(0.0, 0.5, 500), np.full(500, math.log(40.0))])
    bound = _bound(scores, 0.99)
    assert not bound.calibrated
    assert bound.upper[0] == 105.0
    assert "beyond x20" in bound.message and "too few" not in bound.message


def _lstm_low_arima_level(steps: int, *, untracked_ma: bool = False) -> Records:
    """Records of a steady 10 req/s, ``steps`` long, scored every 5 steps: lstm serves and
    forecasts 20 % low, arima forecasts the level as a tracked shadow run (and ma as an
    untracked one)."""
    records = Records()
    values = np.full(steps, 10.0)
    for t in range(100, steps - 100, 5):
        history = Series(T0, STEP, values[:t])
        records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
        records.record(history.end_seconds, "lstm", served=True, track=True,
                       means=np.full(3, 8.0))
        records.record(history.end_seconds, "arima", served=False, track=True,
                       means=np.full(3, 10.0))
        if untracked_ma:
            records.record(history.end_seconds, "ma", served=False, track=False,
                           means=np.full(3, 10.0))
    return records


def test_every_stage_is_scored_step_by_step_at_the_track_origins() -> None:
    # Both tracked stages are scored into their own histograms at the aligned origins
    # (track=True), the served one also into the bound's; an untracked shadow forecast is
    # scored nowhere.
    records = _lstm_low_arima_level(2000, untracked_ma=True)
    assert {k for k in records.histograms if "|" in k} == {
        f"{stage}|{h}" for stage in ("lstm", "arima") for h in range(3)}
    assert records.histograms["lstm|0"].total == records.histograms["0:all"].total > 200
    # No spread at all: both widths are zero within a bin, whatever the bias.
    assert records.width("lstm") == pytest.approx(0.0, abs=0.03)
    assert records.width("arima") == pytest.approx(0.0, abs=0.03)
    assert records.width("ma") is None


def test_the_highest_supported_level_is_the_largest_score_whatever_the_rounding() -> None:
    """quantile(total / (total + 1)) is the top occupied bin's upper edge. It came out +inf
    for 1 random histogram in 4 (its total summed in another order than its loop), and the
    bound then fell back to the model's own interval saying "too few scored forecasts"."""
    rng = random.Random(0)
    series = Series(T0, STEP, np.full(1440, 100.0))
    for _ in range(400):
        weights = {rng.randrange(70, 90): rng.random() * 8 for _ in range(20)}
        hist = Histogram(weights, T0)
        top = LOW + max(weights) * BIN_WIDTH  # the upper edge of the top occupied bin
        assert hist.quantile(hist.total / (hist.total + 1.0)) == pytest.approx(top)
        if hist.total < MIN_WEIGHT:
            continue
        # A level above what the weight supports (after a run of misses): the largest score.
        bound = Records(histograms={"0:all": hist}).upper_bound(
            np.array([100.0]), np.array([101.0]), series, coverage=0.9999, now=T0,
            half_life=HALF_LIFE, intensity_steps=5)
        assert bound.calibrated and "capped at the largest" in bound.message, bound.message
        assert bound.upper[0] > 101.0  # not the model's own interval


def test_forgetting_a_stage_drops_its_record_and_keeps_the_bounds() -> None:
    """A replaced model starts without its predecessor's track record, bound width and
    unscored track forecasts; the bound's calibration (the plan's) and the other stages'
    records stay, and a served forecast still pending is still scored for the bound."""
    records = _lstm_low_arima_level(1000)
    values = np.full(1000, 10.0)
    arima = records.recent_error("arima")
    bound_scores = records.histograms["0:all"].total
    assert records.recent_error("lstm")[1] > 0 and records.width("lstm") is not None
    assert {p.stage for p in records.pending} == {"lstm", "arima"}
    records.forget("lstm")
    assert records.recent_error("lstm") == (None, 0)
    assert records.width("lstm") is None and not any(k.startswith("lstm|")
                                                       for k in records.histograms)
    assert records.recent_error("arima") == arima and records.width("arima") is not None
    assert records.histograms["0:all"].total == bound_scores
    lstm_pending = [p for p in records.pending if p.stage == "lstm"]
    assert lstm_pending and all(p.served and not p.track for p in lstm_pending)
    # Its outcome observed, the served forecast feeds the bound and no track record.
    history = Series(T0, STEP, values)
    decayed = records.histograms["0:all"].copy()
    decayed.decay_to(history.end_seconds, HALF_LIFE)
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=history.end_seconds)
    assert records.histograms["0:all"].total > decayed.total
    assert not [p for p in records.pending if p.stage == "lstm"]
    assert records.recent_error("lstm") == (None, 0)
    assert not any(k.startswith("lstm|") for k in records.histograms)


def test_far_horizon_steps_share_histograms_and_the_state_stays_small() -> None:
    """15 s steps and an hour's lead: 244 horizon steps. The first 12 keep histograms of
    their own (the default horizon, 6 steps, is unchanged); the rest share one per
    doubling, so the plan state stored in the status stays bounded."""
    assert [step_group(h) for h in range(12)] == list(range(12))
    assert {step_group(h) for h in range(12, 24)} == {12}
    assert {step_group(h) for h in range(24, 48)} == {24}
    assert {step_group(h) for h in range(96, 192)} == {96}
    assert len({step_group(h) for h in range(244)}) == 17
    records = Records()
    values = np.full(3000, 10.0)
    for t in range(300, 2700, 20):
        history = Series(T0, 15.0, values[:t])
        records.score(history, intensity_steps=20, half_life=HALF_LIFE,
                      now=history.end_seconds)
        records.record(history.end_seconds, "ma", served=True, track=True,
                       means=np.full(244, 10.0))
    steps = {int(k.rsplit("|", 1)[-1].split(":")[0]) for k in records.histograms}
    assert steps == {step_group(h) for h in range(244)}
    assert len(records.histograms) == 17 * 3  # "g:<regime>" (one regime here), "g:all", "ma|g"
    bound = records.upper_bound(np.full(244, 10.0), np.full(244, 11.0),
                                Series(T0, 15.0, values), coverage=0.9,
                                now=T0 + 3000 * 15.0, half_life=HALF_LIFE,
                                intensity_steps=20)
    assert bound.calibrated
    # A state written before the groups: its per-step histograms beyond 12 are dropped.
    old = records.to_dict()
    old["calibration"]["30:all"] = old["calibration"]["24:all"]
    again = Records.from_dict(old)
    assert "30:all" not in again.histograms
    assert set(again.histograms) == set(records.histograms)


def test_a_wider_upper_tail_is_a_wider_bound() -> None:
    rng = np.random.default_rng(4)
    records = Records()
    for stage, tail in (("lstm", 0.8), ("arima", 0.2)):
        hist = records.histograms.setdefault(f"{stage}|0", Histogram())
        for score in rng.normal(0.0, 0.1, 500):
            hist.add(float(score))
        for score in rng.uniform(0.0, tail, 40):  # 8 % of the steps missed by up to `tail`
            hist.add(float(score))
    mine, theirs = records.width("lstm"), records.width("arima")
    assert mine is not None and theirs is not None
    assert math.exp(mine) > 1.1 * math.exp(theirs)
    # Too few scores in one stage's step: no width.
    records.histograms["arima|1"] = Histogram({100: 3.0})
    assert records.width("arima") is None


def test_epsilon_is_one_request_in_the_intensity_window_on_a_sparse_service() -> None:
    """Counts of 0-3 requests a minute (the median minute has none): ε is one request in
    the 5-minute window, not 10⁻⁹; a dense service's and a float metric's ε is the
    median's share, as before."""
    rng = np.random.default_rng(3)
    one = 250.0  # one request in a minute, in the rescaled req/s a trace gives
    sparse = Series(T0, STEP, rng.poisson(0.3, 1440) * one)
    level = day_level(sparse, 5)
    assert level.median == 0.0
    assert level.epsilon == pytest.approx(one / 5)
    dense = Series(T0, STEP, rng.poisson(60.0, 1440) * one)
    assert day_level(dense, 5).epsilon == pytest.approx(0.02 * float(np.median(dense.values)))
    floats = Series(T0, STEP, rng.gamma(2.0, 0.001, 1440))
    assert day_level(floats, 5).epsilon == pytest.approx(0.02 * float(np.median(floats.values)))


def test_epsilon_is_one_request_through_prometheus_rate_jitter() -> None:
    """``rate(x[2m])`` of a sparse counter scraped every 15 s: a window's k requests read
    as k / (last − first sample time), ~105 s give or take the scrapes' jitter of a few
    milliseconds. Those 10⁻⁵ steps are not the data's quantum; one request is."""
    rng = np.random.default_rng(8)
    counts = rng.poisson(0.3, 1440)
    span = 105.0 + rng.normal(0.0, 0.003, 1440)  # seconds between a window's first and last
    level = day_level(Series(T0, STEP, counts / span), 5)
    assert level.median == 0.0
    assert level.epsilon == pytest.approx(1.0 / 105.0 / 5, rel=0.01)
    assert level.quantum == pytest.approx(1.0 / 105.0 / 5, rel=0.01)


def test_counts_keep_one_request_as_their_quantum_at_any_level_and_scale() -> None:
    """Busy counts (~5,000 requests a minute), as they are and rescaled as the backtest
    rescales a trace: their rates are whole multiples of one request, which stays the
    quantum however far it is below a hundredth of the smallest rate (jitter's floor)."""
    rng = np.random.default_rng(9)
    counts = rng.poisson(5000.0, 1440).astype(np.float64)
    for unit in (1.0 / 60.0, 0.37e-3 / 60.0, 250.0):
        level = day_level(Series(T0, STEP, counts * unit), 5)
        assert level.quantum == pytest.approx(unit / 5, rel=1e-6)
        assert level.epsilon == pytest.approx(0.02 * float(np.median(counts)) * unit)


def test_a_sparse_service_gets_a_calibrated_bound_not_the_models_interval() -> None:
    """~0.3 requests a minute around forecasts of nearly nothing: with ε at one request
    per window the scores stay inside the histograms, the bound is calibrated, and it
    covers the observed intensity about as often as asked (the model's own interval, 10⁻⁶
    here, covered it at most when no request came)."""
    rng = np.random.default_rng(4)
    observed = rng.poisson(0.3, 6000) * 250.0  # one request a minute: 250 req/s
    coverage, _ = _walk_coverage(observed, lambda t: np.full(3, 1e-9), 0.95, model_factor=1000)
    # The intensity is a count (0, 1, 2... requests in 5 minutes): a bound between two
    # counts covers the lower one, so the coverage can only be at or above nominal.
    assert 0.95 <= coverage <= 0.995, coverage


def test_a_sparse_services_busy_hours_are_a_regime_of_their_own() -> None:
    """A serverless function: ~3 requests a minute by day, almost none at night, so the
    median minute has no request. The regimes split at the median *intensity*: the night's
    wide relative errors (one request in five minutes where a tenth was forecast is x1.8)
    no longer set the day's bound, which stays calibrated. Split at the median minute (0),
    every forecast was 'high' and the day's bound was the pooled one."""
    rng = np.random.default_rng(6)
    one = 250.0
    minutes = np.arange(7200)
    daytime = (minutes % 1440) >= 720
    rate = np.where(daytime, 3.0, 0.02)
    observed = rng.poisson(rate) * one
    level = day_level(Series(T0, STEP, observed[:1440]), 5)
    assert level.median == 0.0
    assert level.split > 0.0
    coverage, records = _walk_coverage(
        observed, lambda t: rate[t:t + 3] * one, 0.95, model_factor=1.0, scored_from=4500,
        counted=lambda t: bool(daytime[t - 3:t + 5].all()))
    assert 0.93 <= coverage <= 0.995, coverage
    # The day's quantile comes from the day's scores: below the pooled one (x1.52 against
    # x1.80 here).
    busy, pooled = records.histograms["0:high"], records.histograms["0:all"]
    assert records.histograms["0:low"].total > 0.3 * pooled.total
    assert math.exp(busy.quantile(0.97)) < 0.9 * math.exp(pooled.quantile(0.97))


def test_one_spike_does_not_make_one_request_thousands_of_them() -> None:
    """~0.3 requests a minute and one minute of 2,000,000 (a bot, a counter reset read
    through rate(sum(...))): every step below a millionth of the spike was taken for
    rounding, ε became 6,667 req/s and the bound asked for ~170 replicas where one did."""
    rng = np.random.default_rng(4)
    values = rng.poisson(0.3, 3000) / 60.0
    values[2500] = 2e6 / 60.0
    assert day_level(Series(T0, STEP, values), 5).epsilon == pytest.approx(1 / 60 / 5)


def test_rate_jitter_of_busy_hours_is_no_quantum_of_the_quiet_ones() -> None:
    """An idle service (the median minute has no request) busy for 11 hours a day, read
    through rate(x[2m]): the jitter of ~300 requests a window is larger than a hundredth
    of one request and was taken for the quantum (ε 100 times too small; the quiet hours'
    97 % bound covered 93.7 % of their intensity)."""
    rng = np.random.default_rng(8)
    minutes = np.arange(1440)
    counts = rng.poisson(np.where(minutes < 800, 0.1, 300.0))
    span = 105.0 + rng.normal(0.0, 0.003, 1440)
    level = day_level(Series(T0, STEP, counts / span), 5)
    assert level.median == 0.0
    assert level.epsilon == pytest.approx(1.0 / 105.0 / 5, rel=0.05)
    rng = np.random.default_rng(6)
    minutes = np.arange(7200)
    daytime = (minutes % 1440) >= 800
    lam = np.where(daytime, 300.0, 0.1)
    observed = rng.poisson(lam) / (105.0 + rng.normal(0.0, 0.003, 7200))
    coverage, _ = _walk_coverage(observed, lambda t: lam[t:t + 3] / 105.0, 0.97,
                                 model_factor=1.0, scored_from=4500,
                                 counted=lambda t: bool((~daytime[t - 3:t + 5]).all()))
    assert coverage >= 0.955, coverage


def test_a_forecast_reaching_past_a_day_is_scored_once_observed() -> None:
    """A lead time of a day (the CRD's most): its forecasts were dropped a day after their
    origin, before their last step was observed, and the bound was never calibrated."""
    horizon = 1445
    values = np.full(200 + horizon + 400, 10.0)
    records = Records()
    records.record(T0 + 200 * STEP, "ma", served=True, track=False,
                   means=np.full(horizon, 10.0))
    for k in range(0, horizon + 10, 5):
        history = Series(T0, STEP, values[:200 + k])
        records.score(history, intensity_steps=5, half_life=HALF_LIFE,
                      now=history.end_seconds)
    assert not records.pending
    assert records.histograms[f"{step_group(horizon - 1)}:all"].total > 0


def test_records_written_by_a_clock_that_ran_ahead_decay_from_now_on() -> None:
    """A histogram last updated a day ahead (a replica whose clock was fast) kept its time
    in the future and never decayed: twelve half-lives of exact forecasts later the 90 %
    bound was still x1.68 the forecast."""
    half_life = 3600.0
    now = T0 + 86400.0
    wide = Records.from_dict({"calibration": {
        "0:all": [now + 86400.0, [[1 + round((0.5 - LOW) / BIN_WIDTH), 2000.0]]]}})
    hist = wide.histograms["0:all"]
    for k in range(720):
        hist.decay_to(now + k * 60.0, half_life)
        hist.add(0.0)
    end = now + 720 * 60.0
    history = Series(end - 1440 * STEP, STEP, np.full(1440, 10.0))
    bound = wide.upper_bound(np.full(1, 10.0), np.full(1, 99.0), history, coverage=0.9,
                             now=end, half_life=half_life, intensity_steps=5)
    assert bound.calibrated and bound.upper[0] < 11.0, bound.message


def test_records_a_day_ahead_are_forgotten() -> None:
    """A track score or a pending forecast a day or more ahead of now (a clock far ahead, a
    status edited by hand) was never stale: the next aligned origin never came, and the
    relative gate stopped scoring for good."""
    now = T0 + 3 * 86400.0
    records = Records.from_dict({
        "tracks": {"ma": [[now + 86400.0 * 365, 10.0, 10.0]],
                   "arima": [[now - 600.0, 10.0, 11.0], [now + 3600.0, 10.0, 10.0]]},
        "pending": [[now + 86400.0 * 365, "ma", 3, [10.0, 10.0]]]})
    history = Series(now - 2 * 86400.0, STEP, np.full(2880, 10.0))
    records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=now)
    assert "ma" not in records.tracks and not records.pending
    assert [s.origin for s in records.tracks["arima"]] == [now - 600.0, now + 3600.0]
    assert records.last_track_origin() == now + 3600.0  # within a day: a clock step back



def test_a_late_newest_sample_delays_scoring_rather_than_dropping_it() -> None:
    """A forecast (or a decision) was scored at the first cycle whose history reached its
    last needed sample, and dropped if that sample was missing: the newest one, which a
    late scrape (remote write) fills at the next read. With it always late, some decision
    periods never scored anything: no calibration and a miss level that never moved."""
    from forescale.core.calibration import Pending

    values = np.full(120, 100.0)
    # The history ends at T0. A five-step forecast made 7 steps before, and a decision
    # whose pods were ready 3 steps before: their last windows (5 steps, centred) both
    # end with the newest sample.
    pending = Pending(T0 - 7 * STEP, "ma", True, False, (100.0,) * 5)
    records = Records(pending=[pending], decisions=[(T0 - 3 * STEP, 12)], alpha=0.003)
    late = values.copy()
    late[-1] = np.nan
    for series, scored in ((late, False), (values, True)):
        history = Series(T0 - 120 * STEP, STEP, series)
        records.score(history, intensity_steps=5, half_life=HALF_LIFE, now=T0)
        records.score_decisions(history, intensity_steps=5, needed=lambda y: 20,
                                budget=0.003, now=T0)
        assert (records.pending == []) is scored
        assert (records.decisions == []) is scored
        assert bool(records.histograms) is scored
    assert records.alpha is not None and records.alpha < 0.003  # the miss was counted
