"""Robustness scenarios: the shared real traces with one failure mode each laid on top.

The real traces show daily cycles and flash crowds; they show few of the other classes of
traffic an autoscaler meets. Each scenario here keeps a real trace's own minute-to-minute
behaviour and adds one class, deterministically (a fixed seed), so a benchmark figure can
be reproduced exactly:

* ``bursts`` — recurring scheduled bursts: three clock times a day (09:30, 14:30 and
  20:00 UTC), each present on ~70 % of days, the rate × 3–4 for 10–15 minutes.
* ``level-shifts`` — sudden level shifts: the rate × 5 for whole stretches of 1–3 days,
  switching on and off at arbitrary minutes.
* ``sparse`` — a sparse service: the trace thinned (binomially, so counts stay counts) to a
  few requests a minute on weekdays and a third of that at weekends.

Counts, not rates, are changed, so that thinning and bursts keep integer requests, as a
real service's would. Every scenario returns a trace of the same length and step.

:data:`HOLDOUT` is a second set, for the robustness benchmark (``benchmarks/scaling.py
--set holdout``): fortnights of the real traces other than the ones the defaults were
developed on (the NASA trace's second half, the World Cup before and at the end of the
tournament), and the classes above with other parameters (bursts at other, jittered
lengths and heights on half the days; a service three and ten times sparser; ×3 shifts of
half a day to two days; one-off flash crowds), and three classes of their own: traffic
growing to ×3 or falling to ×0.3 over the fortnight, and clients polling on the quarter
hour (×2.5 for three minutes), a cycle far shorter than the day the calendar knows. A
default that only fits the first set shows here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forescale.core.errors import InvalidInputError
from forescale.core.series import DAY_SECONDS, FloatArray, Series
from forescale.trace import parse_timestamp


@dataclass(frozen=True)
class Scenario:
    name: str
    #: The shared trace it is built from (file name in ``../shared/traces``).
    base: str
    description: str
    build: Callable[[Series, int], Series]
    #: ``(first, end)`` UTC times the base trace is cut to first (None: all of it).
    crop: tuple[str, str] | None = None

    def apply(self, rates: Series, seed: int = 0) -> Series:
        if self.crop is not None:
            first, end = (parse_timestamp(x) for x in self.crop)
            i = max(0, round((first - rates.start_seconds) / rates.step_seconds))
            j = min(len(rates), round((end - rates.start_seconds) / rates.step_seconds))
            rates = Series(rates.start_seconds + i * rates.step_seconds, rates.step_seconds,
                           rates.values[i:j])
        return self.build(rates, seed)

    @property
    def draws(self) -> bool:
        """Whether the scenario draws at random (its seed matters): all but the real
        traces' other periods."""
        return self.build is not real


def _counts(rates: Series) -> FloatArray:
    if rates.missing:
        raise InvalidInputError("a scenario needs a trace without missing samples")
    return np.rint(rates.values * rates.step_seconds)


def _rates(like: Series, counts: FloatArray) -> Series:
    return Series(like.start_seconds, like.step_seconds, counts / like.step_seconds)


def _lifted(like: Series, counts: FloatArray, multiplier: FloatArray,
            rng: np.random.Generator) -> Series:
    """``counts`` times ``multiplier`` (≥ 1), the extra requests drawn as Poisson so that
    counts stay whole."""
    return _rates(like, counts + rng.poisson(counts * (multiplier - 1.0)))


def _thinned(like: Series, counts: FloatArray, share: FloatArray | float,
             rng: np.random.Generator) -> Series:
    """``counts`` with each request kept with probability ``share`` (binomial thinning)."""
    return _rates(like, rng.binomial(counts.astype(np.int64), share).astype(np.float64))


