"""The scaling benchmark: protocol v1 (../shared/BENCHMARK.md) on the shared 1-minute traces
and on robustness scenarios built from them (forescale.backtest.scenarios).

    .venv/bin/python benchmarks/scaling.py                  # every trace and scenario
    .venv/bin/python benchmarks/scaling.py --only nasa      # those whose name contains it
    .venv/bin/python benchmarks/scaling.py --set holdout    # the hold-out scenarios
    .venv/bin/python benchmarks/scaling.py --set seeds      # the scenarios drawn again

Writes ``benchmarks/results/scaling.md`` (a summary, then a table per trace) and
``scaling.json`` (every figure, as ``forescale backtest --json`` writes it); with
``--set holdout``, ``holdout.md`` and ``holdout.json``: the same for
``forescale.backtest.scenarios.HOLDOUT`` — fortnights of the real traces the defaults were
not developed on, and the robustness classes with other parameters — where a default that
fits only the first set shows (some changes were found on them: see holdout.md); with
``--set seeds``, ``seeds.md`` and ``seeds.json``: every scenario that draws at random, of
both sets, drawn again at seeds 1 and 2, where a figure that was one draw's luck shows. All
figures of one file come from one run; the wall times are this machine's (2 cores shared
with other work), so compare them only with each other. The 5-minute ELB trace is left
out: the protocol scores 60 s steps only (§1).

One default ScalingPolicy (the one that describes the world: μ, SLO, lead time; everything
else the core's defaults) serves every trace and scenario; nothing is chosen per trace.

The goals are the project's (issue "Decision core v2"), reported as met or not, never tuned
for: on every trace violations ≤ 1 % wherever the HPA at target 0.5 stays ≤ 3 %, and
equal-SLO cost ≤ 0.70 × the cheapest HPA that matches forescale's violation rate; on the
real traces cost ≤ 1.25 × the oracle (the moonshot: 1.10 ×); scaling actions at most
1.5 × those of the matched HPA. The calibrated bound's nominal coverage is printed against
its empirical coverage of the scoring rate.
"""

from __future__ import annotations

import os

from forescale.threads import limit_native_threads
from parallel import run_jobs
from provenance import code_version

limit_native_threads()  # before numpy and torch load

import argparse
import functools
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forescale.backtest.known_traces import known_missing
from forescale.backtest.oracle import LEVEL_WINDOW, level_reference
from forescale.backtest.report import describe_world, headline, markdown_table
from forescale.backtest.runner import (
    BacktestOptions,
    BacktestResult,
    run_backtest,
    world_from_trace,
)
from forescale.backtest.scenarios import HOLDOUT, SCENARIOS, scenario
from forescale.backtest.world import PolicyRun, World, build_world
from forescale.trace import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES_DIR = ROOT.parent / "shared" / "traces"
RESULTS = ROOT / "benchmarks" / "results"
TRACES = ("nasa_ksc_jul1995_1min.csv", "worldcup98_1min.csv")
SCENARIO_SEED = 0
#: ``--set seeds``' default: the scenarios drawn again, twice.
OTHER_SEEDS = (1, 2)
LEFT_OUT = {"aws_elb_request_count_nab_5min.csv":
            "5-minute steps: forecast evaluation only (BENCHMARK.md §1)"}

MAX_VIOLATION_RATE = 0.01
#: Where the HPA at target 0.5 violates more than this, the violation goal does not apply.
HPA_REFERENCE = (0.5, 0.03)
MAX_COST_TO_ORACLE = 1.25
MOONSHOT_COST_TO_ORACLE = 1.10
MAX_EQUAL_SLO_RATIO = 0.70
MAX_ACTIONS_RATIO = 1.5


class Log:
    """Progress as plain lines on stderr (a benchmark's log, not a terminal UI)."""

    def __init__(self, trace: str) -> None:
        self.trace = trace
        self.began = time.perf_counter()
        self._label = ""
        self._total = 0
        self._done = 0
        self._next = 0.0

    def phase(self, description: str, total: int) -> None:
        self._label, self._total, self._done, self._next = description, total, 0, 0.25
        self._say("started")

    def advance(self, steps: int) -> None:
        self._done += steps
        if self._label == "forescale" and self._done >= self._next * self._total:
            self._say(f"{self._done / self._total:.0%}")
            self._next += 0.25

    def _say(self, what: str) -> None:
        elapsed = time.perf_counter() - self.began
        print(f"[{elapsed:7.1f}s] {self.trace}: {self._label} {what}", file=sys.stderr,
              flush=True)


def _hpa_at(result: BacktestResult, target: float) -> PolicyRun | None:
    for t, run in result.hpa:
        if abs(t - target) < 1e-9:
            return run
    return None


