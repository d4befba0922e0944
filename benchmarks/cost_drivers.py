"""What drives forescale's cost above the oracle's, under scaling benchmark protocol v1.

    .venv/bin/python benchmarks/cost_drivers.py --trace traces/nasa_ksc_jul1995_1min.csv
    .venv/bin/python benchmarks/cost_drivers.py --trace ../shared/traces/worldcup98_1min.csv \\
        --runs default,conf080

The question
------------
The scaling benchmark (``scaling.py``) says *how far* forescale's cost is above the oracle's
(the physical limit, ../shared/BENCHMARK.md); this script says *why*, so that work on the
cost goes where the pod-hours are. It answers it two ways.

1. **Decomposition** (every variant, reported for the defaults). At every scored step the
   extra pods over the oracle, ``desired − oracle``, are split additively along the
   decision pipeline (:func:`forescale.core.plan.plan`)::

       desired − oracle = (desired − recommended)          stabilisation hold (+ limits)
                        + (recommended − mean sizing)      band margin
                        + (mean sizing − oracle)           mean forecast vs. the oracle

   *recommended* is what sizing plus the chaos buffer asked for on the planned rate (the
   highest **upper** bound of the forecast over the planning window); *mean sizing* is the
   same sizing on the forecast **mean** over the same window; *desired* is what the plan
   asked for after stabilisation, cooldown, rate limits and bounds. Summed over the scored
   steps in pod-hours, the three terms add up exactly to forescale's extra pod-hours (a
   check column shows the residual, which must be 0: the pods that exist in a step are the
   ones the decision asked for, since scale-down is immediate and started pods count).
   At a decision that held for lack of metrics or forecasts, all of the step's extra goes
   to the last term (there is no recommendation to split it by).

2. **Knob variants**: the same replay with one PolicySpec setting changed (confidence of
   the band, scale-down stabilisation window, forecasting models), so the decomposition's
   attribution can be checked against what actually happens to cost *and* violations
   when a term is made smaller: a cost driver that can be cut for free is a bug, one that
   buys SLO is a trade-off.

How decisions are recorded (no patching)
----------------------------------------
The replay is the backtest's own (``runner.world_from_trace``, ``world.simulate``,
``forescale_policy.build_forescale_policy``, ``oracle.OraclePolicy``), unchanged.
``build_forescale_policy`` does not let a caller inject the plan function, so nothing here
replaces it; instead two wrappers observe from outside:

* :class:`RecordingChain` wraps the policy's forecast chain (``plan()`` accepts any object
  with ``.forecast(history, horizon, *, now)``) and keeps each decision's
  :class:`~forescale.core.forecast.chain.ChainResult`, returned unchanged. The
  recommendation and the mean sizing are then recomputed from the recorded forecast with the
  public pipeline steps ``plan.planning_window``, ``plan.planned_rate``,
  ``sizing.size`` and ``sizing.chaos_buffer`` — the same calls ``plan()`` makes; the
  recomputed planned rate is checked against the one the policy itself recorded at every
  step, so the reconstruction cannot silently drift from the real pipeline.
* :class:`RecordingPolicy` wraps the policy object and keeps the count each decision asked
  for.

Neither changes a decision: the wrapped chain returns what the chain returned, and the
wrapper policy returns what the policy returned.

Results go to ``--out`` (default ``benchmarks/results/cost_drivers.md``): a table per trace
and the decomposition of the default run. The raw figures are kept in a JSON comment at the
end of that file, so runs of different traces (one trace per invocation; a replay takes
1–3 minutes on one core) accumulate into one report; a rerun of a (trace, variant)
replaces its row. A ``## Conclusion`` section written into the report by hand is kept.
"""

from __future__ import annotations

from forescale.threads import limit_native_threads

limit_native_threads()  # before numpy and torch load

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from forescale.backtest.forescale_policy import ForescalePolicy, build_forescale_policy
from forescale.backtest.oracle import OraclePolicy
from forescale.backtest.runner import world_from_trace
from forescale.backtest.world import Observation, PolicyRun, World, simulate, world_policy_spec
from forescale.core.forecast.chain import ChainResult, ForecastChain
from forescale.core.plan import Forecasting, planned_rate, planning_window
from forescale.core.series import Series
from forescale.core.sizing import chaos_buffer, size
from forescale.core.spec import ModelName, PolicySpec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cost_drivers.md"
DATA_MARK = "cost_drivers data:"


