"""Declared events: cron schedules that set a floor or ceiling on replicas, or multiply the
forecast, for a while.

A schedule is a 5-field cron expression (or ``@daily``-style macro) read in an IANA time
zone, so ``0 9 * * 1`` in ``Europe/Paris`` is 09:00 Paris time every Monday across
daylight-saving changes; each occurrence lasts ``duration_seconds``. Pure: times are Unix
seconds passed in, never read.

**Lead time.** Pods asked for at a decision are ready ``leadTimeSeconds`` later, and the
next decision comes a decision period after this one; so an occurrence counts for the
plan made at ``now`` as soon as it overlaps the planning window ``[now, now + lead +
period)``. The floor of a launch at 09:00 is therefore in place by 09:00, not requested
at 09:00. It stops counting when the occurrence ends. A ``forecastMultiplier`` below 1 (a
quiet period) is the exception: it counts only while its occurrence covers the whole
planning window, so capacity is neither cut before the traffic drops nor missing when it
returns.

**Combining.** With several active schedules the highest floor, the lowest ceiling and the
highest multiplier win; a ceiling never goes below a floor (the floor wins: a declared
event must get its capacity). The policy's minReplicas/maxReplicas still bound the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from forescale.core.checks import is_integer, is_number, is_text
from forescale.core.checks import require as _require
from forescale.core.errors import InvalidInputError

#: Occurrences longer than this are refused: a "schedule" that lasts weeks is a bound.
MAX_DURATION_SECONDS = 31 * 86400.0
#: How far ahead the next start is looked for (a yearly cron is fine; Feb 30 is not).
NEXT_START_LIMIT_SECONDS = 366 * 86400.0 * 5
#: Where a cron's matches are looked for when the schedule is checked (any fixed day).
REFERENCE_DAY = datetime(2000, 1, 1, tzinfo=UTC)


def time_zone(name: str) -> ZoneInfo:
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a directory
        raise InvalidInputError(f"unknown time zone {name!r} (use an IANA name such as "
                                "Europe/Paris or UTC)") from None


def _drawn(cron: str) -> bool:
    """Whether ``cron`` has a field croniter draws at random (``R``, ``R(0-29)``) or hashes
    (``H``): such a schedule would start at a different time at every decision."""
    return any(re.fullmatch(r"[RH](\(.*\))?", token.strip(), flags=re.IGNORECASE)
               for token in re.split(r"[\s,/]+", cron))


def _fixed_hours(cron: str) -> bool:
    """Whether ``cron`` starts at given times of day (neither its minute nor its hour field
    has a ``*``, as cron(8) tells a fixed-time job from a wildcard one; a macro other than
    ``@hourly``)."""
    fields = cron.split()
    if len(fields) == 1:
        return fields[0].lower() != "@hourly"
    return "*" not in fields[0] and "*" not in fields[1]


@dataclass(frozen=True)
class Schedule:
    """One declared event. At least one of ``min_replicas`` (a floor), ``max_replicas`` (a
    ceiling) and ``forecast_multiplier`` (the planned arrival rate is multiplied by it)."""

    name: str
    cron: str
    duration_seconds: float
    time_zone: str = "UTC"
    min_replicas: int | None = None
    max_replicas: int | None = None
    forecast_multiplier: float | None = None
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        _require(is_text(self.name), f"a schedule needs a name, got {self.name!r}")
        _require(isinstance(self.cron, str) and croniter.is_valid(self.cron),
                 f"{where}: cron {self.cron!r} is not a valid cron expression "
                 "(minute hour day-of-month month day-of-week, e.g. '0 9 * * 1')")
        _require(len(self.cron.split()) in (1, 5),
                 f"{where}: cron {self.cron!r} must have 5 fields (no seconds field)")
        _require(not _drawn(self.cron),
                 f"{where}: cron {self.cron!r} draws a time (R, H): a plan must be the same "
                 "every time it is made, so give the minute and hour")
        try:
            object.__setattr__(self, "_zone", time_zone(self.time_zone))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        # Valid syntax, impossible date: '0 9 30 2 *' (30 February) parsed, then failed
        # every decision that looked for its start (croniter's CroniterBadDateError), and
        # one typo stopped the whole policy from scaling. Every real date, 29 February
        # included, comes within 4 years of any day, so a fixed one is enough to tell.
        try:
            croniter(self.cron, REFERENCE_DAY).get_next(datetime)
            croniter(self.cron, REFERENCE_DAY).get_prev(datetime)
        except CroniterBadDateError:
            raise InvalidInputError(f"{where}: cron {self.cron!r} never matches a date (a "
                                    "day that does not exist in that month?)") from None
        _require(is_number(self.duration_seconds)
                 and 0 < self.duration_seconds <= MAX_DURATION_SECONDS,
                 f"{where}: durationSeconds must be positive and at most 31 days, "
                 f"got {self.duration_seconds!r}s")
        _require(self.min_replicas is not None or self.max_replicas is not None
                 or self.forecast_multiplier is not None,
                 f"{where}: set minReplicas, maxReplicas or forecastMultiplier")
        for label, value in (("minReplicas", self.min_replicas),
                             ("maxReplicas", self.max_replicas)):
            _require(value is None or (is_integer(value) and value >= 1),
                     f"{where}: {label} must be a positive integer, got {value!r}")
        if self.min_replicas is not None and self.max_replicas is not None:
            _require(self.min_replicas <= self.max_replicas,
                     f"{where}: minReplicas ({self.min_replicas}) must not exceed "
                     f"maxReplicas ({self.max_replicas})")
        m = self.forecast_multiplier
        _require(m is None or (is_number(m) and math.isfinite(m) and m > 0),
                 f"{where}: forecastMultiplier must be a positive number, got {m!r}")

    def _local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=UTC).astimezone(self._zone)

    def _repeated(self, start: datetime) -> bool:
        """Whether ``start`` is the second pass of a wall-clock time the clocks went back
        over (01:30 EST after 01:30 EDT), for a schedule at fixed hours: that event already
        started, as cron runs such a job once (a schedule at every hour still runs in
        both passes, as an hour did pass)."""
        return (start.fold == 1 and _fixed_hours(self.cron)
                and start.replace(fold=0).utcoffset() != start.utcoffset())

    def last_start(self, t: float) -> float:
        """The latest start at or before ``t`` (a start exactly at ``t`` counts)."""
        # croniter's get_prev is strictly before its base; starts are on whole minutes,
        # so half a second past t includes a start at t and nothing later.
        it = croniter(self.cron, self._local(t + 0.5))
        prev: datetime = it.get_prev(datetime)
        while self._repeated(prev):
            prev = it.get_prev(datetime)
        return prev.timestamp()

    def next_start(self, t: float) -> float | None:
        """The first start strictly after ``t``, or None if there is none within years."""
        try:
            it = croniter(self.cron, self._local(t))
            nxt: datetime = it.get_next(datetime)
            while self._repeated(nxt):
                nxt = it.get_next(datetime)
        except (OverflowError, ValueError):  # after the year 9999
            return None
        start = nxt.timestamp()
        return start if start - t <= NEXT_START_LIMIT_SECONDS else None

    def occurrences(self, start: float, end: float) -> list[tuple[float, float]]:
        """Every occurrence ``[s, s + duration)`` that overlaps ``[start, end)``."""
        found = []
        s = self.last_start(start)
        # The last start before the window may still be running; later ones start in it.
        if s + self.duration_seconds > start:
            found.append((s, s + self.duration_seconds))
        t = s
        while True:
            nxt = self.next_start(t)
            if nxt is None or nxt >= end:
                break
            if nxt + self.duration_seconds > start and (not found or found[-1][0] != nxt):
                found.append((nxt, nxt + self.duration_seconds))
            t = nxt
        return found

    def covers(self, start: float, end: float) -> bool:
        """Whether one occurrence lasts over the whole of ``[start, end)``."""
        return self.last_start(start) + self.duration_seconds >= end

    def overlap_and_next(self, start: float, end: float) -> tuple[bool, float | None]:
        """Whether an occurrence overlaps ``[start, end)``, and the first start after
        ``start``: what one decision needs, with two cron look-ups (the plan runs this for
        every schedule at every decision, the backtest tens of thousands of times)."""
        running = self.last_start(start) + self.duration_seconds > start
        nxt = self.next_start(start)
        # Any occurrence other than the running one starts at or after the next start.
        return running or (nxt is not None and nxt < end), nxt


@dataclass(frozen=True)
class ScheduleEffect:
    """What the schedules change for one decision."""

    #: Names of the schedules with an occurrence in the planning window.
    active: tuple[str, ...] = ()
    floor: int | None = None
    ceiling: int | None = None
    multiplier: float = 1.0
    #: The next occurrence that starts after ``now`` (any schedule), for the status.
    next_name: str | None = None
    next_start_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"active": list(self.active), "floor": self.floor, "ceiling": self.ceiling,
                "multiplier": self.multiplier, "nextName": self.next_name,
                "nextStartSeconds": self.next_start_seconds}


def effect(schedules: Sequence[Schedule], window: tuple[float, float]) -> ScheduleEffect:
    """The schedules' combined effect on a plan whose window is ``[now, end)``."""
    if not schedules:
        return ScheduleEffect()
    now, end = window
    looked = [(s, *s.overlap_and_next(now, end)) for s in schedules]
    active = [s for s, overlaps, _ in looked if overlaps]
    floors = [s.min_replicas for s in active if s.min_replicas is not None]
    ceilings = [s.max_replicas for s in active if s.max_replicas is not None]
    # A multiplier above 1 counts as soon as its occurrence overlaps the window (the
    # capacity must be ready when the event starts); one below 1 only while its occurrence
    # covers the whole window: the traffic is not reduced yet before the event starts, and
    # pods must be ready for its return when it ends.
    multipliers = [s.forecast_multiplier for s in active if s.forecast_multiplier is not None
                   and (s.forecast_multiplier >= 1 or s.covers(now, end))]
    upcoming = [(nxt, s.name) for s, _, nxt in looked if nxt is not None]
    next_start, next_name = min(upcoming) if upcoming else (None, None)
    return ScheduleEffect(active=tuple(s.name for s in active),
                          floor=max(floors) if floors else None,
                          ceiling=min(ceilings) if ceilings else None,
                          multiplier=max(multipliers) if multipliers else 1.0,
                          next_name=next_name, next_start_seconds=next_start)


def bound(proposed: int, eff: ScheduleEffect) -> tuple[int, str | None, str]:
    """``proposed`` within the active floor and ceiling; the reason (``ScheduledFloor`` or
    ``ScheduledCeiling``) and a message when they changed it. The floor wins over a
    ceiling below it."""
    result = proposed
    if eff.ceiling is not None:
        result = min(result, eff.ceiling)
    if eff.floor is not None:
        result = max(result, eff.floor)
    names = ", ".join(eff.active)
    if result > proposed:
        return result, "ScheduledFloor", (f"raised to {result} replicas by schedule "
                                          f"{names}")
    if result < proposed:
        return result, "ScheduledCeiling", (f"capped at {result} replicas by schedule "
                                            f"{names}")
    return result, None, ""