def scheduled_bursts(rates: Series, seed: int = 0, *,
                     clock_minutes: tuple[int, ...] = (9 * 60 + 30, 14 * 60 + 30, 20 * 60),
                     probability: float = 0.7, factor: tuple[float, float] = (3.0, 4.0),
                     minutes: tuple[int, int] = (10, 15)) -> Series:
    """Bursts at fixed clock times on ~``probability`` of days (see the module docstring)."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    t = rates.timestamps()
    day0 = np.floor(t[0] / DAY_SECONDS) * DAY_SECONDS
    days = int(np.ceil((t[-1] - day0) / DAY_SECONDS)) + 1
    multiplier = np.ones_like(counts)
    for d in range(days):
        for clock in clock_minutes:
            if rng.random() >= probability:
                continue
            start = day0 + d * DAY_SECONDS + clock * 60.0
            length = int(rng.integers(minutes[0], minutes[1] + 1))
            inside = (t >= start) & (t < start + length * 60.0)
            multiplier[inside] = rng.uniform(*factor)
    return _lifted(rates, counts, multiplier, rng)


def level_shifts(rates: Series, seed: int = 0, *, factor: float = 5.0,
                 days: tuple[float, float] = (1.0, 3.0)) -> Series:
    """× ``factor`` for stretches of 1–3 days, on and off at arbitrary minutes."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    n = len(counts)
    per_day = round(DAY_SECONDS / rates.step_seconds)
    multiplier = np.ones_like(counts)
    i, high = 0, False
    while i < n:
        length = int(rng.uniform(*days) * per_day)
        if high:
            multiplier[i:i + length] = factor
        i += length
        high = not high
    return _lifted(rates, counts, multiplier, rng)


