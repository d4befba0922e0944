"""Recurring clock-time peaks: what the same minutes of the last days say about the next ones.

A scheduled job, a daily report, a newsletter: many services see the same burst at the same
clock time on most days. A model fed the last hour cannot see it coming; the history the
operator already reads can. For the planning window ``[start, end)`` and each of the last
``days`` days ``d`` (same clock time, ``d`` days earlier) we take

    ratio_d = peak intensity in [start, end) − d days  /  mean rate in the ``base_seconds``
              before the decision − d days

i.e. how much the traffic rose, relative to its level at decision time, on that day. When at
least ``quorum`` of the days with data rose by ``min_ratio`` or more, the plan provisions for
the current level times the ratio that ``quorum`` of the days reached (with the policy's
default quorum of one half, the median day's): a burst seen on 5 of the last 7 days is
provisioned for one lead time before it comes back; one seen on 2 of 7 is not. ``quorum``
is the policy's ``forecast.recurringQuorum``, always passed (the spec holds its default):
lower, it catches bursts that come on fewer days, and lets the traffic's noise through more
often, since the noise test below stays one in ten and two days of seven clear it by chance
far more often than four do
(``benchmarks/results/recurring_quorum.md``).
Ratios, not levels, so a weekday/weekend or a week-on-week level shift does not matter,
only the shape. A ratio from a dip is the exception: a day whose base window was below
half of its hour (:data:`DIP_SHARE`, ``context_seconds``) rose from the dip, and today, if
it did not dip, will not rise as far; that day's rise is the smaller of the ratio above and
its peak over its hour times today's hour over today's level.

The rise must also stand out from the traffic's own noise: the same ratio, taken at every
minute of those days rather than at this clock time, reaches some value ``typical`` one
time in ten (:data:`TYPICAL_QUANTILE`), and the clock-time ratio must exceed it. On a
low-volume service whose 5-minute intensity jumps by a quarter at random (NASA's), the
median of seven random days clears ``min_ratio`` often enough to cost ~4 % of the
pod-hours for nothing; a scheduled burst (x3) clears any such noise.

"Exceed" means by more than :data:`TIE_MARGIN` (0.1 %). On counts both are ratios of small
whole numbers and often tie exactly (x2.00 against x2.00); computed in floats one comes
out a few units in the last place above the other, and read through Prometheus's
``rate()`` each sample carries ~10⁻⁴ of scrape-timing jitter. Either way a tie was decided
by rounding or jitter, not by the traffic: on the benchmark's ~3-requests-a-minute service
a quarter of the peaks provisioned for were such ties. A rise within 0.1 % of the noise's
does not stand out from it.

"The same clock time" is the same wall-clock time in ``zone`` (``forecast.
recurringTimeZone``, UTC by default): a burst scheduled at 09:00 Europe/Berlin stays at 09:00
local time across a daylight-saving change, one hour earlier or later in UTC; compared by
24-hour steps it would be looked for an hour off on every day before the change, and missed
for the days until most of the last ``days`` are after it.

Pure numpy over the history; ``days = 0`` switches it off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from forescale.core.series import DAY_SECONDS, Series, window_means

#: A day needs at least this much traffic in its base window to give a ratio.
MIN_BASE_SHARE = 0.01
#: A day's base window below this share of the mean over its ``context_seconds`` was a
#: dip: its rise is also measured against that longer window (see recurring_peak).
DIP_SHARE = 0.5
#: The rise at this clock time must exceed what the same ratio reaches this often at any
#: time of the same days.
TYPICAL_QUANTILE = 0.9
#: ... and exceed it by more than this share: a tie, up to float rounding or the ~10⁻⁴
#: jitter of a rate read through Prometheus, is not a rise that stands out.
TIE_MARGIN = 1e-3


@dataclass(frozen=True)
class RecurringPeak:
    rate: float
    ratio: float
    days_risen: int
    days_seen: int
    message: str
    #: What the same rise reaches one time in ten at any time of those days (None: too
    #: few steps to tell); ``ratio`` exceeds it by more than :data:`TIE_MARGIN`.
    typical: float | None = None


def recurring_peak(history: Series, window: tuple[float, float], now: float, *, days: int,
                   quorum: float, min_ratio: float = 1.25, base_seconds: float = 600.0,
                   context_seconds: float = 3600.0, intensity_steps: int = 5,
                   zone: ZoneInfo | None = None) -> RecurringPeak | None:
    """The rate a recurring clock-time rise calls for over ``window``, or None (see above)."""
    if days <= 0 or len(history) == 0:
        return None
    step = history.step_seconds
    values = history.values
    base_steps = max(1, round(base_seconds / step))
    smooth = _centred_mean(values, intensity_steps)

    def index(t: float) -> int:
        return math.floor((t - history.start_seconds) / step + 1e-9)

    day = history.last_day()
    quiet = MIN_BASE_SHARE * float(np.nanmean(day)) if not np.isnan(day).all() else 0.0
    context_steps = max(base_steps, round(context_seconds / step))
    current = values[-base_steps:]
    current = current[~np.isnan(current)]
    if current.size == 0:
        return None
    level = float(current.mean())
    if level <= quiet:
        return None  # too quiet now for a ratio to mean anything
    context = _mean_or_none(values[-context_steps:])
    ratios: list[float] = []
    for d in range(1, days + 1):
        shift = days_back(now, d, zone)
        first, last = index(window[0] - shift), index(window[1] - shift - 1e-9)
        base_end = index(now - shift)
        base_start = base_end - base_steps
        if base_start < 0 or last + intensity_steps // 2 >= len(values):
            continue
        base = values[base_start:base_end]
        peak = smooth[first:last + 1]
        if np.isnan(base).any() or np.isnan(peak).any() or peak.size == 0:
            continue
        # A rise from (next to) nothing is no ratio: on a sparse service, one request after
        # a quiet ten minutes was a rise of x10¹², and the plan asked for maxReplicas.
        if float(base.mean()) <= max(quiet, 1e-12):
            continue
        ratio = float(peak.max()) / float(base.mean())
        # A rise from a dip that today did not have is no rise today: a nightly 10-minute
        # maintenance dip to 2 % made the return to the usual level a x50 "rise", and that
        # x50 applied to today's undipped level asked for 40 times the pods. Where that
        # day's base was a dip (below DIP_SHARE of its hour), its peak is also measured
        # against that hour and scaled by today's hour, and the smaller rise is taken:
        # the same as before when today dipped too, x1 when it did not.
        past = _mean_or_none(values[max(base_end - context_steps, 0):base_end])
        if (context is not None and past is not None
                and float(base.mean()) < DIP_SHARE * past):
            ratio = min(ratio, float(peak.max()) / past * context / level)
        ratios.append(ratio)

    if len(ratios) < 3:
        return None
    ranked = sorted(ratios, reverse=True)
    needed = max(1, math.ceil(quorum * len(ranked)))
    ratio = ranked[needed - 1]
    risen = sum(r >= min_ratio for r in ratios)
    if ratio < min_ratio:
        return None
    last_day = len(values) - round(days * DAY_SECONDS / step)
    first_offset = index(window[0]) - index(now)
    last_offset = index(window[1] - 1e-9) - index(now)
    typical = _typical_ratio(values, smooth, base_steps, first_offset, last_offset,
                             max(last_day, base_steps))
    if typical is not None and ratio <= typical * (1.0 + TIE_MARGIN):
        return None
    return RecurringPeak(
        level * ratio, ratio, risen, len(ratios),
        f"on {risen} of the last {len(ratios)} days traffic rose to x{ratio:.2f} its level "
        f"at this clock time"
        + ("" if typical is None else f" (x{typical:.2f} at other times, one time in ten)"),
        typical)


def days_back(now: float, days: int, zone: ZoneInfo | None) -> float:
    """Seconds from the same wall-clock time ``days`` days before ``now`` in ``zone`` to
    ``now``: ``days`` x 24 h, give or take a daylight-saving change in between (UTC or
    None: exactly)."""
    if zone is None:
        return days * DAY_SECONDS
    local = datetime.fromtimestamp(now, tz=UTC).astimezone(zone)
    # Arithmetic on an aware datetime is on its wall clock; the UTC offsets in force at
    # both ends make up the difference (whole seconds: no float error on step boundaries).
    earlier = local - timedelta(days=days)
    change = local.utcoffset() - earlier.utcoffset()  # type: ignore[operator]
    return days * DAY_SECONDS - change.total_seconds()


def _typical_ratio(values: np.ndarray, smooth: np.ndarray, base_steps: int, first: int,
                   last: int, since: int) -> float | None:
    """The :data:`TYPICAL_QUANTILE` of the rise ratio taken at every step from ``since`` on
    (decision at step t: peak of ``smooth`` over t+first … t+last over the mean of the
    ``base_steps`` before t), or None with too few."""
    n = len(values)
    stop = n - last
    if stop - since < 60:
        return None
    t = np.arange(since, stop)
    base = window_means(values, base_steps)[t - base_steps]  # NaN across a gap
    # The window's highest intensity after each t, over a strided view: stacking one copy
    # of the history per window step took 3 GB for a 2-day window over 90 days of minutes.
    windows = np.lib.stride_tricks.sliding_window_view(smooth, last - first + 1)
    peak = windows[since + first:stop + first].max(axis=1)
    ok = ~np.isnan(base) & ~np.isnan(peak)
    day_mean = float(np.nanmean(values[since:]))
    ok &= base > MIN_BASE_SHARE * day_mean
    if ok.sum() < 60:
        return None
    return float(np.quantile(peak[ok] / base[ok], TYPICAL_QUANTILE))


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean of the non-missing ``values``, or None when all are missing."""
    seen = values[~np.isnan(values)]
    return float(seen.mean()) if seen.size else None


def _centred_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of ``values`` over ``width`` steps (NaN where the window is
    incomplete or has a gap)."""
    out = np.full(len(values), np.nan)
    means = window_means(values, width)
    half = width // 2
    out[half:half + means.size] = means
    return out