def targets(result: BacktestResult, *, real: bool,
            limit: tuple[float, PolicyRun] | None = None) -> list[str]:
    fs = result.forescale
    if fs is None:
        return []
    lines = []
    reference = _hpa_at(result, HPA_REFERENCE[0])
    ok = fs.violation_rate <= MAX_VIOLATION_RATE
    if reference is not None and reference.violation_rate > HPA_REFERENCE[1]:
        lines.append(f"- violation rate {fs.violation_rate:.3%} (no goal: the HPA at "
                     f"{HPA_REFERENCE[0]} violates {reference.violation_rate:.2%} > "
                     f"{HPA_REFERENCE[1]:.0%})")
    else:
        lines.append(f"- violation rate {fs.violation_rate:.3%} (goal ≤ "
                     f"{MAX_VIOLATION_RATE:.0%}): {'met' if ok else 'NOT met'}")
    ratio = fs.cost_pod_hours / result.oracle.cost_pod_hours
    if real:
        ok = ratio <= MAX_COST_TO_ORACLE
        moon = ratio <= MOONSHOT_COST_TO_ORACLE
        lines.append(f"- cost {ratio:.3f} x oracle (goal ≤ {MAX_COST_TO_ORACLE:.2f}, moonshot "
                     f"≤ {MOONSHOT_COST_TO_ORACLE:.2f}): {'met' if ok else 'NOT met'}"
                     f"{', moonshot met' if moon else ''}")
    else:
        lines.append(f"- cost {ratio:.3f} x oracle")
    if limit is not None:
        multiplier, ref = limit
        lines.append(f"- practical limit: a clairvoyant of the centred {LEVEL_WINDOW}-minute "
                     f"mean with a margin tuned in hindsight (x{multiplier:.3f}) needs "
                     f"{ref.cost_pod_hours / result.oracle.cost_pod_hours:.3f} x oracle "
                     f"for {ref.violation_rate:.3%} violations; forescale pays "
                     f"{fs.cost_pod_hours / ref.cost_pod_hours:.3f} x that")
    comparison = result.equal_slo
    if comparison is not None:
        if comparison.matched and comparison.cost_ratio is not None:
            ok = comparison.cost_ratio <= MAX_EQUAL_SLO_RATIO
            lines.append(f"- equal-SLO cost {comparison.cost_ratio:.3f} x HPA@"
                         f"{comparison.hpa_target:.2f} (goal ≤ {MAX_EQUAL_SLO_RATIO:.2f}): "
                         f"{'met' if ok else 'NOT met'}")
        else:
            lines.append("- equal-SLO cost: HPA cannot match forescale's violation rate "
                         "(goal met)")
        matched = _hpa_at(result, comparison.hpa_target)
        if matched is not None and matched.scaling_actions:
            actions = fs.scaling_actions / matched.scaling_actions
            ok = actions <= MAX_ACTIONS_RATIO
            lines.append(f"- scaling actions {fs.scaling_actions} = {actions:.2f} x the "
                         f"matched HPA's {matched.scaling_actions} (goal ≤ "
                         f"{MAX_ACTIONS_RATIO}): {'met' if ok else 'NOT met'}")
    coverage = fs.details.get("coverage")
    if isinstance(coverage, dict) and coverage.get("empirical") is not None:
        lines.append(f"- calibrated bound: empirical coverage of the scoring rate "
                     f"{coverage['empirical']:.2%} at the step new pods are ready, over "
                     f"{coverage['steps']} calibrated steps (nominal "
                     f"{coverage['nominal']:.1%}, one minus the violation budget; adaptive "
                     f"conformal inference moves the bound's own level so that the plan's "
                     f"misses — bound, floors and stabilisation together — stay at the "
                     f"budget)")
    return lines


def section(result: BacktestResult, wall: float, *, real: bool, about: str = "",
            limit: tuple[float, PolicyRun] | None = None) -> str:
    parts = [f"## {result.trace_name}", "", *([about, ""] if about else []),
             describe_world(result) + ".", "", markdown_table(result), ""]
    parts += [f"{line}." for line in headline(result)]
    parts.append("")
    if result.forescale is not None:
        parts += ["Goals:", "", *targets(result, real=real, limit=limit), ""]
        details = result.forescale.details
        parts.append(f"forescale's forecasts were served by {details.get('served_by')}; "
                     f"the planned rate was set by {details.get('rate_sources')}; its LSTM "
                     f"trained for {result.training_seconds:.1f}s on the warm-up only "
                     f"(included in its wall time).")
    parts.append(f"Wall time for the whole trace (loading, world, every policy): "
                 f"{wall:.1f}s.")
    return "\n".join(parts) + "\n"


#: (name, trace file, scenario or None for the trace as it is, seed).
Job = tuple[str, Path, str | None, int]


