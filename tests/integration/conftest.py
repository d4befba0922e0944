"""The operator's integration harness: the API emulator (or a real cluster), a real
Prometheus with a backfilled history that ends now, and real ``forescale run`` processes.

With ``FORESCALE_TEST_KUBECONFIG`` set, tests that need the emulator's audit log skip
themselves (see ``needs_emulator``); the emulator is not started.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.support.kubeapi import EmulatorHandle, run_emulator
from tests.support.prometheus import (
    CounterSeries,
    LiveCounter,
    PrometheusServer,
    free_port,
    running_prometheus,
)

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "scalingpolicies.forescale.dev.yaml"
FORESCALE = Path(sys.executable).parent / "forescale"
STEP = 60.0
LABELS = {"job": "web"}
QUERY = 'sum(rate(http_requests_total{job="web"}[2m]))'
#: The backfilled arrival rate rises linearly to this (req/s) at "now": a peak on its way.
RAMP_FROM, RAMP_TO = 10.0, 80.0
REAL_CLUSTER = os.environ.get("FORESCALE_TEST_KUBECONFIG")


@dataclass
class Operator:
    """One ``forescale run`` process."""

    identity: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class World:
    kube: EmulatorHandle
    prometheus: PrometheusServer
    live: LiveCounter
    tmp: Path
    operators: list[Operator] = field(default_factory=list)

    def start_operator(self, identity: str, *extra: str) -> Operator:
        kubeconfig = self.kube.kubeconfig_path(identity)
        port = free_port()
        log_path = self.tmp / f"operator-{identity}.log"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "KUBECONFIG": "/nonexistent"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(FORESCALE), "run", "--namespace", "default",
                 "--kubeconfig", str(kubeconfig), "--identity", identity,
                 "--prometheus-url", self.prometheus.url,
                 "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
                 "--lease-extra-seconds", "3", "--log-format", "text", *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        op = Operator(identity, process, log_path, port)
        self.operators.append(op)
        return op

    def deployment(self, name: str, replicas: int = 1) -> dict[str, Any]:
        labels = {"app": name}
        return self.kube.create({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}})

    def policy(self, name: str, target: str, **spec: Any) -> dict[str, Any]:
        body = {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "metrics": {"query": QUERY}, "serviceRatePerReplica": 10,
            "minReplicas": 1, "maxReplicas": 50, "decisionPeriodSeconds": 5,
            "leadTimeSeconds": 600,
            "forecast": {"models": ["arima", "ma"], "historySeconds": 3600},
            "behavior": {"scaleUp": {"policies": [
                {"type": "Percent", "value": 1000, "periodSeconds": 5}]}},
        }
        body.update(spec)
        return self.kube.create({"apiVersion": "forescale.dev/v1alpha1",
                                 "kind": "ScalingPolicy",
                                 "metadata": {"name": name, "namespace": "default"},
                                 "spec": body})

    def get_policy(self, name: str) -> dict[str, Any] | None:
        return self.kube.get("forescale.dev/v1alpha1/scalingpolicies", name,
                             namespace="default")

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        policy = self.get_policy(name) or {}
        for c in (policy.get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        return None

    def replicas(self, name: str) -> int:
        dep = self.kube.get("apps/v1/deployments", name, namespace="default") or {}
        return int(dep["spec"]["replicas"])

    def wait(self, predicate: Callable[[], Any], *, timeout: float = 30.0,
             what: str = "the condition") -> Any:
        try:
            return self.kube.wait_for(predicate, timeout=timeout, interval=0.2, what=what)
        except AssertionError:
            logs = "\n".join(f"--- {op.identity}\n{op.log()}" for op in self.operators)
            raise AssertionError(f"timed out waiting for {what}\n{logs}") from None

    def scale_writes(self) -> list[Any]:
        return [e for e in self.kube.audit() if e.path.endswith("/scale")
                and e.method in ("PATCH", "PUT")]


def ramp_history(now: float) -> CounterSeries:
    """Two hours of minute counts, ending at ``now`` (on the minute grid), scraped every
    30 s: an hour flat at RAMP_FROM, then an hour rising to RAMP_TO req/s (the morning
    side of a daily peak)."""
    end = math.floor(now / STEP) * STEP
    rates = np.concatenate([np.full(60, RAMP_FROM), np.linspace(RAMP_FROM, RAMP_TO, 60)])
    return CounterSeries.from_counts(rates * STEP, start_seconds=end - len(rates) * STEP,
                                     step_seconds=STEP, labels=LABELS,
                                     scrape_interval_seconds=30)


class ContinuingCounter(LiveCounter):
    """A LiveCounter that continues a backfilled counter: it starts from the value the
    backfill would have reached by now, so ``rate()`` sees no reset at the seam."""

    def __init__(self, *, offset: float = 0.0, **kwargs: Any) -> None:
        self.offset = offset
        super().__init__(**kwargs)

    @property
    def count(self) -> float:
        return self.offset + float(LiveCounter.count.fget(self))  # type: ignore[attr-defined]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    if REAL_CLUSTER:
        pytest.skip("these scenarios read the API emulator's audit log; run without "
                    "FORESCALE_TEST_KUBECONFIG (real-cluster mode is not implemented yet)")
    live_counter = ContinuingCounter(labels=LABELS, rate_per_second=RAMP_TO)
    now = time.time()
    history = ramp_history(now)
    live_counter.offset = float(history.values[-1]) + RAMP_TO * (now - history.end_seconds)
    with live_counter as live, \
            running_prometheus(series=[history], scrape_targets=[live.target],
                               scrape_interval_seconds=1.0) as prom, \
            run_emulator() as kube:
        kube.create(yaml.safe_load(CRD.read_text()))
        w = World(kube=kube, prometheus=prom, live=live, tmp=tmp_path)
        try:
            yield w
        finally:
            for op in w.operators:
                op.stop()
        kube.assert_healthy()
