"""What drives forescale's cost above the oracle's, under scaling benchmark protocol v1.

    .venv/bin/python benchmarks/cost_drivers.py --trace traces/nasa_ksc_jul1995_1min.csv
    .venv/bin/python benchmarks/cost_drivers.py --trace ../shared/traces/worldcup98_1min.csv \\
        --runs default,budget1pct,ma
    .venv/bin/python benchmarks/cost_drivers.py \\
        --trace ../shared/traces/nasa_ksc_jul1995_1min.csv \\
        --scenario jittered-bursts --seed 1 --runs default,quorum40,quorum25 \\
        --out benchmarks/results/recurring_quorum.md

The question
------------
The scaling benchmark (``scaling.py``) says *how far* forescale's cost is above the oracle's
(the physical limit, ../shared/BENCHMARK.md); this script says *why*, so that work on the
cost goes where the pod-hours are. It answers it two ways.

1. **Decomposition** (every variant; the defaults' in detail). At every scored step the
   extra pods over the oracle, ``desired − oracle``, are split additively along the
   decision pipeline of decision core v2 (:func:`forescale.core.plan.plan`)::

       desired − oracle = (desired − recommended)          hold: stabilisation window,
                                                           scale-down tolerance, other limits
                        + (recommended − mean sizing)      band margin
                        + (mean sizing − oracle)           mean forecast vs. the oracle

   *recommended* is ``Plan.recommended_replicas``: sizing plus the chaos buffer on the
   planned rate, the highest of the calibrated upper bound of the intensity over the
   planning window (``ForecastBound``), the rate just observed (``ReactiveFloor``) and a
   recurring peak (``RecurringPeak``), or on a scale-up the bound over the look-ahead
   periods too (``ScaleUpLookahead``) — ``Plan.rate_source`` says which. *mean sizing* is
   the same sizing (and chaos buffer, and schedule multiplier) on the highest forecast
   **mean** over the same planning window (``Plan.forecast``, ``Plan.window_*``); so the
   band margin is everything the planned rate adds above the mean: the calibrated margin,
   or the floor's, the peak's or the look-ahead's excess over the mean where one of them
   set the rate.
   *desired* is what the plan asked for after stabilisation, the scale-down tolerance,
   cooldown, rate limits and bounds; the hold is split exactly with the plan's own
   ``LimitApplied`` records (``ScaleDownStabilized``: the window's highest recommendation;
   ``ScaleDownTolerance``: a reduction smaller than the tolerance not made, also of what
   the window left; *other*: the scale-up's minimum step, cooldown, rate limits,
   schedules, min/max).
   Summed over the scored steps in pod-hours, the terms add up exactly to forescale's extra
   pod-hours (a check column shows the residual, which must be 0: the pods that exist in a
   step are the ones the decision asked for, since scale-down is immediate and started pods
   count). At a decision that held for lack of metrics, all of the step's extra goes to the
   last term (there is no recommendation to split it by); at one where every forecaster
   failed and the plan sized for the reactive floor, there is no forecast mean, so the
   band margin is 0 there and the recommendation counts as the mean sizing.

   Beside the split: the share of the scored decisions whose planned rate was set by
   ``ReactiveFloor``, ``RecurringPeak`` or ``ScaleUpLookahead``, the extra pod-hours of
   those steps, and the band margin at those steps (the part of the margin that source is
   responsible for).

2. **Knob variants**: the same replay with one PolicySpec setting changed (the violation
   budget the calibrated bound's miss level is steered to, the scale-down stabilisation
   window, the forecasting models, the recurring peaks' quorum), so the decomposition's
   attribution can be checked against what actually happens to cost *and* violations when
   a term is made smaller: a cost driver that can be cut for free is a bug, one that buys
   SLO is a trade-off.

How decisions are recorded (observed, not changed)
--------------------------------------------------
The replay is the backtest's own (``runner.world_from_trace``, ``world.simulate``,
``forescale_policy.build_forescale_policy``, ``oracle.OraclePolicy``), unchanged. Under v2
the recommendation cannot be recomputed from a recorded forecast any more: the bound
depends on the plan state's records (scored errors, miss level), which change at every
decision. So the split reads what each ``plan()`` returned. ``ForescalePolicy.decide``
calls ``plan`` through its module's global name and keeps only some of the Plan; for the
replay only, :func:`observing_plan` rebinds that name to a :class:`PlanObserver`, which
calls the real :func:`~forescale.core.plan.plan` with the same arguments, keeps a few
integers of the returned Plan and returns the Plan itself, unchanged. The name is restored
afterwards. :class:`RecordingPolicy` wraps the policy and keeps the count each decision
returned; after the replay every simulated step must have exactly one observed Plan whose
``desired_replicas`` is that count, or the script fails.

Results go to ``--out`` (default ``benchmarks/results/cost_drivers.md``): a table per trace,
the decompositions and the rate sources, with the commit every row was run on and the load
average during its replay. The raw figures are kept in a JSON comment at the end of that
file, so runs of different traces (one trace per invocation) accumulate into one report; a
rerun of a (trace, variant) replaces its row, and rows of the v1 method (recomputed from a
recorded forecast, confidence variants) are dropped. A ``## Conclusion`` section written
into the report by hand is kept.
"""

