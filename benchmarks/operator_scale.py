"""N ScalingPolicies decided by one or more ``forescale run`` processes against the API
emulator and a real Prometheus: decision latency (the operators' own
``forescale_decision_seconds`` histograms), CPU and memory per process, the history points
read per period (incremental reads), and how the work splits over replicas.

    .venv/bin/python benchmarks/operator_scale.py --policies 1000 --period 30 --periods 3
    .venv/bin/python benchmarks/operator_scale.py --policies 1000 --replicas 2 --out ...

Every policy is the default ScalingPolicy plus its target, query and period: 7 days of
history, the full LSTM -> ARIMA -> moving-average chain (the bundled NASA model as
``lstm.modelRef``). All policies share one series: the last 7 days of the bundled NASA
trace, backfilled at a 60 s scrape so that it ends now, continued by a live counter.
The first decision of every policy (cold: discovery, reading 7 days, the first ARIMA fit)
is measured apart from the steady state that follows (warm: tail reads, ARIMA updates,
LSTM forecasts, Lease renewals). A benchmark, not a test: never run by ``make test``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import yaml

from forescale.trace import load_trace
from tests.support.kubeapi import run_emulator
from tests.support.prometheus import CounterSeries, LiveCounter, running_prometheus

CLK_TCK = os.sysconf("SC_CLK_TCK")
CRD = REPO / "crds" / "scalingpolicies.forescale.dev.yaml"
TRACE = REPO / "traces" / "nasa_ksc_jul1995_1min.csv"
FORESCALE = Path(sys.executable).parent / "forescale"
LABELS = {"job": "web"}
QUERY = 'sum(rate(http_requests_total{job="web"}[2m]))'
STEP = 60.0
NS = "default"
POLICIES = "forescale.dev/v1alpha1/scalingpolicies"


class Continuing(LiveCounter):
    """Continues the backfilled counter without a reset at the seam."""

    def __init__(self, *, offset: float, **kwargs: Any) -> None:
        self.offset = offset
        super().__init__(**kwargs)

    @property
    def count(self) -> float:
        return self.offset + float(LiveCounter.count.fget(self))  # type: ignore[attr-defined]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    """The operator's /metrics, sample name with labels → value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def buckets(metrics: dict[str, float],
            name_prefix: str = "forescale_decision_seconds_bucket{") -> dict[float, float]:
    out: dict[float, float] = {}
    for name, value in metrics.items():
        if name.startswith(name_prefix):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = value
    return out


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


