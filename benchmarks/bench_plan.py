"""One ``plan()`` decision per forecaster, on 7 days of the NASA July 1995 trace.

Steady state, as the operator runs it: one chain and one plan state kept per policy, the
LSTM artifact loaded and ARIMA fitted by a first decision, then every decision one minute
after the last with one new sample (ARIMA is updated, not refitted, except every
``forecast.arima.refitSeconds``; the accuracy gate runs every time).

Decision core v2 does more in every decision than v1 did: it scores the pending forecasts
of earlier decisions (the stages' track records and the calibration histograms), steers the
miss level, and takes the calibrated bound; and every ``TRACK_PERIODS`` (5) decision
periods, at the aligned *track origins*, every runnable stage that is not serving forecasts
as a shadow run (for the chain: ARIMA and the moving average beside the serving LSTM). So
that the records are in their steady state too, :data:`WARMUP` decisions (4 h) are made
before the measured ones: the tracks hold their 30 scored origins after ~150 and the bound
is calibrated after ~180. The measured decisions are consecutive, so one in five is a
track origin; the report counts them and gives their median separately, and counts the
ARIMA refits inside the measured window (read from the chain, not changed).

    .venv/bin/pytest benchmarks/bench_plan.py --benchmark-enable     # pytest-benchmark
    .venv/bin/python benchmarks/bench_plan.py                        # writes results/plan.md
"""

from __future__ import annotations

from forescale.threads import limit_native_threads
from provenance import code_version

limit_native_threads()  # before numpy and torch load

import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forescale.core.forecast.chain import ForecastChain
from forescale.core.plan import TRACK_PERIODS, Plan, PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, ModelName, PolicySpec
from forescale.trace import load_trace, parse_timestamp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = ROOT / "models" / "nasa-jul1995"
START = parse_timestamp("1995-07-15T04:00:00Z")  # after the model's training range
WEEK = 7 * 1440
#: Decisions made before the measured ones, so the plan state's records are full.
WARMUP = 240
STAGES: dict[str, tuple[ModelName, ...]] = {"lstm": ("lstm",), "arima": ("arima",), "ma": ("ma",),
                                      "chain": ("lstm", "arima", "ma")}


@dataclass
class Decider:
    """A warm policy for one forecaster; each call decides one minute after the last."""

    rates: Series
    spec: PolicySpec
    chain: ForecastChain
    i: int
    state: PlanState
    replicas: int = 5

    def __call__(self) -> Plan:
        history = self.rates.head(self.i).tail(WEEK)
        result = plan(history, self.spec, self.state, history.end_seconds,
                      current_replicas=self.replicas, chain=self.chain)
        self.i += 1
        self.state, self.replicas = result.state, result.desired_replicas
        return result

    def arima_fitted_at(self) -> float | None:
        """When the chain last fitted ARIMA (read only, to count refits)."""
        return self.chain._fitted_at.get("arima")


def decider(stage: str, *, warmup: int = 0) -> Decider:
    """A warm policy: the first decision at ``START`` loads the artifact and fits ARIMA,
    then ``warmup`` more fill the plan state's records."""
    rates = load_trace(ROOT / "traces" / "nasa_ksc_jul1995_1min.csv").rates
    spec = PolicySpec(service_rate_per_replica=0.5, max_replicas=1000,
                      forecast=ForecastSettings(models=STAGES[stage], lstm_model=str(MODEL)))
    decide = Decider(rates, spec, ForecastChain(spec.forecast), len(rates.until(START)),
                     PlanState.initial())
    for _ in range(1 + warmup):
        decide()
    return decide


def _bench(benchmark: Any, stage: str) -> None:
    benchmark(decider(stage, warmup=WARMUP))


def test_plan_lstm(benchmark: Any) -> None:
    _bench(benchmark, "lstm")


def test_plan_arima(benchmark: Any) -> None:
    _bench(benchmark, "arima")


def test_plan_ma(benchmark: Any) -> None:
    _bench(benchmark, "ma")