from __future__ import annotations

from forescale.threads import limit_native_threads
from provenance import code_version
from scaling import SCENARIO_SEED, job_world

limit_native_threads()  # before numpy and torch load

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from forescale.backtest import forescale_policy
from forescale.backtest.forescale_policy import ForescalePolicy, build_forescale_policy
from forescale.backtest.oracle import OraclePolicy
from forescale.backtest.runner import world_from_trace
from forescale.backtest.world import Observation, PolicyRun, World, simulate, world_policy_spec
from forescale.core.plan import Plan, plan, window_steps
from forescale.core.sizing import chaos_buffer, size
from forescale.core.spec import ModelName, PolicySpec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cost_drivers.md"
DATA_MARK = "cost_drivers data:"
#: The method of the figures; rows of another method are dropped when the report is merged.
METHOD = 2
#: ``Plan.rate_source.reason`` values, coded per step (0: the plan held, no rate).
SOURCES = ("ForecastBound", "ReactiveFloor", "RecurringPeak", "ScaleUpLookahead")


@dataclass(frozen=True)
class Variant:
    """One named change to the world's default PolicySpec (None: left as it is)."""

    name: str
    label: str
    violation_budget: float | None = None
    stabilization_seconds: float | None = None
    models: tuple[ModelName, ...] | None = None
    recurring_quorum: float | None = None

    def apply(self, spec: PolicySpec) -> PolicySpec:
        slo, forecast, behavior = spec.slo, spec.forecast, spec.behavior
        if self.violation_budget is not None:
            slo = replace(slo, violation_budget=self.violation_budget)
        if self.models is not None:
            forecast = replace(forecast, models=self.models)
        if self.recurring_quorum is not None:
            forecast = replace(forecast, recurring_quorum=self.recurring_quorum)
        if self.stabilization_seconds is not None:
            behavior = replace(behavior,
                               scale_down_stabilization_seconds=self.stabilization_seconds)
        return replace(spec, slo=slo, forecast=forecast, behavior=behavior)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("default", "default (violation budget 0.003, stabilisation 300 s, "
                       "lstm→arima→ma)"),
    Variant("budget05pct", "violation budget 0.005 (the default until c391828)",
            violation_budget=0.005),
    Variant("budget1pct", "violation budget 0.01", violation_budget=0.01),
    Variant("stab120", "stabilisation 120 s", stabilization_seconds=120.0),
    Variant("stab0", "stabilisation 0 s (forecast-driven scale-down)",
            stabilization_seconds=0.0),
    Variant("ma", "models [ma]", models=("ma",)),
    Variant("quorum40", "recurring quorum 0.4 (3 of 7 days)", recurring_quorum=0.4),
    Variant("quorum25", "recurring quorum 0.25 (2 of 7 days)", recurring_quorum=0.25),
)}


