"""Missing-data intervals of the shared traces, keyed by file name.

Source: ``../shared/traces/README.md`` ("Provenance and caveats"), which lists the minutes
its authors filled with 0 because the source had no row. BENCHMARK.md §7 excludes them
from scoring; policies still see the zeros. A trace not listed here has none known (the
NASA trace's 162 zero minutes are genuine night-time zeros, per the same README).
"""

from __future__ import annotations

from pathlib import Path

from forescale.backtest.world import ExcludedInterval
from forescale.trace import parse_timestamp

_MINUTE = 60.0

#: (first minute, minutes) in UTC, as the README lists them.
_ZERO_FILLED: dict[str, tuple[tuple[str, int], ...]] = {
    # "Ten zero-filled minutes (1998-05-08 03:22; 1998-05-17 06:09, 06:19, 06:20, 06:25,
    # 09:43-09:45, 09:47; 1998-05-18 11:03)."
    "worldcup98_1min.csv": (
        ("1998-05-08T03:22:00Z", 1),
        ("1998-05-17T06:09:00Z", 1),
        ("1998-05-17T06:19:00Z", 2),
        ("1998-05-17T06:25:00Z", 1),
        ("1998-05-17T09:43:00Z", 3),
        ("1998-05-17T09:47:00Z", 1),
        ("1998-05-18T11:03:00Z", 1),
    ),
    "nasa_ksc_jul1995_1min.csv": (),
}


def known_missing(path: str | Path) -> tuple[ExcludedInterval, ...]:
    """The README-listed missing intervals of the trace at ``path`` (by file name)."""
    spans = _ZERO_FILLED.get(Path(path).name, ())
    out = []
    for first, minutes in spans:
        start = parse_timestamp(first)
        out.append(ExcludedInterval(start, start + minutes * _MINUTE,
                                    note="zero-filled in the source (traces/README.md)"))
    return tuple(out)