@dataclass(frozen=True)
class Variant:
    """One named change to the world's default PolicySpec (None: left as it is)."""

    name: str
    label: str
    confidence: float | None = None
    stabilization_seconds: float | None = None
    models: tuple[ModelName, ...] | None = None

    def apply(self, spec: PolicySpec) -> PolicySpec:
        forecast, behavior = spec.forecast, spec.behavior
        if self.confidence is not None:
            forecast = replace(forecast, confidence=self.confidence)
        if self.models is not None:
            forecast = replace(forecast, models=self.models)
        if self.stabilization_seconds is not None:
            behavior = replace(behavior,
                               scale_down_stabilization_seconds=self.stabilization_seconds)
        return replace(spec, forecast=forecast, behavior=behavior)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("default", "default (confidence 0.9, stabilisation 300 s, lstm→arima→ma)"),
    Variant("conf085", "confidence 0.85", confidence=0.85),
    Variant("conf080", "confidence 0.8", confidence=0.8),
    Variant("stab120", "stabilisation 120 s", stabilization_seconds=120.0),
    Variant("ma", "models [ma]", models=("ma",)),
)}


# --- recording wrappers --------------------------------------------------------------------


class RecordingChain:
    """A forecast chain that remembers each decision's result (keyed by ``now``)."""

    def __init__(self, inner: Forecasting) -> None:
        self.inner = inner
        self.results: dict[float, ChainResult] = {}

    def forecast(self, history: Series, horizon: int, *, now: float) -> ChainResult:
        result = self.inner.forecast(history, horizon, now=now)
        self.results[now] = result
        return result


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


# --- the decomposition ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Per simulated step: what the plan asked for, recommended and would size on the mean."""

    desired: np.ndarray
    recommended: np.ndarray
    mean_sized: np.ndarray


def reconstruct(world: World, spec: PolicySpec, policy: ForescalePolicy,
                chain: RecordingChain, recorder: RecordingPolicy) -> Pipeline:
    """Recompute recommendation and mean sizing from each recorded forecast."""
    first, n = world.first_step, len(world)
    desired = np.array([recorder.desired[t] for t in range(first, n)], dtype=np.int64)
    recommended = desired.copy()
    mean_sized = desired.copy()
    mu = spec.service_rate_per_replica
    for i, t in enumerate(range(first, n)):
        now = world.time_of(t)
        result = chain.results.get(now)
        if result is None or result.forecast is None:
            continue  # held for lack of metrics or forecasts: nothing to split
        window = planning_window(spec, now)
        rate = planned_rate(result, window)
        if not np.isclose(rate, policy.planned_rate[t], rtol=1e-12, atol=0.0):
            raise AssertionError(f"step {t}: recomputed planned rate {rate} differs from the "
                                 f"policy's {policy.planned_rate[t]}")
        sized = size(rate, mu, spec.slo, spec.costs)
        recommended[i] = sized.replicas + chaos_buffer(sized.replicas, rate, mu, spec.slo,
                                                       spec.chaos).extra_replicas
        fc = result.forecast
        on_mean = replace(result, forecast=replace(fc, upper=fc.mean))
        mean_rate = planned_rate(on_mean, window)
        sized_mean = size(mean_rate, mu, spec.slo, spec.costs)
        mean_sized[i] = sized_mean.replicas + chaos_buffer(
            sized_mean.replicas, mean_rate, mu, spec.slo, spec.chaos).extra_replicas
    return Pipeline(desired, recommended, mean_sized)


def decompose(world: World, run: PolicyRun, oracle: PolicyRun,
              pipe: Pipeline) -> dict[str, float]:
    """The additive split of forescale's extra pod-hours over the oracle's."""
    hours = world.step_seconds / 3600.0
    scored = run.scored
    clamped = np.clip(pipe.desired, world.params.min_pods, world.params.max_pods)

    def pod_hours(x: np.ndarray) -> float:
        return float(x[scored].sum() * hours)

    oracle_pods = oracle.existing
    return {
        "extra": pod_hours(run.existing - oracle_pods),
        "hold": pod_hours(pipe.desired - pipe.recommended),
        "band": pod_hours(pipe.recommended - pipe.mean_sized),
        "mean": pod_hours(pipe.mean_sized - oracle_pods),
        "residual": pod_hours(run.existing - clamped),
        # where the extra sits: steps whose pods a stabilisation hold kept up, or not
        "extra_held_steps": pod_hours(np.where(pipe.desired > pipe.recommended,
                                               run.existing - oracle_pods, 0)),
    }


# --- one replay ----------------------------------------------------------------------------