# --- observing the decisions ---------------------------------------------------------------


class PlanObserver:
    """Calls the real :func:`plan` and keeps, per simulated step, what the split needs.

    Only a few integers per decision are kept, not the Plan (its state holds the records).
    """

    def __init__(self, world: World, spec: PolicySpec) -> None:
        self.world = world
        self.spec = spec
        size_ = len(world) - world.first_step
        self.seen = np.zeros(size_, dtype=np.int64)
        self.desired = np.zeros(size_, dtype=np.int64)
        #: recommended_replicas (the desired count where the plan held).
        self.recommended = np.zeros(size_, dtype=np.int64)
        #: After the stabilisation window, before the tolerance; after the tolerance.
        self.windowed = np.zeros(size_, dtype=np.int64)
        self.stabilised = np.zeros(size_, dtype=np.int64)
        self.mean_sized = np.zeros(size_, dtype=np.int64)
        self.source = np.zeros(size_, dtype=np.int8)
        self.no_forecast = np.zeros(size_, dtype=bool)
        self.loads: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Plan:
        decision = plan(*args, **kwargs)
        try:
            self._keep(decision)
        except Exception as exc:  # the replay must not go on with a broken record
            raise RuntimeError(f"cost_drivers could not record a decision: {exc}") from exc
        return decision

    def _keep(self, decision: Plan) -> None:
        world = self.world
        now = decision.window_start_seconds  # planning_window starts at now
        i = round((now - world.start_seconds) / world.step_seconds) - world.first_step
        self.seen[i] += 1
        if i % 1000 == 0:
            self.loads.append(os.getloadavg()[0])
        desired = decision.desired_replicas
        self.desired[i] = desired
        recommended = decision.recommended_replicas
        if recommended is None:  # held (metrics missing or stale): nothing to split
            self.recommended[i] = self.windowed[i] = self.stabilised[i] = desired
            self.mean_sized[i] = desired
            return
        assert decision.rate_source is not None
        self.source[i] = 1 + SOURCES.index(decision.rate_source.reason)
        self.recommended[i] = windowed = stabilised = recommended
        for lim in decision.limits:
            if lim.reason == "ScaleDownStabilized":  # before: recommended, after: the window's
                windowed = stabilised = lim.after
            elif lim.reason == "ScaleDownTolerance":  # before: what the window left
                windowed, stabilised = lim.before, lim.after
        self.windowed[i], self.stabilised[i] = windowed, stabilised
        fc = None if decision.forecast is None else decision.forecast.forecast
        if fc is None:  # every forecaster failed: sized for the floor (or a peak)
            self.no_forecast[i] = True
            self.mean_sized[i] = recommended
            return
        window = (decision.window_start_seconds, decision.window_end_seconds)
        overlap = window_steps(fc.start_seconds, fc.step_seconds, fc.horizon, window)
        rate = float(np.max(fc.mean[overlap]))
        if decision.schedules is not None:
            rate *= decision.schedules.multiplier
        spec, mu = self.spec, self.spec.service_rate_per_replica
        sized = size(rate, mu, spec.slo, spec.costs)
        self.mean_sized[i] = sized.replicas + chaos_buffer(
            sized.replicas, rate, mu, spec.slo, spec.chaos).extra_replicas


@contextlib.contextmanager
def observing_plan(observer: PlanObserver) -> Iterator[None]:
    """For the replay only, the backtest policy's ``plan`` is the observer (see above)."""
    original = getattr(forescale_policy, "plan")  # noqa: B009 (not re-exported)
    if original is not plan:
        raise RuntimeError("forescale_policy.plan is not the core's plan(); refusing to wrap")
    setattr(forescale_policy, "plan", observer)  # noqa: B010 (typed as the function)
    try:
        yield
    finally:
        setattr(forescale_policy, "plan", original)  # noqa: B010