def sparse_service(rates: Series, seed: int = 0, *, weekday_per_minute: float = 3.0,
                   weekend_share: float = 1.0 / 3.0) -> Series:
    """Thinned to ~``weekday_per_minute`` requests a minute (weekends a third of that)."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    per_minute = counts.mean() * 60.0 / rates.step_seconds
    keep = min(1.0, weekday_per_minute / max(per_minute, 1e-12))
    weekday = ((np.floor(rates.timestamps() / DAY_SECONDS).astype(np.int64) + 3) % 7) < 5
    share = np.where(weekday, keep, keep * weekend_share)
    return _thinned(rates, counts, share, rng)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("bursts", "nasa_ksc_jul1995_1min.csv",
             "NASA July 1995 with scheduled bursts (x3-4, 10-15 min, 3 clock times, ~70 % "
             "of days)", scheduled_bursts),
    Scenario("level-shifts", "worldcup98_1min.csv",
             "World Cup 98, 1 June - 6 July, with x5 level shifts for 1-3 days at a time",
             level_shifts, crop=("1998-06-01T00:00:00Z", "1998-07-06T00:00:00Z")),
    Scenario("sparse", "nasa_ksc_jul1995_1min.csv",
             "NASA July 1995 thinned to ~3 requests/min on weekdays, ~1/min at weekends",
             sparse_service),
)


def real(rates: Series, seed: int = 0) -> Series:
    """The crop as it is: real traffic of another period."""
    del seed
    return rates


def flash_crowds(rates: Series, seed: int = 0, *, count: int = 2,
                 factor: tuple[float, float] = (6.0, 10.0),
                 minutes: tuple[int, int] = (40, 120), skip_days: float = 4.0) -> Series:
    """``count`` one-off flash crowds (× ``factor`` for ``minutes``), at random times after
    the first ``skip_days`` (the protocol's shortest warm-up), never at the same clock
    time twice: nothing a calendar could learn."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    per_day = round(DAY_SECONDS / rates.step_seconds)
    first = int(skip_days * per_day)
    multiplier = np.ones_like(counts)
    for _ in range(count):
        length = int(rng.integers(minutes[0], minutes[1] + 1))
        start = int(rng.integers(first, max(first + 1, len(counts) - length)))
        multiplier[start:start + length] = rng.uniform(*factor)
    return _lifted(rates, counts, multiplier, rng)


def trend(rates: Series, seed: int = 0, *, end: float = 3.0) -> Series:
    """The rate times a factor that goes linearly from 1 to ``end`` over the trace: organic
    growth after a launch (``end`` > 1, extra requests drawn as Poisson) or a migration away
    (``end`` < 1, requests thinned binomially)."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    factor = np.linspace(1.0, end, len(counts))
    if end >= 1.0:
        return _lifted(rates, counts, factor, rng)
    return _thinned(rates, counts, factor, rng)


def polling(rates: Series, seed: int = 0, *, every_minutes: int = 15, minutes: int = 3,
            factor: float = 2.5) -> Series:
    """× ``factor`` for the first ``minutes`` of every ``every_minutes`` of the clock, every
    day: clients that poll or sync on the quarter hour, a cycle far shorter than a day."""
    rng = np.random.default_rng(seed)
    counts = _counts(rates)
    minute = (np.floor(rates.timestamps() / 60.0) % every_minutes).astype(np.int64)
    multiplier = np.where(minute < minutes, factor, 1.0)
    return _lifted(rates, counts, multiplier, rng)


NASA, WORLD_CUP = "nasa_ksc_jul1995_1min.csv", "worldcup98_1min.csv"
NASA_FIRST_FORTNIGHT = ("1995-07-01T04:00:00Z", "1995-07-15T04:00:00Z")
HOLDOUT: tuple[Scenario, ...] = (
    Scenario("nasa-second-half", NASA, "NASA 14-28 July 1995 as it is", real,
             crop=("1995-07-14T12:00:00Z", "1995-07-28T12:00:00Z")),
    Scenario("worldcup-before", WORLD_CUP, "World Cup 98, 1-15 May (before the "
             "tournament: quiet, with daily spikes) as it is", real,
             crop=("1998-05-01T00:00:00Z", "1998-05-15T00:00:00Z")),
    Scenario("worldcup-knockout", WORLD_CUP, "World Cup 98, 28 June - 12 July (the "
             "knock-out matches) as it is", real,
             crop=("1998-06-28T00:00:00Z", "1998-07-12T00:00:00Z")),
    Scenario("jittered-bursts", NASA, "NASA 1-15 July with bursts at five clock times on "
             "~50 % of days, x2-6 for 5-20 minutes",
             functools.partial(scheduled_bursts, clock_minutes=(
                 7 * 60 + 15, 11 * 60, 13 * 60 + 45, 17 * 60 + 5, 22 * 60 + 40),
                 probability=0.5, factor=(2.0, 6.0), minutes=(5, 20)),
             crop=NASA_FIRST_FORTNIGHT),
    Scenario("worldcup-bursts", WORLD_CUP, "World Cup 98, 20 May - 3 June, with the "
             "scheduled bursts of `bursts`", scheduled_bursts,
             crop=("1998-05-20T00:00:00Z", "1998-06-03T00:00:00Z")),
    Scenario("sparser", NASA, "NASA 1-15 July thinned to ~1 request/min on weekdays",
             functools.partial(sparse_service, weekday_per_minute=1.0),
             crop=NASA_FIRST_FORTNIGHT),
    Scenario("sparsest", NASA, "NASA 1-15 July thinned to ~0.3 request/min on weekdays "
             "(~0.1 at weekends)",
             functools.partial(sparse_service, weekday_per_minute=0.3),
             crop=NASA_FIRST_FORTNIGHT),
    Scenario("shifts-x3", NASA, "NASA 1-15 July with x3 level shifts of 0.5-2 days",
             functools.partial(level_shifts, factor=3.0, days=(0.5, 2.0)),
             crop=NASA_FIRST_FORTNIGHT),
    Scenario("flash-crowds", NASA, "NASA 1-15 July with two one-off flash crowds (x6-10, "
             "40-120 minutes)", flash_crowds, crop=NASA_FIRST_FORTNIGHT),
    Scenario("growth", NASA, "NASA 1-15 July growing linearly to x3 over the fortnight",
             trend, crop=NASA_FIRST_FORTNIGHT),
    Scenario("decline", NASA, "NASA 1-15 July falling linearly to x0.3 over the fortnight",
             functools.partial(trend, end=0.3), crop=NASA_FIRST_FORTNIGHT),
    Scenario("quarter-hour-polling", WORLD_CUP, "World Cup 98, 20 May - 3 June, x2.5 for "
             "the first 3 minutes of every quarter hour", polling,
             crop=("1998-05-20T00:00:00Z", "1998-06-03T00:00:00Z")),
)


def scenario(name: str) -> Scenario:
    for s in (*SCENARIOS, *HOLDOUT):
        if s.name == name:
            return s
    raise InvalidInputError(f"unknown scenario {name!r} (known: "
                            f"{', '.join(s.name for s in (*SCENARIOS, *HOLDOUT))})")
