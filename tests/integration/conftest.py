"""The operator's integration harness: the API emulator (or a real cluster), a real
Prometheus with a backfilled history that ends now, and real ``forescale run`` processes.

With ``FORESCALE_TEST_KUBECONFIG`` set, tests that need the emulator's audit log skip
themselves (see ``needs_emulator``); the emulator is not started.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
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
QUERY_SELECTOR = 'http_requests_total{job="web"}'
QUERY = f"sum(rate({QUERY_SELECTOR}[2m]))"
#: The backfilled arrival rate rises linearly to this (req/s) at "now": a peak on its way.
RAMP_FROM, RAMP_TO = 10.0, 80.0
REAL_CLUSTER = os.environ.get("FORESCALE_TEST_KUBECONFIG")
#: How long a scenario waits for the operator to get somewhere (see ``World.wait``).
WAIT_SECONDS = float(os.environ.get("FORESCALE_TEST_WAIT_SECONDS", "90"))


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
    started: float = field(default_factory=time.time)

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

    def wait(self, predicate: Callable[[], Any], *, timeout: float = WAIT_SECONDS,
             what: str = "the condition") -> Any:
        """Poll ``predicate`` until it is truthy. The timeout is generous on purpose: a
        loaded CI machine fits the models and starts kopf several times slower than a
        laptop; the predicates, not the timeouts, are what the scenarios prove."""
        try:
            return self.kube.wait_for(predicate, timeout=timeout, interval=0.2, what=what)
        except AssertionError:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n"
                                 f"{self.diagnostics()}") from None

    def diagnostics(self) -> str:
        """What a failed scenario needs to be understood: the operators' logs, the
        policies' status and the scale writes the emulator recorded."""
        parts = []
        for op in self.operators:
            state = op.process.poll()
            parts.append(f"--- operator {op.identity} "
                         f"({'running' if state is None else f'exited {state}'}), log tail:\n"
                         f"{op.log()}")
        try:
            for policy in self.kube.list_objects("forescale.dev/v1alpha1/scalingpolicies",
                                                 namespace="default"):
                status = dict(policy.get("status") or {})
                status.pop("forecast", None)
                parts.append(f"--- policy {policy['metadata']['name']} status:\n"
                             f"{json.dumps(status, indent=1, sort_keys=True)[:6000]}")
            for dep in self.kube.list_objects("apps/v1/deployments", namespace="default"):
                parts.append(f"--- deployment {dep['metadata']['name']}: "
                             f"spec.replicas={dep['spec'].get('replicas')}")
            t0 = self.started
            parts.append("--- writes (t since setup, identity, method, path, status):\n" +
                         "\n".join(f"{e.wall_time - t0:8.3f} {e.identity} {e.method} "
                                    f"{e.path} {e.status_code}"
                                    + (f" replicas={e.request_body['spec']['replicas']}"
                                       if e.path.endswith('/scale') and
                                       isinstance(e.request_body, dict) else "")
                                    for e in self.kube.audit()[-80:]))
        except Exception as exc:  # diagnostics must never hide the real failure
            parts.append(f"--- could not read the emulator's state: {exc!r}")
        return "\n".join(parts)

    def scale_writes(self) -> list[Any]:
        return [e for e in self.kube.audit() if e.path.endswith("/scale")
                and e.method in ("PATCH", "PUT")]


def ramp_history(now: float) -> CounterSeries:
    """Two hours of minute counts, ending at ``now``, scraped every 30 s: an hour flat at
    RAMP_FROM, then an hour rising to RAMP_TO req/s (the morning side of a daily peak).

    The minute counts end on the minute grid; from there to ``now`` the counter keeps
    growing at RAMP_TO (30 s scrapes, the last one at ``now``), where the live counter
    takes over. Without that tail, a setup late in a minute left a gap of up to a minute
    plus Prometheus's start-up between the history and the first live scrape: when the
    operator's first read came after the next minute boundary, ``rate()`` at that
    boundary extrapolated over the gap and read 50 instead of 80 req/s — a dip at the
    end of the history, which the forecast followed, so the Deployment was never scaled
    ahead of the ramp (the scenario's one-in-five failure). A gap of less than 1.1 scrape
    intervals (33 s of Prometheus's start-up) is extrapolated over exactly.
    """
    end = math.floor(now / STEP) * STEP
    rates = np.concatenate([np.full(60, RAMP_FROM), np.linspace(RAMP_FROM, RAMP_TO, 60)])
    minutes = CounterSeries.from_counts(rates * STEP, start_seconds=end - len(rates) * STEP,
                                        step_seconds=STEP, labels=LABELS,
                                        scrape_interval_seconds=30)
    tail = np.arange(end + 30.0, now, 30.0)
    tail = np.append(tail[tail < now - 1.0], now) if now - end > 1.0 else tail[:0]
    return CounterSeries(name=minutes.name, labels=minutes.labels,
                         timestamps_seconds=np.concatenate([minutes.timestamps_seconds, tail]),
                         values=np.concatenate([minutes.values,
                                                minutes.values[-1] + RAMP_TO * (tail - end)]))


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
        # The operator starts only once the live samples continue the history.
        prom.wait_for_query(f'timestamp({QUERY_SELECTOR}) > {history.end_seconds}',
                            timeout_seconds=WAIT_SECONDS)
        kube.create(yaml.safe_load(CRD.read_text()))
        w = World(kube=kube, prometheus=prom, live=live, tmp=tmp_path)
        try:
            yield w
        finally:
            for op in w.operators:
                op.stop()
        kube.assert_healthy()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On a failed scenario, attach the operators' logs, the status and the scale writes
    to the report (a failed assertion after a wait says nothing about them otherwise)."""
    outcome = yield
    report = outcome.get_result()
    world = getattr(item, "funcargs", {}).get("world")
    if report.when == "call" and report.failed and isinstance(world, World):
        report.sections.append(("forescale diagnostics", world.diagnostics()))