@dataclass
class RecordingPolicy:
    """The policy, with the count each decision asked for remembered (by step)."""

    inner: ForescalePolicy
    desired: dict[int, int] = field(default_factory=dict)
    name: str = "forescale"

    def decide(self, observation: Observation) -> int:
        want = self.inner.decide(observation)
        self.desired[observation.step] = want
        return want


def check_observed(world: World, observer: PlanObserver, recorder: RecordingPolicy) -> None:
    """Every simulated step had one observed Plan, and it is what the policy returned."""
    first, n = world.first_step, len(world)
    if not (observer.seen == 1).all():
        bad = int(np.flatnonzero(observer.seen != 1)[0]) + first
        raise AssertionError(f"step {bad}: {observer.seen[bad - first]} plans observed")
    returned = np.array([recorder.desired[t] for t in range(first, n)], dtype=np.int64)
    if not np.array_equal(returned, observer.desired):
        bad = int(np.flatnonzero(returned != observer.desired)[0]) + first
        raise AssertionError(f"step {bad}: the policy returned {recorder.desired[bad]}, the "
                             f"observed plan asked for {observer.desired[bad - first]}")


# --- the decomposition ---------------------------------------------------------------------


def decompose(world: World, run: PolicyRun, oracle: PolicyRun,
              obs: PlanObserver) -> dict[str, Any]:
    """The additive split of forescale's extra pod-hours over the oracle's."""
    hours = world.step_seconds / 3600.0
    scored = run.scored
    clamped = np.clip(obs.desired, world.params.min_pods, world.params.max_pods)
    extra_pods = run.existing - oracle.existing

    def pod_hours(x: np.ndarray, where: np.ndarray = scored) -> float:
        return float(x[where].sum() * hours)

    band = obs.recommended - obs.mean_sized
    figures: dict[str, Any] = {
        "extra": pod_hours(extra_pods),
        "hold": pod_hours(obs.desired - obs.recommended),
        "hold_window": pod_hours(obs.windowed - obs.recommended),
        "hold_tolerance": pod_hours(obs.stabilised - obs.windowed),
        "hold_other": pod_hours(obs.desired - obs.stabilised),
        "band": pod_hours(band),
        "mean": pod_hours(obs.mean_sized - oracle.existing),
        "residual": pod_hours(run.existing - clamped),
        "decisions": int(scored.sum()),
        "held_decisions": int((scored & (obs.source == 0)).sum()),
        "no_forecast_decisions": int((scored & obs.no_forecast).sum()),
    }
    sources = {}
    for code, name in enumerate(SOURCES, start=1):
        at = scored & (obs.source == code)
        sources[name] = {"decisions": int(at.sum()), "extra": pod_hours(extra_pods, at),
                         "band": pod_hours(band, at)}
    figures["sources"] = sources
    return figures


# --- one replay ----------------------------------------------------------------------------


def replay(world: World, oracle: PolicyRun, variant: Variant, *, lstm_epochs: int,
           log: Any) -> dict[str, Any]:
    spec = variant.apply(world_policy_spec(world.params, world.step_seconds))
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    policy, training = build_forescale_policy(world, spec, lstm_epochs=lstm_epochs)
    observer = PlanObserver(world, policy.spec)
    recorder = RecordingPolicy(policy)
    with policy.replay_scope(), observing_plan(observer):
        run = simulate(world, recorder)
    wall = time.perf_counter() - began
    check_observed(world, observer, recorder)
    figures = decompose(world, run, oracle, observer)
    served: Counter[str] = policy.served_by
    loads = [load_before, *observer.loads, os.getloadavg()[0]]
    out: dict[str, Any] = {
        "method": METHOD, "variant": variant.name, "label": variant.label,
        "code": code_version(),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "violation_budget": policy.spec.slo.violation_budget,
        "stabilization_seconds": policy.spec.behavior.scale_down_stabilization_seconds,
        "models": list(policy.spec.forecast.models),
        "cost": run.cost_pod_hours, "oracle_cost": oracle.cost_pod_hours,
        "ratio": run.cost_pod_hours / oracle.cost_pod_hours,
        "violation_rate": run.violation_rate, "actions": run.scaling_actions,
        "served_by": dict(served.most_common()),
        "rate_sources": dict(policy.rate_sources.most_common()),
        "wall_seconds": wall, "training_seconds": training,
        "load_mean": float(np.mean(loads)), "load_max": float(np.max(loads)),
        **figures,
    }
    log(f"{variant.name}: {out['ratio']:.3f}x oracle, {100 * out['violation_rate']:.2f} % "
        f"violations, {out['actions']} actions, {wall:.0f} s, residual "
        f"{out['residual']:.1f}, load {out['load_mean']:.1f}")
    return out


