"""How often a recurring peak turns on a tie between the clock-time rise and the noise's.

    .venv/bin/python benchmarks/peak_ties.py --jobs 2

:func:`forescale.core.calendar.recurring_peak` provisions for a clock-time rise only when
its ratio exceeds ``typical``, what the same ratio reaches one time in ten at any time of
the same days, by more than :data:`~forescale.core.calendar.TIE_MARGIN` (10⁻³ since
b8c7e85). On counts both are ratios of small whole numbers and often tie exactly (x2.00
and x2.00); computed in floats, one comes out a few units in the last place above the
other. Without the margin such ties were decided by rounding (and, read through
Prometheus's ``rate()``, by its jitter: ``prometheus_jitter.py``): on the ~3 requests a
minute scenario, 92 of its 385 decisions with a peak (at 452f8d6).

The peak depends on the history, the window and ``now`` alone, not on earlier decisions,
so it is evaluated here at every decision of every benchmark world (the main, hold-out and
seeds sets, as ``scaling.py`` builds them) without replaying the models. For each world:
the decisions with a peak, and those whose ratio is within a relative margin of
``typical`` (10⁻⁶: a tie up to rounding; 10⁻³: the rule's margin, so both must be 0 now;
10⁻²: what a ten times larger margin would still remove).

Writes ``benchmarks/results/peak_ties.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forescale.backtest.world import world_policy_spec
from forescale.core import calendar
from forescale.core.calibration import intensity_steps
from forescale.core.plan import planning_window
from forescale.core.schedules import time_zone
from forescale.core.series import Series
from forescale.core.window import history_steps
from parallel import run_jobs
from provenance import code_version
from scaling import Job, job_world, set_jobs

ROOT = Path(__file__).resolve().parents[1]
TRACES_DIR = ROOT.parent / "shared" / "traces"
RESULTS = ROOT / "benchmarks" / "results"
MARGINS = (1e-6, 1e-3, 1e-2)


def count(job: Job) -> dict[str, Any]:
    """Every decision of one world: peaks, and peaks within each margin of ``typical``."""
    label = job[0]
    world = job_world(job)
    spec = world_policy_spec(world.params, world.step_seconds)
    keep = history_steps(spec.forecast.history_seconds, world.step_seconds)
    zone = time_zone(spec.forecast.recurring_time_zone)
    steps = intensity_steps(spec.forecast.intensity_seconds, world.step_seconds)
    peaks, within = 0, dict.fromkeys(MARGINS, 0)
    for t in range(world.first_step, len(world)):
        first = max(t - keep, 0)
        history = Series(world.start_seconds + first * world.step_seconds,
                         world.step_seconds, world.observed[first:t])
        now = world.time_of(t)
        peak = calendar.recurring_peak(history, planning_window(spec, now), now,
                                       days=spec.forecast.recurring_days,
                                       quorum=spec.forecast.recurring_quorum, zone=zone,
                                       intensity_steps=steps)
        if peak is None:
            continue
        peaks += 1
        if peak.typical is not None:
            for m in MARGINS:
                within[m] += peak.ratio <= peak.typical * (1.0 + m)
    print(f"{label}: {peaks} decisions with a peak, within margins {within}",
          file=sys.stderr)
    return {"world": label, "decisions": len(world) - world.first_step, "peaks": peaks,
            "within": {str(m): n for m, n in within.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-dir", type=Path, default=TRACES_DIR)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    version = code_version()
    jobs = [job for which in ("main", "holdout", "seeds")
            for job in set_jobs(which, args.traces_dir)]
    rows = run_jobs(count, jobs, args.jobs)
    now = datetime.now(tz=UTC)
    head = " | ".join(f"within {m:g}" for m in MARGINS)
    text = [
        "# Recurring peaks near a tie with the noise's rise",
        "",
        f"One run of `python benchmarks/peak_ties.py` (finished {now:%Y-%m-%d %H:%M} UTC, "
        f"{version}): at every decision of every world of the scaling benchmark's three "
        "sets, whether a recurring peak is provisioned for, and whether its rise is within "
        "a relative margin of what the traffic's noise reaches one time in ten. Within "
        "1e-06 is a tie up to rounding; the rule demands more than "
        f"{calendar.TIE_MARGIN:g}, so peaks within it must not occur; a larger margin m "
        "would remove exactly those counted under it. The script's docstring says why.",
        "",
        f"| world | decisions | with a peak | {head} |",
        "|---|---:|---:|" + "---:|" * len(MARGINS),
        *(f"| {r['world']} | {r['decisions']:,} | {r['peaks']:,} | "
          + " | ".join(f"{r['within'][str(m)]:,}" for m in MARGINS) + " |" for r in rows),
        "",
        "Worlds with peaks within each margin: "
        + ", ".join(f"{sum(r['within'][str(m)] > 0 for r in rows)} of {len(rows)} at {m:g}"
                    for m in MARGINS) + ".",
        "",
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "peak_ties.md").write_text("\n".join(text))
    (args.out_dir / "peak_ties.json").write_text(json.dumps(
        {"finished": now.isoformat(), "code": version, "margins": MARGINS, "worlds": rows},
        indent=2) + "\n")
    print("\n".join(text[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