def set_jobs(which: str, traces_dir: Path, seeds: Sequence[int] = OTHER_SEEDS) -> list[Job]:
    """The jobs of one set: ``main`` (the shared traces and the robustness scenarios),
    ``holdout`` (the hold-out scenarios) or ``seeds`` (every scenario that draws at random,
    of both, at ``seeds``)."""
    if which == "main":
        return [(n, traces_dir / n, None, SCENARIO_SEED) for n in TRACES] + [
            (f"scenario-{s.name}", traces_dir / s.base, s.name, SCENARIO_SEED)
            for s in SCENARIOS]
    if which == "holdout":
        return [(f"holdout-{s.name}", traces_dir / s.base, s.name, SCENARIO_SEED)
                for s in HOLDOUT]
    return [(f"{prefix}-{s.name}-seed{seed}", traces_dir / s.base, s.name, seed)
            for seed in seeds
            for prefix, group in (("scenario", SCENARIOS), ("holdout", HOLDOUT))
            for s in group if s.draws]


def job_world(job: Job) -> World:
    """One job's world: the trace as it is, or the scenario built from it at the job's
    seed. A scenario keeps its source's timestamps: the minutes the source's README lists
    as missing are excluded from scoring in it too (BENCHMARK.md §7)."""
    name, path, scenario_name, seed = job
    if scenario_name is None:
        return world_from_trace(path)
    rates = scenario(scenario_name).apply(load_trace(path).rates, seed)
    return build_world(rates, name=name, excluded=known_missing(path))


def run_trace(job: Job, options: BacktestOptions,
              ) -> tuple[str, dict[str, Any], str, list[str]]:
    """One trace or scenario (built with the job's seed), start to finish: (name, JSON
    document, markdown, summary)."""
    name, _, scenario_name, seed = job
    began = time.perf_counter()
    world = job_world(job)
    about = "" if scenario_name is None else (
        f"Robustness scenario `{scenario_name}` (seed {seed}): "
        f"{scenario(scenario_name).description}.")
    result = run_backtest(world, options, trace_name=name, progress=Log(name))
    limit = None
    if result.forescale is not None:
        limit = level_reference(world, result.forescale.violation_rate)
    wall = time.perf_counter() - began
    document: dict[str, Any] = result.to_dict()
    document["total_wall_seconds"] = wall
    if limit is not None:
        document["level_reference"] = {
            "window_steps": LEVEL_WINDOW, "multiplier": limit[0],
            "cost_pod_hours": limit[1].cost_pod_hours,
            "violation_rate": limit[1].violation_rate}
    real = scenario_name is None
    document["summary"] = summary_row(result, limit)
    return name, document, section(result, wall, real=real, about=about, limit=limit), [
        *headline(result), *targets(result, real=real, limit=limit)]


def summary_row(result: BacktestResult, limit: tuple[float, PolicyRun] | None,
                ) -> dict[str, Any]:
    """The figures of the summary table, for one trace."""
    fs = result.forescale
    if fs is None:
        return {}
    oracle = result.oracle.cost_pod_hours
    comparison = result.equal_slo
    row: dict[str, Any] = {
        "cost_to_oracle": fs.cost_pod_hours / oracle,
        "practical_limit": None if limit is None else limit[1].cost_pod_hours / oracle,
        "violation_rate": fs.violation_rate,
        "equal_slo": None, "hpa_best_violation_rate": None, "actions_ratio": None}
    if comparison is not None and comparison.matched:
        row["equal_slo"] = comparison.cost_ratio
        matched = _hpa_at(result, comparison.hpa_target)
        if matched is not None and matched.scaling_actions:
            row["actions_ratio"] = fs.scaling_actions / matched.scaling_actions
    elif comparison is not None:  # unmatched: the HPA target with the fewest violations
        row["hpa_best_violation_rate"] = comparison.hpa_violation_rate
    return row