# --- the report ----------------------------------------------------------------------------


CONCLUSION = "## Conclusion"


def load_conclusion(path: Path) -> str:
    """The hand-written conclusion of an earlier report, kept across reruns."""
    if not path.exists():
        return ""
    found = re.search(re.escape(CONCLUSION) + r"\n.*?(?=<!-- )", path.read_text(), re.DOTALL)
    return found.group(0).rstrip() + "\n\n" if found else ""


def load_data(path: Path) -> dict[str, dict[str, Any]]:
    """The figures already in the report, without rows of another method."""
    if not path.exists():
        return {}
    found = re.search(r"<!-- " + re.escape(DATA_MARK) + r"\n(.*?)\n-->", path.read_text(),
                      re.DOTALL)
    data: dict[str, dict[str, Any]] = {}
    if found:
        data = json.loads(found.group(1))
    kept = {trace: {name: r for name, r in runs.items() if r.get("method") == METHOD}
            for trace, runs in data.items()}
    return {trace: runs for trace, runs in kept.items() if runs}


def _shares(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in ranked)


def _ordered(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    order = list(VARIANTS)
    return [runs[name] for name in
            sorted(runs, key=lambda v: order.index(v) if v in order else len(order))]


def _ph(value: float) -> str:
    """Pod-hours, whole; two decimals below a half, so that a small figure is not shown as -0."""
    return f"{value:.0f}" if abs(value) >= 0.5 or value == 0 else f"{value:.2f}"


def _pct(value: float, total: float) -> str:
    return f"{_ph(value)} ({100 * value / total:.0f} %)" if total else _ph(value)


def render(data: dict[str, dict[str, Any]], conclusion: str = "") -> str:
    lines = ["# What drives forescale's cost above the oracle's", "",
             "Protocol v1 replays (../shared/BENCHMARK.md) of decision core v2, one "
             "PolicySpec setting changed per variant, one run each; produced by "
             "`benchmarks/cost_drivers.py` (its docstring gives the method). Cost/oracle, "
             "violations and every pod-hour figure are over the scored steps.", ""]
    for trace, runs in data.items():
        lines += [f"## {trace}", "",
                  "| variant | cost/oracle | violations | scaling actions | "
                  "planned rate set by | forecasts served by |",
                  "|---|---:|---:|---:|---|---|"]
        for r in _ordered(runs):
            lines.append(f"| {r['label']} | {r['ratio']:.3f}x | "
                         f"{100 * r['violation_rate']:.2f} % | {r['actions']} | "
                         f"{_shares(r['rate_sources'])} | {_shares(r['served_by'])} |")
        lines += ["", "| variant | code | finished | wall (s) | load average: mean (max) |",
                  "|---|---|---|---:|---:|"]
        lines += [f"| {r['variant']} | {r['code']} | {r['finished']} | "
                  f"{r['wall_seconds']:.0f} | {r['load_mean']:.1f} ({r['load_max']:.1f}) |"
                  for r in _ordered(runs)]
        lines.append("")

    lines += ["## Decomposition of the extra pod-hours (defaults)", "",
              "desired − oracle = (desired − recommended) + (recommended − mean sizing) + "
              "(mean sizing − oracle), summed over the scored steps; the hold split by the "
              "rule that made it.", "",
              "| trace | extra over oracle (pod-h) | hold: stabilisation window | "
              "hold: scale-down tolerance | hold: other limits | band margin | "
              "mean sizing vs oracle | residual |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for trace, runs in data.items():
        d = runs.get("default")
        if d is None:
            continue
        e = d["extra"]
        lines.append(f"| {trace} | {e:.0f} | {_pct(d['hold_window'], e)} | "
                     f"{_pct(d['hold_tolerance'], e)} | {_pct(d['hold_other'], e)} | "
                     f"{_pct(d['band'], e)} | {_pct(d['mean'], e)} | {d['residual']:.1f} |")

    lines += ["", "## What set the planned rate", "",
              "Share of the scored decisions whose planned rate was set by the reactive "
              "floor, a recurring peak or a scale-up's look-ahead (the rest: the calibrated "
              "bound, or a hold for lack of metrics), forescale's extra pod-hours over the "
              "oracle at those steps, and the band margin at those steps (recommended − "
              "mean sizing). A row run before the look-ahead existed shows – there.", "",
              "| trace | variant | ReactiveFloor: decisions | extra pod-h | band margin pod-h | "
              "RecurringPeak: decisions | extra pod-h | band margin pod-h | "
              "ScaleUpLookahead: decisions | extra pod-h | band margin pod-h |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for trace, runs in data.items():
        for r in _ordered(runs):
            n, e = r["decisions"] or 1, r["extra"]
            cells = []
            for source in SOURCES[1:]:
                s = r["sources"].get(source)
                if s is None:
                    cells += ["–"] * 3
                    continue
                cells += [f"{100 * s['decisions'] / n:.1f} %", _pct(s["extra"], e),
                          f"{s['band']:.0f}"]
            lines.append(f"| {trace} | {r['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "Decisions that held for lack of metrics, and those where every forecaster "
              "failed (sized for the floor, band margin 0): " + "; ".join(
                  f"{trace} {r['variant']} {r['held_decisions']} / {r['no_forecast_decisions']}"
                  for trace, runs in data.items() for r in _ordered(runs)) + ".", ""]

    lines += ["## Decomposition, every variant (pod-h)", "",
              "| trace | variant | cost/oracle | violations | extra | hold: window | "
              "hold: tolerance | hold: other | band margin | mean sizing vs oracle | residual |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for trace, runs in data.items():
        for r in _ordered(runs):
            lines.append(f"| {trace} | {r['variant']} | {r['ratio']:.3f}x | "
                         f"{100 * r['violation_rate']:.2f} % | {r['extra']:.0f} | "
                         f"{r['hold_window']:.0f} | {r['hold_tolerance']:.0f} | "
                         f"{_ph(r['hold_other'])} | {r['band']:.0f} | {r['mean']:.0f} | "
                         f"{r['residual']:.1f} |")
    lines += [""] + ([conclusion.rstrip("\n"), ""] if conclusion else [])
    lines += ["<!-- " + DATA_MARK, json.dumps(data, indent=1, sort_keys=True), "-->", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trace", type=Path, required=True,
                        help="a 1-minute trace CSV (with --scenario: the scenario's base)")
    parser.add_argument("--scenario", default=None,
                        help="replay this robustness scenario (backtest.scenarios) built "
                             "from --trace, as scaling.py does")
    parser.add_argument("--seed", type=int, default=SCENARIO_SEED,
                        help="with --scenario: the seed to build it with")
    parser.add_argument("--runs", default=",".join(VARIANTS),
                        help=f"comma-separated variants, of: {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the markdown report (merged with the figures already in it)")
    parser.add_argument("--lstm-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.scenario is None:
        world = world_from_trace(args.trace)
        trace = args.trace.name
    else:
        trace = f"{args.scenario} (seed {args.seed}) from {args.trace.name}"
        world = job_world((trace, args.trace, args.scenario, args.seed))
    oracle = simulate(world, OraclePolicy(world))
    for name in names:  # one at a time: each replay is single-threaded and CPU-bound
        result = replay(world, oracle, VARIANTS[name], lstm_epochs=args.lstm_epochs, log=log)
        data = load_data(args.out)
        data.setdefault(trace, {})[name] = result
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(data, load_conclusion(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
