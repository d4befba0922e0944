"""How long ``forescale backtest`` takes on a 28-day 1-minute trace with the full chain.

Budget: **under 2 minutes** end to end — loading the NASA July 1995 trace (27.6 days,
39,692 steps), building the world, the oracle, the 13-target HPA sweep, training the LSTM
on the warm-up and replaying forescale's ``plan()`` with LSTM → ARIMA → moving average at
every one of the ~29,600 decisions. This is a script, not a timed unit test: the machine
is shared, and a timing assertion in the test suite would fail for reasons that have
nothing to do with the code.

    .venv/bin/python benchmarks/bench_backtest.py [--trace CSV] [--lstm-epochs N]

Prints each phase's wall time; exits 1 when the total is over the budget.
"""

from __future__ import annotations

from forescale.threads import limit_native_threads

limit_native_threads()  # before numpy and torch load

import argparse
import platform
import sys
import time
from pathlib import Path

from forescale.backtest.runner import BacktestOptions, run_backtest, world_from_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "nasa_ksc_jul1995_1min.csv"
BUDGET_SECONDS = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--lstm-epochs", type=int, default=BacktestOptions().lstm_epochs)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "backtest_speed.md", help="results file")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    world = world_from_trace(args.trace)
    built = time.perf_counter()
    result = run_backtest(world, BacktestOptions(lstm_epochs=args.lstm_epochs),
                          trace_name=args.trace.name)
    done = time.perf_counter()
    total = done - began

    lines = [f"{args.trace.name}: {len(world):,} steps, {world.scored_steps:,} scored",
             f"  {'load + world':<16}{built - began:8.1f}s"]
    hpa = sum(run.wall_seconds for _, run in result.hpa)
    lines.append(f"  {'oracle':<16}{result.oracle.wall_seconds:8.1f}s")
    lines.append(f"  {'hpa (13 targets)':<16}{hpa:8.1f}s")
    lines.append(f"  {'lstm training':<16}{result.training_seconds:8.1f}s")
    if result.forescale is not None:
        per = result.forescale.wall_seconds / max(len(result.forescale.requested), 1)
        lines.append(f"  {'forescale':<16}{result.forescale.wall_seconds:8.1f}s "
                     f"({per * 1e3:.2f} ms per decision)")
    verdict = "within" if total <= BUDGET_SECONDS else "OVER"
    lines.append(f"  {'total':<16}{total:8.1f}s ({verdict} the {BUDGET_SECONDS:.0f}s budget)")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Backtest speed: protocol v1 with the full chain on a 28-day 1-minute trace\n\n"
            f"Written by `python benchmarks/bench_backtest.py` (one run, {platform.machine()}, "
            "2 CPUs shared with other work, one BLAS thread).\n\n```\n"
            + "\n".join(lines) + "\n```\n")
    return 0 if total <= BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
