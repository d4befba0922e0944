"""One ``forescale run`` process with N ScalingPolicies against the API emulator and a real
Prometheus (the integration harness, ``tests/integration/conftest.py``): decision latency
(the operator's own ``forescale_decision_seconds`` histogram) and the operator process's
CPU seconds per decision (``/proc/<pid>/stat``).

    .venv/bin/python benchmarks/operator_scale.py --policies 200 --period 30 --periods 3

Every policy has its own Deployment (leases are per target) and the same query: one shared
series, a two-hour backfilled ramp continued by a live counter scraped every second.
The first decision of every policy (cold: discovery, the first ARIMA fit) is measured
apart from the steady state that follows (warm: ARIMA updates, lease renewals).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import (
    CRD,
    LABELS,
    QUERY_SELECTOR,
    RAMP_TO,
    ContinuingCounter,
    World,
    ramp_history,
)
from tests.support.kubeapi import run_emulator
from tests.support.prometheus import running_prometheus

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def histogram(port: int) -> dict[float, float]:
    """Cumulative bucket counts of forescale_decision_seconds (le → count)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    buckets: dict[float, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("forescale_decision_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """histogram_quantile over the difference of two snapshots (linear within a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--period", type=float, default=30.0, help="decisionPeriodSeconds")
    parser.add_argument("--periods", type=int, default=3, help="steady-state periods")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/operator.md")
    args = parser.parse_args()

    import yaml

    now = time.time()
    history = ramp_history(now)
    live_counter = ContinuingCounter(labels=LABELS, rate_per_second=RAMP_TO)
    live_counter.offset = float(history.values[-1]) + RAMP_TO * (now - history.end_seconds)
    with tempfile.TemporaryDirectory(prefix="forescale-bench-") as tmp, \
            live_counter as live, \
            running_prometheus(series=[history], scrape_targets=[live.target]) as prom, \
            run_emulator() as kube:
        prom.wait_for_query(f"timestamp({QUERY_SELECTOR}) > {history.end_seconds}")
        kube.create(yaml.safe_load(CRD.read_text()))
        world = World(kube=kube, prometheus=prom, live=live, tmp=Path(tmp))
        for i in range(args.policies):
            world.deployment(f"web-{i}", replicas=1)
            world.policy(f"p-{i}", f"web-{i}", decisionPeriodSeconds=int(args.period))
        began = time.monotonic()
        op = world.start_operator("bench")
        pid = op.process.pid
        try:
            def decided() -> int:
                return sum(1 for p in kube.list_objects(
                    "forescale.dev/v1alpha1/scalingpolicies", namespace="default")
                    if (p.get("status") or {}).get("lastDecisionTime"))

            world.wait(lambda: decided() == args.policies, timeout=max(120, 3 * args.period),
                       what="a first decision for every policy")
            cold_wall = time.monotonic() - began
            cold_cpu = cpu_seconds(pid)
            h0, c0, t0 = histogram(op.metrics_port), cpu_seconds(pid), time.monotonic()
            time.sleep(args.periods * args.period)
            h1, c1, t1 = histogram(op.metrics_port), cpu_seconds(pid), time.monotonic()
            errors = [line for line in op.log().splitlines() if " ERROR " in line]
            rss = next((int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text()
                        .splitlines() if x.startswith("VmRSS:")), 0) / 1024
        finally:
            op.stop()
    inf = float("inf")
    warm_n = h1[inf] - h0[inf]
    cold = h0
    rows = {
        "policies": args.policies,
        "decision period (s)": args.period,
        "steady-state window (s)": round(t1 - t0, 1),
        "decisions in the window": int(warm_n),
        "decisions per second": round(warm_n / (t1 - t0), 2),
        "decision latency p50 (s)": round(quantile(0.5, h0, h1), 4),
        "decision latency p99 (s)": round(quantile(0.99, h0, h1), 4),
        "CPU s per decision (steady)": round((c1 - c0) / max(warm_n, 1), 4),
        "CPU utilisation (steady, cores)": round((c1 - c0) / (t1 - t0), 3),
        "first decisions: wall s until all decided": round(cold_wall, 1),
        "first decisions: latency p50 / p99 (s)":
            f"{quantile(0.5, {}, cold):.3f} / {quantile(0.99, {}, cold):.3f}",
        "first decisions: CPU s (incl. start-up) per policy": round(cold_cpu / args.policies,
                                                                     4),
        "operator RSS at the end (MiB)": round(rss, 1),
        "ERROR log lines": len(errors),
    }
    table = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    print(table)
    cpus = os.cpu_count()
    load = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"""# Operator scale: one `forescale run`, {args.policies} ScalingPolicies

`.venv/bin/python benchmarks/operator_scale.py --policies {args.policies} --period \
{args.period:g} --periods {args.periods}`

| | |
|---|---|
{table}

## Setup

- One `forescale run --namespace default --log-format text` process (standalone, per-target
  Leases, `--lease-extra-seconds 3`, `OPENBLAS_NUM_THREADS=1`) against the in-process API
  emulator (`tests/support/kubeapi.py`, kmock, same Python process as this script but not
  the operator) and a real Prometheus (`tests/support/prometheus.py`).
- {args.policies} Deployments, one ScalingPolicy each (the integration harness's policy:
  `models: [arima, ma]`, `historySeconds: 3600`, `leadTimeSeconds: 600`, Scale mode),
  `decisionPeriodSeconds: {args.period:g}`; all share one query,
  `sum(rate(http_requests_total{{job="web"}}[2m]))` over a backfilled 2-hour ramp continued by
  a live counter (1 s scrapes). Every cycle reads 61 points at a 60 s step.
- Latency: the operator's own `forescale_decision_seconds` histogram (wall time of one
  cycle in its worker thread, buckets 0.01 … 30 s; quantiles interpolated within a bucket,
  as `histogram_quantile` does), the difference of two `/metrics` snapshots taken after
  every policy had made its first decision and {args.periods} periods later. Cycles run
  in `asyncio.to_thread`, so under load a cycle's wall time includes waiting for the GIL.
- CPU: utime + stime of the operator process from `/proc/<pid>/stat` over the same window,
  divided by the decisions counted in it.
- Machine: {platform.machine()}, {cpus} CPUs shared with other work (load average at the
  end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}), Python {platform.python_version()}.
""")


if __name__ == "__main__":
    main()