def replay(world: World, oracle: PolicyRun, variant: Variant, *, lstm_epochs: int,
           log: Any) -> dict[str, Any]:
    spec = variant.apply(world_policy_spec(world.params, world.step_seconds))
    began = time.perf_counter()
    policy, training = build_forescale_policy(world, spec, lstm_epochs=lstm_epochs)
    chain = RecordingChain(policy.chain)
    # plan() takes any Forecasting; the attribute is typed as the concrete chain.
    policy.chain = cast(ForecastChain, chain)
    recorder = RecordingPolicy(policy)
    with policy.replay_scope():
        run = simulate(world, recorder)
    wall = time.perf_counter() - began
    figures = decompose(world, run, oracle, reconstruct(world, policy.spec, policy, chain,
                                                        recorder))
    served: Counter[str] = policy.served_by
    out: dict[str, Any] = {
        "variant": variant.name, "label": variant.label,
        "confidence": policy.spec.forecast.confidence,
        "stabilization_seconds": policy.spec.behavior.scale_down_stabilization_seconds,
        "models": list(policy.spec.forecast.models),
        "cost": run.cost_pod_hours, "oracle_cost": oracle.cost_pod_hours,
        "ratio": run.cost_pod_hours / oracle.cost_pod_hours,
        "violation_rate": run.violation_rate, "actions": run.scaling_actions,
        "served_by": dict(served.most_common()), "wall_seconds": wall,
        "training_seconds": training, **figures,
    }
    log(f"{variant.name}: {out['ratio']:.3f}x oracle, {100 * out['violation_rate']:.2f} % "
        f"violations, {out['actions']} actions, {wall:.0f} s")
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
    if not path.exists():
        return {}
    found = re.search(r"<!-- " + re.escape(DATA_MARK) + r"\n(.*?)\n-->", path.read_text(),
                      re.DOTALL)
    return json.loads(found.group(1)) if found else {}


def _served(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in ranked)


def render(data: dict[str, dict[str, Any]], conclusion: str = "") -> str:
    lines = ["# What drives forescale's cost above the oracle's", "",
             "Protocol v1 replays (../shared/BENCHMARK.md), one PolicySpec setting changed per "
             "variant; produced by `benchmarks/cost_drivers.py` (its docstring gives the "
             "method). Cost/oracle and violations are over the scored steps.", ""]
    order = list(VARIANTS)
    for trace, runs in data.items():
        lines += [f"## {trace}", "",
                  "| variant | cost/oracle | violations | scaling actions | forecasts served by |",
                  "|---|---:|---:|---:|---|"]
        for name in sorted(runs, key=lambda v: order.index(v) if v in order else len(order)):
            r = runs[name]
            lines.append(f"| {r['label']} | {r['ratio']:.3f}x | "
                         f"{100 * r['violation_rate']:.2f} % | {r['actions']} | "
                         f"{_served(r['served_by'])} |")
        lines.append("")
    lines += ["## Decomposition of the extra pod-hours (defaults)", "",
              "desired − oracle = (desired − recommended) + (recommended − mean sizing) + "
              "(mean sizing − oracle), summed over the scored steps.", "",
              "| trace | extra over oracle (pod-h) | stabilisation hold | band margin | "
              "mean sizing vs oracle | residual |",
              "|---|---:|---:|---:|---:|---:|"]
    for trace, runs in data.items():
        r = runs.get("default")
        if r is None:
            continue
        extra = r["extra"]

        def part(key: str, r: dict[str, Any] = r, extra: float = extra) -> str:
            return f"{r[key]:.0f} ({100 * r[key] / extra:.0f} %)"

        lines.append(f"| {trace} | {extra:.0f} | {part('hold')} | {part('band')} | "
                     f"{part('mean')} | {r['residual']:.1f} |")
    lines += [""] + ([conclusion.rstrip("\n"), ""] if conclusion else [])
    lines += ["<!-- " + DATA_MARK, json.dumps(data, indent=1, sort_keys=True), "-->", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trace", type=Path, required=True, help="a 1-minute trace CSV")
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

    world = world_from_trace(args.trace)
    oracle = simulate(world, OraclePolicy(world))
    trace = args.trace.name
    for name in names:  # one at a time: each replay is single-threaded and CPU-bound
        result = replay(world, oracle, VARIANTS[name], lstm_epochs=args.lstm_epochs, log=log)
        data = load_data(args.out)
        data.setdefault(trace, {})[name] = result
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(data, load_conclusion(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