def summary_table(documents: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| trace | cost / oracle | practical limit | violations | equal-SLO cost vs HPA "
             f"(goal ≤ {MAX_EQUAL_SLO_RATIO:.2f}) | actions vs matched HPA (goal ≤ "
             f"{MAX_ACTIONS_RATIO}) |", "|---|---:|---:|---:|---|---:|"]
    for name, document in documents.items():
        row = document.get("summary") or {}
        if not row:
            continue
        limit = row["practical_limit"]
        if row["equal_slo"] is not None:
            equal = f"{row['equal_slo']:.3f}"
        else:
            best = row["hpa_best_violation_rate"]
            equal = ("HPA cannot match" if best is None
                     else f"HPA cannot match (its best {best:.2%})")
        actions = row["actions_ratio"]
        lines.append(f"| {name} | {row['cost_to_oracle']:.3f} | "
                     f"{'–' if limit is None else f'{limit:.3f}'} | "
                     f"{row['violation_rate']:.3%} | {equal} | "
                     f"{'–' if actions is None else f'{actions:.2f}'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces-dir", type=Path, default=TRACES_DIR)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--only", help="run only traces whose file name contains this")
    parser.add_argument("--set", dest="which", choices=("main", "holdout", "seeds"),
                        default="main",
                        help="main: the shared traces and the robustness scenarios; "
                             "holdout: the hold-out scenarios; seeds: every scenario that "
                             "draws at random, at the seeds of --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(OTHER_SEEDS),
                        help="with --set seeds: the seeds to build the scenarios with")
    parser.add_argument("--lstm-epochs", type=int, default=BacktestOptions().lstm_epochs)
    parser.add_argument("--jobs", type=int, default=1,
                        help="traces replayed at once, one process each (wall times then "
                             "include the contention)")
    args = parser.parse_args(argv)
    version = code_version()  # before the run: the code it imports is the code of now

    if args.which == "seeds" and SCENARIO_SEED in args.seeds:
        parser.error(f"--seeds: seed {SCENARIO_SEED} is the main and hold-out sets' own")
    jobs = [j for j in set_jobs(args.which, args.traces_dir, args.seeds)
            if args.only is None or args.only in j[0]]
    options = BacktestOptions(lstm_epochs=args.lstm_epochs)
    outcomes = run_jobs(functools.partial(run_trace, options=options), jobs, args.jobs)
    sections, documents = [], {}
    for name, document, text, summary in outcomes:
        documents[name] = document
        sections.append(text)
        for line in summary:
            print(f"{name}: {line}", file=sys.stderr)

    now = datetime.now(tz=UTC)
    stem = {"main": "scaling", "holdout": "holdout", "seeds": "seeds"}[args.which]
    title = {"main": "# Scaling benchmark, protocol v1",
             "holdout": "# Scaling benchmark, protocol v1: hold-out scenarios",
             "seeds": "# Scaling benchmark, protocol v1: the scenarios at other seeds"
             }[args.which]
    header = [
        title,
        "",
        "Every figure below comes from one run of `python benchmarks/scaling.py` "
        f"(finished {now:%Y-%m-%d %H:%M} UTC, {version}; Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs shared with other work, "
        f"{args.jobs} trace(s) at a time), under "
        "[BENCHMARK.md](../../../shared/BENCHMARK.md) protocol v1: μ = 10 req/s per pod, SLO "
        "50 ms at 95 %, pods ready 120 s after the decision, rates rescaled so p99.9 = 100 "
        "pods' worth, scored against the centred 5-minute mean. Cost is pod-hours over the "
        "scored steps; \"x oracle\" is the distance to the physical limit; the equal-SLO "
        "column compares forescale with the cheapest HPA target whose violation rate is at "
        "most forescale's. forescale runs the operator's own `plan()` with the full "
        f"forecast chain (LSTM trained {options.lstm_epochs} epochs on the warm-up only, "
        "then ARIMA, then moving average).",
        "",
        *([f"Not run: `{n}` ({why})." for n, why in LEFT_OUT.items()]
          if args.which == "main" else [
              "Every scenario that draws at random (bursts, shifts, thinning, flash "
              "crowds, growth), of both sets, built again at seed(s) "
              f"{', '.join(map(str, args.seeds))} instead of {SCENARIO_SEED}: other burst "
              "days and heights, other shift lengths, other requests kept. Nothing was "
              "changed for these runs; they show whether the figures of scaling.md and "
              "holdout.md are the class's or one draw's."]
          if args.which == "seeds" else [
              "These scenarios (forescale.backtest.scenarios.HOLDOUT) are fortnights "
              "of the real traces other than the ones the defaults were developed on, "
              "and the robustness classes with other parameters. Changes found on them "
              "(issue 8): the bound's far-out fence and track records scored on the "
              "intensity; the sparse-service fixes of ε, the fence and recurring peaks, "
              "on `sparsest`, added for them. The violation budget's default (0.3 %) "
              "was chosen on the main scenarios, with these runs in view. A fortnight "
              "has a 4-day warm-up (protocol v1, §7)."]),
        "",
        "## Summary",
        "",
        *summary_table(documents),
        "",
        "The practical limit is a clairvoyant of the centred "
        f"{LEVEL_WINDOW}-minute mean with one margin tuned in hindsight to forescale's "
        "violation rate (`LevelReference`).",
        "",
    ]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{stem}.md").write_text("\n".join(header) + "\n" + "\n".join(sections))
    (args.out_dir / f"{stem}.json").write_text(json.dumps(documents, indent=2) + "\n")
    print(f"wrote {args.out_dir / (stem + '.md')} and {stem}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
