"""One ``plan()`` decision per forecaster, on 7 days of the NASA July 1995 trace.

Steady state, as the operator runs it: one chain kept per policy, the LSTM artifact loaded
and ARIMA fitted by a first decision, then every decision one minute after the last with
one new sample (ARIMA is updated, not refitted; the accuracy gate runs every time).

    .venv/bin/pytest benchmarks/bench_plan.py --benchmark-enable     # pytest-benchmark
    .venv/bin/python benchmarks/bench_plan.py                        # writes results/plan.md
"""

from __future__ import annotations

from forescale.threads import limit_native_threads

limit_native_threads()  # before numpy and torch load

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forescale.core.forecast.chain import ForecastChain
from forescale.core.plan import Plan, PlanState, plan
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings, PolicySpec
from forescale.trace import load_trace, parse_timestamp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = ROOT / "models" / "nasa-jul1995"
START = parse_timestamp("1995-07-15T04:00:00Z")  # after the model's training range
WEEK = 7 * 1440
STAGES: dict[str, tuple[str, ...]] = {"lstm": ("lstm",), "arima": ("arima",), "ma": ("ma",),
                                      "chain": ("lstm", "arima", "ma")}


def decider(stage: str) -> Callable[[], Plan]:
    """A warm policy for one forecaster; each call decides one minute after the last."""
    rates = load_trace(ROOT / "traces" / "nasa_ksc_jul1995_1min.csv").rates
    start = len(rates.until(START))
    spec = PolicySpec(service_rate_per_replica=0.5, max_replicas=1000,
                      forecast=ForecastSettings(models=STAGES[stage], lstm_model=str(MODEL)))
    chain = ForecastChain(spec.forecast)
    box: dict[str, Any] = {"i": start, "state": PlanState.initial(), "replicas": 5}

    def decide() -> Plan:
        i = box["i"]
        history: Series = rates.head(i).tail(WEEK)
        result = plan(history, spec, box["state"], history.end_seconds,
                      current_replicas=box["replicas"], chain=chain)
        box.update(i=i + 1, state=result.state, replicas=result.desired_replicas)
        return result

    decide()  # load the artifact, fit ARIMA
    return decide


def _bench(benchmark: Any, stage: str) -> None:
    benchmark(decider(stage))


def test_plan_lstm(benchmark: Any) -> None:
    _bench(benchmark, "lstm")


def test_plan_arima(benchmark: Any) -> None:
    _bench(benchmark, "arima")


def test_plan_ma(benchmark: Any) -> None:
    _bench(benchmark, "ma")


def test_plan_chain(benchmark: Any) -> None:
    _bench(benchmark, "chain")


def main(decisions: int = 300) -> None:
    rows = []
    for stage in STAGES:
        decide = decider(stage)
        times = []
        for _ in range(decisions):
            t = time.perf_counter()
            decide()
            times.append(time.perf_counter() - t)
        times.sort()
        rows.append((stage, statistics.median(times) * 1000,
                     times[int(0.99 * (len(times) - 1))] * 1000))
    lines = [
        "# One plan() decision per forecaster",
        "",
        f"Written by `python benchmarks/bench_plan.py`: {decisions} consecutive decisions a "
        "minute apart on 7 days of NASA history after 15 July 1995 (the LSTM artifact's "
        "training range ends there), one chain kept per policy, after one warm-up "
        "decision. Includes the forecast, the accuracy gate, Erlang C sizing and the "
        "behaviour rules. ARIMA refits every 6 h of trace time (21600 s), so within these "
        "300 minutes it is only updated.",
        "",
        "| forecaster | median ms | p99 ms |",
        "|---|---:|---:|",
        *(f"| {s} | {m:.2f} | {p:.2f} |" for s, m, p in rows),
        "",
        f"Python {platform.python_version()}, {platform.machine()}, one BLAS thread, "
        "2 CPUs shared with other work.",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "plan.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