def test_plan_chain(benchmark: Any) -> None:
    _bench(benchmark, "chain")


@dataclass(frozen=True)
class Row:
    stage: str
    median_ms: float
    p99_ms: float
    max_ms: float
    track_median_ms: float
    other_median_ms: float
    track_decisions: int
    refits: int
    served_by: Counter[str]
    calibrated: int


def measure(stage: str, decisions: int, on_decision: Callable[[], None] | None = None) -> Row:
    decide = decider(stage, warmup=WARMUP)
    times: list[float] = []
    track: list[bool] = []
    served: Counter[str] = Counter()
    calibrated = refits = 0
    for _ in range(decisions):
        fitted = decide.arima_fitted_at()
        t = time.perf_counter()
        result = decide()
        times.append(time.perf_counter() - t)
        # A track origin: this decision (now = the end of its history) recorded its
        # forecasts for the track records.
        track.append(result.state.records.last_track_origin() == result.window_start_seconds)
        refits += int(fitted is not None and decide.arima_fitted_at() != fitted)
        served[result.served_by or "none"] += 1
        calibrated += int(result.bound_calibrated)
        if on_decision is not None:
            on_decision()
    on_track = [x for x, due in zip(times, track, strict=True) if due]
    others = [x for x, due in zip(times, track, strict=True) if not due]
    ordered = sorted(times)
    return Row(stage, statistics.median(times) * 1000,
               ordered[int(0.99 * (len(ordered) - 1))] * 1000, ordered[-1] * 1000,
               statistics.median(on_track) * 1000 if on_track else float("nan"),
               statistics.median(others) * 1000 if others else float("nan"),
               len(on_track), refits, served, calibrated)


def main(decisions: int = 300) -> None:
    loads: list[float] = [os.getloadavg()[0]]
    count = 0

    def sample() -> None:
        nonlocal count
        count += 1
        if count % 50 == 0:
            loads.append(os.getloadavg()[0])

    rows = [measure(stage, decisions, sample) for stage in STAGES]
    loads.append(os.getloadavg()[0])

    def served(r: Row) -> str:
        return ", ".join(f"{k} {v}" for k, v in r.served_by.most_common())

    lines = [
        "# One plan() decision per forecaster",
        "",
        f"Written by `python benchmarks/bench_plan.py` on {code_version()}, finished "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: decision core v2, "
        f"{decisions} consecutive decisions a minute apart on 7 days of NASA history after "
        f"15 July 1995 (the LSTM artifact's training range ends there), one chain and one "
        f"plan state kept per policy, after one decision that loads the artifact and fits "
        f"ARIMA and {WARMUP} more that fill the plan state's track records and calibration "
        f"(steady state). Each includes scoring earlier forecasts (track records, "
        f"calibration, miss level), the forecast, the accuracy gate, the calibrated bound, "
        f"Erlang C sizing and the behaviour rules. Every {TRACK_PERIODS}th decision is a "
        f"track origin, where the stages that are not serving forecast as shadow runs; "
        f"these are among the measured decisions (column *track origins*) and their median "
        f"is shown apart. ARIMA refits every 6 h of trace time (21600 s): the *refits* "
        f"column counts those inside the measured decisions, the slowest of them is then "
        f"usually the refit.",
        "",
        "| forecaster | median ms | p99 ms | max ms | track origins | median ms at track "
        "origins | median ms otherwise | ARIMA refits | served by | bound calibrated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        *(f"| {r.stage} | {r.median_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | "
          f"{r.track_decisions} | {r.track_median_ms:.2f} | {r.other_median_ms:.2f} | "
          f"{r.refits} | {served(r)} | {r.calibrated} |" for r in rows),
        "",
        f"Python {platform.python_version()}, {platform.machine()}, one BLAS thread, "
        f"2 CPUs shared with other work (load average {min(loads):.1f}–{max(loads):.1f} "
        f"during the run, sampled every 50 decisions).",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "plan.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