def merged(snapshots: list[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for snap in snapshots:
        for bound, count in snap.items():
            out[bound] = out.get(bound, 0.0) + count
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def history(now: float, days: float) -> tuple[CounterSeries, float]:
    """The last ``days`` of the NASA trace as a counter ending on the minute grid before
    ``now``; and the rate of its last minute (the live counter continues at it)."""
    trace = load_trace(TRACE)
    steps = int(days * 86400 / STEP)
    counts = trace.counts[-steps:]
    end = np.floor(now / STEP) * STEP
    series = CounterSeries.from_counts(counts, start_seconds=end - len(counts) * STEP,
                                       step_seconds=STEP, labels=LABELS)
    return series, float(counts[-1] / STEP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--period", type=float, default=30.0, help="decisionPeriodSeconds")
    parser.add_argument("--periods", type=int, default=3, help="steady-state periods")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--history-days", type=float, default=7.0)
    parser.add_argument("--models", default="lstm,arima,ma")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--cold-timeout", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/operator.md")
    args = parser.parse_args()

    now = time.time()
    series, last_rate = history(now, args.history_days)
    live_counter = Continuing(offset=float(series.values[-1]) + last_rate * (
        now - series.timestamps_seconds[-1]), labels=LABELS, rate_per_second=last_rate)
    models = args.models.split(",")
    spec_extra: dict[str, Any] = {"forecast": {"models": models}}
    if "lstm" in models:
        spec_extra["forecast"]["lstm"] = {"modelRef": "nasa-jul1995"}
    if args.history_days != 7.0:
        spec_extra["forecast"]["historySeconds"] = args.history_days * 86400
    procs: list[tuple[str, subprocess.Popen[bytes], int, Path]] = []
    with tempfile.TemporaryDirectory(prefix="forescale-bench-") as tmp, \
            live_counter as live, \
            running_prometheus(series=[series], scrape_targets=[live.target]) as prom, \
            run_emulator() as kube:
        kube.create(yaml.safe_load(CRD.read_text()))
        for i in range(args.policies):
            kube.create({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": f"web-{i}", "namespace": NS},
                         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "w"}},
                                  "template": {"metadata": {"labels": {"app": "w"}},
                                               "spec": {"containers": [
                                                   {"name": "c", "image": "x"}]}}}})
            kube.create({"apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
                         "metadata": {"name": f"p-{i}", "namespace": NS},
                         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1",
                                                     "kind": "Deployment", "name": f"web-{i}"},
                                  "metrics": {"query": QUERY}, "serviceRatePerReplica": 10,
                                  "decisionPeriodSeconds": int(args.period), **spec_extra}})
        began = time.monotonic()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "KUBECONFIG": "/nonexistent"}
        for r in range(args.replicas):
            identity, port = f"bench-{r}", free_port()
            log = Path(tmp) / f"{identity}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(
                    [str(FORESCALE), "run", "--namespace", NS,
                     "--kubeconfig", str(kube.kubeconfig_path(identity, namespace=NS)),
                     "--identity", identity, "--prometheus-url", prom.url,
                     "--models-dir", str(REPO / "models"), "--lease-namespace", NS,
                     "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
                     "--lease-extra-seconds", "3", "--workers", str(args.workers),
                     "--log-format", "text", "--log-level", "warning"],
                    stdout=fh, stderr=subprocess.STDOUT, env=env)
            procs.append((identity, proc, port, log))
        try:
            def decided() -> int:
                return sum(1 for p in kube.list_objects(POLICIES, namespace=NS)
                           if (p.get("status") or {}).get("lastDecisionTime"))

            while decided() < args.policies:
                if time.monotonic() - began > args.cold_timeout:
                    raise SystemExit(f"only {decided()} of {args.policies} policies decided "
                                     f"within {args.cold_timeout:g}s")
                for identity, proc, _, log in procs:
                    if proc.poll() is not None:
                        raise SystemExit(f"{identity} exited: {log.read_text()[-2000:]}")
                time.sleep(2)
            cold_wall = time.monotonic() - began
            cold = {i: (scrape(port), cpu_seconds(p.pid)) for i, p, port, _ in procs}
            # One more period to leave the cold start behind, then the measured window.
            time.sleep(args.period)
            before = {i: (scrape(port), cpu_seconds(p.pid), time.monotonic())
                      for i, p, port, _ in procs}
            time.sleep(args.periods * args.period)
            after = {i: (scrape(port), cpu_seconds(p.pid), time.monotonic())
                     for i, p, port, _ in procs}
            rss = {i: rss_mib(p.pid) for i, p, _, _ in procs}
            errors = {i: sum(" ERROR " in line for line in log.read_text().splitlines())
                      for i, _, _, log in procs}
            policies = kube.list_objects(POLICIES, namespace=NS)
        finally:
            for _, proc, _, _ in procs:
                proc.terminate()
            for _, proc, _, _ in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    inf = float("inf")
    window = np.mean([after[i][2] - before[i][2] for i in after])
    rows: dict[str, Any] = {
        "policies": args.policies, "replicas": args.replicas,
        "decision period (s)": args.period,
        "history (days) / models": f"{args.history_days:g} / {' -> '.join(models)}",
        "steady-state window (s)": round(float(window), 1)}
    h_all_before = merged([buckets(before[i][0]) for i in before])
    h_all_after = merged([buckets(after[i][0]) for i in after])
    rows["cycles in the window (all replicas)"] = int(h_all_after[inf] - h_all_before[inf])
    rows["decision latency p50 / p99 (s)"] = (
        f"{quantile(0.5, h_all_before, h_all_after):.3f} / "
        f"{quantile(0.99, h_all_before, h_all_after):.3f}")
    cpu_prefix = "forescale_decision_cpu_seconds_bucket{"
    c_before = merged([buckets(before[i][0], cpu_prefix) for i in before])
    c_after = merged([buckets(after[i][0], cpu_prefix) for i in after])
    if c_after:
        rows["cycle CPU time p50 / p99 (s, the cycle's own thread)"] = (
            f"{quantile(0.5, c_before, c_after):.3f} / {quantile(0.99, c_before, c_after):.3f}")
    deciders: dict[str, int] = {}
    for p in policies:
        who = (p.get("status") or {}).get("decidedBy")
        deciders[str(who)] = deciders.get(str(who), 0) + 1
    for identity, (m1, c1, t1) in after.items():
        m0, c0, t0 = before[identity]
        points = m1.get("forescale_history_points_read_total", 0) - m0.get(
            "forescale_history_points_read_total", 0)
        b0, b1 = buckets(m0), buckets(m1)
        rows[f"{identity}: policies it decides (status.decidedBy)"] = deciders.get(identity, 0)
        rows[f"{identity}: cycles / p99 (s)"] = (
            f"{int(b1[inf] - b0[inf])} / {quantile(0.99, b0, b1):.3f}")
        rows[f"{identity}: CPU (cores, steady)"] = round((c1 - c0) / (t1 - t0), 3)
        rows[f"{identity}: CPU s per cycle"] = round((c1 - c0) / max(b1[inf] - b0[inf], 1), 4)
        rows[f"{identity}: history points read per period"] = round(
            points / ((t1 - t0) / args.period))
        rows[f"{identity}: RSS at the end (MiB)"] = round(rss[identity], 1)
        rows[f"{identity}: cold CPU s (start-up and first decisions)"] = round(
            cold[identity][1], 1)
        rows[f"{identity}: ERROR log lines"] = errors[identity]
    full_reads = args.policies * (args.history_days * 86400 / STEP)
    rows["a full re-read every period would be (points)"] = int(full_reads)
    rows["first decisions: wall s until all decided"] = round(cold_wall, 1)
    table = "\n".join(f"| {k} | {v} |" for k, v in rows.items())
    print(table)
    load = os.getloadavg()
    command = " ".join(["benchmarks/operator_scale.py", *sys.argv[1:]])
    section = f"""## {args.policies} policies, {args.replicas} replica(s), {args.period:g} s period

`.venv/bin/python {command}`

| | |
|---|---|
{table}

Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work and with the
API emulator and Prometheus of this benchmark (load average at the end {load[0]:.2f} /
{load[1]:.2f} / {load[2]:.2f}), Python {platform.python_version()}.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write("\n" + section)
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
