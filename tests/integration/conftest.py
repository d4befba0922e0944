"""The operator's integration harness: a real Kubernetes control plane (or another
cluster, or the API emulator), a real Prometheus with a backfilled history that ends now,
and real ``forescale run`` processes.

Three modes, one set of scenarios:

* control-plane mode (default): etcd, kube-apiserver and kube-controller-manager built
  from source (``scripts/controlplane/build.sh``, ``make controlplane``) and started once
  per session on loopback (:mod:`tests.support.controlplane`), with RBAC on. The CRD is
  applied once; each test gets its own namespace. Each operator process authenticates as
  its own identity (``operator-a``, ``operator-b``, ...) in a group bound to the Helm
  chart's own ClusterRole, so the real authorizer enforces the chart's RBAC on every
  call. Who wrote each ``/scale`` is proven from the apiserver's audit log and the
  target's ``managedFields`` (``world.plane``). Without the binaries the scenarios skip
  with the command that builds them, or fail under ``make test``
  (``FORESCALE_REQUIRE_CONTROLPLANE=1``);
* emulator mode (``FORESCALE_TEST_API=emulator``): a fresh in-process API emulator per
  test, as before the control plane existed; its audit log (``world.emulator``) records
  who made every write. Fault injection (409/500/slow answers) lives in
  ``tests/emulator`` against the emulator alone;
* real-cluster mode: ``FORESCALE_TEST_KUBECONFIG=/path/to/kubeconfig`` points the tests at
  any API server (kind, k3d, or the standalone emulator treated as an opaque cluster, see
  ``scripts/real-cluster-mode.sh``). The CRD is applied from ``crds/`` (and waited on
  until Established), each test gets its own namespace (deleted afterwards), Prometheus and
  the operator processes stay local. ``world.emulator`` is None; tests that can only run
  on the emulator (fault injection, the audit log) take the ``emulator`` fixture, which
  skips them with the reason.

Either way the scenarios talk to the API through :class:`tests.support.cluster.Cluster`
(the public API only) and record a watch of the namespace's Deployments and Leases from
the start; who scaled what is proven from those watches and the operators' own
``scale write`` log lines (see ``World.check_scale_writes_by_lease_holders``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from forescale.controller.kube import KubeClient, KubeError, parse_time
from forescale.controller.lease import LeaseLock
from forescale.controller.worker import SCALE_WRITE_LOG
from tests.support import controlplane
from tests.support.cluster import Cluster, WatchRecorder
from tests.support.controlplane import AuditEvent, ControlPlane
from tests.support.kubeapi import HARNESS_IDENTITY, EmulatorHandle, run_emulator
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
#: ``controlplane`` (default) or ``emulator``; ignored when FORESCALE_TEST_KUBECONFIG is set.
API_MODE = os.environ.get("FORESCALE_TEST_API", "controlplane")
CHART = REPO / "charts" / "forescale"
#: Pods of the test Deployments must be able to start on a real cluster.
IMAGE = "registry.k8s.io/pause:3.10"
DEPLOYMENTS = "apps/v1/deployments"
LEASES = "coordination.k8s.io/v1/leases"
POLICIES = "forescale.dev/v1alpha1/scalingpolicies"
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

    def logged_scale_writes(self) -> list[dict[str, Any]]:
        """The operator's own ``scale write`` log lines (see ``worker._log_scale_write``)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            at = line.find(SCALE_WRITE_LOG)
            if at >= 0:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line[at + len(SCALE_WRITE_LOG):]))
        return out

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


@dataclass(frozen=True)
class ScaleWrite:
    """A write of a target's replicas. ``identity`` is who made it: from the emulator's
    audit log, or on a real cluster from the operator's log line with the same
    resourceVersion (None if no operator claims it)."""

    name: str
    replicas: int
    identity: str | None
    resource_version: str
    time: float


@dataclass
class World:
    #: The API, through its public interface only (both modes).
    kube: Cluster
    #: The in-process emulator, or None in real-cluster mode.
    emulator: EmulatorHandle | None
    namespace: str
    prometheus: PrometheusServer
    live: LiveCounter
    tmp: Path
    #: Watches of the namespace's Deployments and Leases, recorded from the start.
    deployments: WatchRecorder
    leases: WatchRecorder
    #: The kubeconfig the operators use in real-cluster mode.
    kubeconfig: Path | None = None
    #: The session's control plane (its audit log), or None in the other modes.
    plane: ControlPlane | None = None
    operators: list[Operator] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def start_operator(self, identity: str, *extra: str) -> Operator:
        kubeconfig: Path | None
        if self.emulator is not None:
            kubeconfig = self.emulator.kubeconfig_path(identity, namespace=self.namespace)
        elif self.plane is not None:
            kubeconfig = self.plane.kubeconfig_for(identity, namespace=self.namespace)
        else:
            kubeconfig = self.kubeconfig
        port = free_port()
        log_path = self.tmp / f"operator-{identity}.log"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "KUBECONFIG": "/nonexistent"}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(FORESCALE), "run", "--namespace", self.namespace,
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
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": IMAGE}]}}}})

    def policy(self, name: str, target: str, **spec: Any) -> dict[str, Any]:
        """Create a policy; a schema rejection (422) raises ``KubeError``."""
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
                                 "metadata": {"name": name, "namespace": self.namespace},
                                 "spec": body})

    def get_policy(self, name: str) -> dict[str, Any] | None:
        return self.kube.get(POLICIES, name, namespace=self.namespace)

    def delete_policy(self, name: str) -> None:
        self.kube.delete(POLICIES, name, namespace=self.namespace)

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        policy = self.get_policy(name) or {}
        for c in (policy.get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        return None

    def replicas(self, name: str) -> int:
        dep = self.kube.get(DEPLOYMENTS, name, namespace=self.namespace) or {}
        return int(dep["spec"]["replicas"])

    def lease(self, target: str) -> dict[str, Any] | None:
        return self.kube.get(LEASES, f"forescale-deployment-{target}",
                             namespace=self.namespace)

    def events(self) -> list[dict[str, Any]]:
        return self.kube.list_objects("v1/events", namespace=self.namespace)

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
        policies' status and the scale writes (the emulator's audit log, or the watch)."""
        parts = [f"--- namespace {self.namespace} "
                 f"({'emulator' if self.emulator is not None else 'real cluster'})"]
        for op in self.operators:
            state = op.process.poll()
            parts.append(f"--- operator {op.identity} "
                         f"({'running' if state is None else f'exited {state}'}), log tail:\n"
                         f"{op.log()}")
        try:
            for policy in self.kube.list_objects(POLICIES, namespace=self.namespace):
                status = dict(policy.get("status") or {})
                status.pop("forecast", None)
                parts.append(f"--- policy {policy['metadata']['name']} status:\n"
                             f"{json.dumps(status, indent=1, sort_keys=True)[:6000]}")
            for dep in self.kube.list_objects(DEPLOYMENTS, namespace=self.namespace):
                parts.append(f"--- deployment {dep['metadata']['name']}: "
                             f"spec.replicas={dep['spec'].get('replicas')}")
            t0 = self.started
            if self.emulator is not None:
                parts.append("--- writes (t since setup, identity, method, path, status):\n" +
                             "\n".join(f"{e.wall_time - t0:8.3f} {e.identity} {e.method} "
                                       f"{e.path} {e.status_code}"
                                       + (f" replicas={e.request_body['spec']['replicas']}"
                                          if e.path.endswith('/scale') and
                                          isinstance(e.request_body, dict) else "")
                                       for e in self.emulator.audit()[-80:]))
            else:
                parts.append("--- replica changes seen by the watch (t, name, replicas, "
                             "resourceVersion, claimed by):\n" +
                             "\n".join(f"{w.time - t0:8.3f} {w.name} {w.replicas} "
                                       f"{w.resource_version} {w.identity}"
                                       for w in self.scale_writes()[-80:]))
        except Exception as exc:  # diagnostics must never hide the real failure
            parts.append(f"--- could not read the cluster's state: {exc!r}")
        return "\n".join(parts)

    # -- who scaled what ---------------------------------------------------------------

    def _logged_writes(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(str(w["target"]), str(w["resource_version"])): w
                for op in self.operators for w in op.logged_scale_writes()}

    def replica_changes(self) -> list[ScaleWrite]:
        """Every change of a Deployment's ``spec.replicas`` the watch saw, attributed to
        the operator whose log line names that resourceVersion (None if none does)."""
        logged = self._logged_writes()
        last: dict[str, int] = {}
        out = []
        for event in self.deployments.snapshot():
            if event.type == "DELETED":
                last.pop(event.name, None)
                continue
            replicas = int(event.object["spec"].get("replicas", 1))
            if event.name in last and last[event.name] != replicas:
                claim = logged.get((event.name, event.resource_version))
                out.append(ScaleWrite(event.name, replicas,
                                      None if claim is None else str(claim["identity"]),
                                      event.resource_version, event.received))
            last[event.name] = replicas
        return out

    def scale_writes(self) -> list[ScaleWrite]:
        """Writes of the targets' replicas: on the emulator and the control plane every
        /scale write request (from the audit log, so even a write that changed nothing or
        was refused shows); on another cluster every change the watch saw."""
        if self.plane is not None:
            return [ScaleWrite(str(e.ref("name")),
                               int((e.request_object.get("spec") or {}).get("replicas", -1)),
                               e.username,
                               str((e.response_object.get("metadata") or {}).get(
                                   "resourceVersion")), e.received)
                    for e in self.plane.scale_writes(namespace=self.namespace)]
        if self.emulator is None:
            return self.replica_changes()
        return [ScaleWrite(str(e.name), int(e.request_body["spec"]["replicas"]), e.identity,
                           str(e.resource_version), e.wall_time)
                for e in self.emulator.audit()
                if e.namespace == self.namespace and e.path.endswith("/scale")
                and e.method in ("PATCH", "PUT") and isinstance(e.request_body, dict)]

    def check_scale_writes_by_lease_holders(self, targets: list[str]) -> int:
        """Prove, with the public API only (so on any cluster), that every change of the
        targets' replicas was made by the lease holder of that moment, and that no two
        holders overlap. Returns the number of writes checked.

        Evidence: (1) the Deployment watch, which sees every change of ``spec.replicas``
        with its resourceVersion; (2) each operator's ``scale write`` log line: identity,
        resourceVersion produced, wall time before/after the request, and the lease
        renewTime/duration it wrote right before; (3) the Lease watch, every version of
        each lease. The operators run on this machine, so their clock (which writes
        renewTime) is the tests' clock.

        * every replica change is claimed by exactly the operator log line with its
          resourceVersion and replicas: there is no unclaimed writer;
        * the claimant's lease version (holder, renewTime, duration) is in the watch, and
          its validity [renewTime, renewTime + duration) covers the request's
          [started, finished];
        * no lease version of any *other* holder is valid at any instant of that
          request; and along each lease's versions, a holder change happens only at or
          after the previous version's expiry (no overlapping holders).
        """
        assert not self.deployments.gaps and not self.leases.gaps, \
            "a watch lost history (410): the record is incomplete"
        logged = self._logged_writes()
        changes = [c for c in self.replica_changes() if c.name in targets]
        for change in changes:
            claim = logged.get((change.name, change.resource_version))
            assert claim is not None, f"no operator claims this replica change: {change}"
            assert claim["replicas"] == change.replicas, (claim, change)
        seen = {(c.name, c.resource_version) for c in changes}
        versions: dict[str, list[dict[str, Any]]] = {}
        rvs: set[tuple[str, str]] = set()
        for event in self.leases.snapshot():
            if event.type == "DELETED" or (event.name, event.resource_version) in rvs:
                continue
            rvs.add((event.name, event.resource_version))
            spec = event.object["spec"]
            versions.setdefault(event.name, []).append({
                "holder": spec.get("holderIdentity"),
                "from": parse_time(spec.get("renewTime")),
                "until": (parse_time(spec.get("renewTime")) or 0.0)
                + float(spec.get("leaseDurationSeconds") or 0)})
        for name, history in versions.items():
            for before, after in itertools.pairwise(history):
                if after["holder"] != before["holder"]:
                    assert after["from"] >= before["until"], \
                        f"lease {name}: {after} took over before {before} expired"
        checked = 0
        for (target, rv), claim in logged.items():
            if target not in targets:
                continue
            # The operator writes only when the replicas differ, with the Scale's
            # resourceVersion as a precondition: a successful write always changes them.
            assert (target, rv) in seen, f"a logged write the watch never saw: {claim}"
            history = versions.get(f"forescale-deployment-{target}", [])
            start, end = float(claim["started"]), float(claim["finished"])
            own = [v for v in history if v["holder"] == claim["identity"]
                   and abs(v["from"] - float(claim["lease_renew_time"])) < 1e-5]
            assert own, f"the lease version behind {claim} is not in the watch: {history}"
            assert own[0]["from"] <= start and end < own[0]["until"], (claim, own[0])
            others = [v for v in history if v["holder"] != claim["identity"]
                      and v["from"] <= end and start < v["until"]]
            assert not others, f"{claim} while another holder's lease was valid: {others}"
            checked += 1
        return checked

    def audit_scale_writes_by_lease_holders(self, targets: list[str]) -> int:
        """Prove from the apiserver's own audit log (not from any operator's log) that
        every change of the targets' replicas was a ``/scale`` write by the identity that
        held the target's Lease at that moment. Returns the number of writes checked.

        * every replica change the Deployment watch saw has, in the audit log, exactly one
          successful ``/scale`` write whose response carries that resourceVersion and
          whose request set those replicas; its ``user.username`` is the writer;
        * the Lease's holder at that moment is the holder written by the last successful
          Lease write before it. "Before" is by resourceVersion: this apiserver has one
          etcd, whose revision orders every write of every resource; the audit log's line
          order is only the order in which responses completed.
        """
        assert self.plane is not None
        audit = self.plane.audit()
        ns = self.namespace

        def rv(event: AuditEvent) -> int:
            return int((event.response_object.get("metadata") or {})["resourceVersion"])

        writes = [e for e in audit if e.ref("namespace") == ns and e.code < 300
                  and e.ref("subresource") == "scale" and e.verb in ("patch", "update")
                  and e.ref("name") in targets]
        # Deletes are left out: their answer need not carry the Lease, and the operator
        # deletes a Lease only when its policy goes, after its last write.
        lease_writes = [e for e in audit if e.ref("namespace") == ns and e.code < 300
                        and e.ref("resource") == "leases" and e.ref("subresource") is None
                        and e.verb in ("create", "update", "patch")]
        by_rv = {(str(e.ref("name")), str(rv(e))): e for e in writes}
        changes = [c for c in self.replica_changes() if c.name in targets]
        for change in changes:
            write = by_rv.get((change.name, change.resource_version))
            assert write is not None, f"no /scale write in the audit log made {change}"
            assert write.request_object["spec"]["replicas"] == change.replicas, write.raw
        for write in writes:
            lease = f"forescale-deployment-{write.ref('name')}"
            before = [e for e in lease_writes if e.ref("name") == lease and rv(e) < rv(write)]
            assert before, f"{write.username} scaled {write.ref('name')} without a lease"
            holder = (max(before, key=rv).response_object.get("spec") or {}).get(
                "holderIdentity")
            assert write.username == holder, \
                f"/scale by {write.username} while the lease was held by {holder}"
        return len(writes)

    def scale_manager(self, name: str) -> dict[str, Any]:
        """The target's ``managedFields`` entry that owns ``spec.replicas`` through the
        ``/scale`` subresource (the apiserver records it; clients cannot forge its
        ``subresource``)."""
        dep = self.kube.get(DEPLOYMENTS, name, namespace=self.namespace) or {}
        owners = [m for m in dep["metadata"].get("managedFields") or []
                  if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})]
        assert len(owners) == 1, f"spec.replicas of {name} owned by {owners}"
        return dict(owners[0])

    def cleanup(self) -> None:
        """Stop the operators and watches; delete the test namespace (its policies'
        finalizers first: with the operators gone nobody else would remove them)."""
        for op in self.operators:
            op.stop()
        self.deployments.stop()
        self.leases.stop()
        with contextlib.suppress(KubeError):
            for policy in self.kube.list_objects(POLICIES, namespace=self.namespace):
                name = policy["metadata"]["name"]
                with contextlib.suppress(KubeError):
                    self.kube.patch(POLICIES, name, {"metadata": {"finalizers": None}},
                                    namespace=self.namespace)
                    self.kube.delete(POLICIES, name, namespace=self.namespace)
        with contextlib.suppress(KubeError):
            self.kube.delete("v1/namespaces", self.namespace)


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


@dataclass(frozen=True)
class ChartRBAC:
    """The Helm chart's own RBAC (rendered by Helm's SDK with default values): the
    ClusterRole and the Role it binds to its ServiceAccount. The Role holds the Lease rules
    and sits in the namespace where the operator keeps its Leases."""

    cluster_role: dict[str, Any]
    roles: tuple[dict[str, Any], ...]

    @classmethod
    def render(cls) -> ChartRBAC:
        import helm_python

        chart = helm_python.Chart.load(str(CHART))
        try:
            rendered = chart.render({}, name="forescale", namespace="forescale",
                                    is_install=True)
        finally:
            chart.close()
        docs = [d for path, text in rendered.items() if not path.endswith("NOTES.txt")
                for d in yaml.safe_load_all(text) if d]

        def bound(binding_kind: str, role_kind: str) -> list[dict[str, Any]]:
            names = {b["roleRef"]["name"] for b in docs if b["kind"] == binding_kind
                     and any(s["kind"] == "ServiceAccount" for s in b["subjects"])}
            return [d for d in docs if d["kind"] == role_kind
                    and d["metadata"]["name"] in names]

        (cluster_role,) = bound("ClusterRoleBinding", "ClusterRole")
        return cls(cluster_role, tuple(bound("RoleBinding", "Role")))

    @staticmethod
    def _grant(kube: Cluster, kind: str, name: str, rules: Any,
               namespace: str | None = None) -> None:
        meta = {"name": name, **({"namespace": namespace} if namespace else {})}
        kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                     "metadata": meta, "rules": rules})
        kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding",
                     "metadata": meta,
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind,
                                 "name": name},
                     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                   "name": controlplane.OPERATORS_GROUP}]})

    def grant_cluster(self, kube: Cluster) -> None:
        """The ClusterRole's rules, to the group of the operator identities."""
        self._grant(kube, "ClusterRole", "forescale-test-operators",
                    self.cluster_role["rules"])

    def grant_namespace(self, kube: Cluster, namespace: str) -> None:
        """The Role's rules (the Leases) in ``namespace``, where the scenarios' operators
        keep their Leases (they run without --lease-namespace)."""
        for role in self.roles:
            self._grant(kube, "Role", role["metadata"]["name"], role["rules"],
                        namespace=namespace)


CHART_RBAC_CACHE: list[ChartRBAC] = []


def chart_rbac() -> ChartRBAC:
    if not CHART_RBAC_CACHE:
        CHART_RBAC_CACHE.append(ChartRBAC.render())
    return CHART_RBAC_CACHE[0]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane | None]:
    """The session's control plane (control-plane mode), else None."""
    if REAL_CLUSTER or API_MODE != "controlplane":
        yield None
        return
    with controlplane.running_control_plane(controlplane.require_binaries()) as plane:
        yield plane


@pytest.fixture(scope="session")
def real_cluster(control_plane: ControlPlane | None) -> Iterator[Cluster | None]:
    """In control-plane and real-cluster mode, the cluster with the CRD applied (once per
    session); None in emulator mode."""
    if control_plane is not None:
        plane_cluster = Cluster(control_plane.admin_kubeconfig)
        plane_cluster.apply_crd(yaml.safe_load(CRD.read_text()))
        chart_rbac().grant_cluster(plane_cluster)
        try:
            yield plane_cluster
        finally:
            plane_cluster.close()
        return
    if not REAL_CLUSTER:
        yield None
        return
    cluster = Cluster(REAL_CLUSTER)
    cluster.apply_crd(yaml.safe_load(CRD.read_text()))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def emulator(world: World) -> EmulatorHandle:
    """The in-process emulator, for tests that need what only it offers (its audit log,
    fault injection); skips them in real-cluster mode."""
    if world.emulator is None:
        pytest.skip("needs the API emulator's audit log or fault injection, which a real "
                    "cluster does not offer (not in FORESCALE_TEST_API=emulator mode)")
    return world.emulator


@pytest.fixture
def world(tmp_path: Path, real_cluster: Cluster | None,
          control_plane: ControlPlane | None) -> Iterator[World]:
    live_counter = ContinuingCounter(labels=LABELS, rate_per_second=RAMP_TO)
    now = time.time()
    history = ramp_history(now)
    live_counter.offset = float(history.values[-1]) + RAMP_TO * (now - history.end_seconds)
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(live_counter)
        prom = stack.enter_context(running_prometheus(
            series=[history], scrape_targets=[live.target], scrape_interval_seconds=1.0))
        emulator: EmulatorHandle | None = None
        if real_cluster is None:
            emulator = stack.enter_context(run_emulator())
            kube = Cluster(emulator.kubeconfig_path(HARNESS_IDENTITY))
            stack.callback(kube.close)
            kube.apply_crd(yaml.safe_load(CRD.read_text()))
        else:
            kube = real_cluster
        namespace = f"forescale-test-{uuid.uuid4().hex[:8]}"
        kube.create({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": namespace,
                                  "labels": {"app.kubernetes.io/created-by": "forescale-tests"}}})
        if control_plane is not None:
            chart_rbac().grant_namespace(kube, namespace)
        # The operator starts only once the live samples continue the history.
        prom.wait_for_query(f'timestamp({QUERY_SELECTOR}) > {history.end_seconds}',
                            timeout_seconds=WAIT_SECONDS)
        w = World(kube=kube, emulator=emulator, namespace=namespace, prometheus=prom,
                  live=live, tmp=tmp_path,
                  deployments=kube.watch(DEPLOYMENTS, namespace=namespace),
                  leases=kube.watch(LEASES, namespace=namespace),
                  kubeconfig=Path(REAL_CLUSTER) if REAL_CLUSTER else None,
                  plane=control_plane)
        try:
            yield w
        finally:
            w.cleanup()
        if emulator is not None:
            emulator.assert_healthy()


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


# -- the Lease tests' API (test_lease.py, test_lease_contention.py) -----------------------


@dataclass
class LeaseAPI:
    """The little the tests need from the API, on either server."""

    ns: str
    get: Callable[..., Any]
    kubeconfig_path: Callable[[str], Path]
    #: (identity, HTTP status) of every DELETE of a Lease in ``ns``, from the audit log;
    #: None on a cluster whose audit log is out of reach.
    deletes: Callable[[], list[tuple[str, int]]] | None


@pytest.fixture
def lease_api(control_plane: ControlPlane | None,
         real_cluster: Cluster | None) -> Iterator[LeaseAPI]:
    if control_plane is not None and real_cluster is not None:
        plane, cluster = control_plane, real_cluster
        ns = f"forescale-lease-{uuid.uuid4().hex[:8]}"
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        chart_rbac().grant_namespace(cluster, ns)  # the chart's Lease rules, there
        # "a" and "b" authenticate as the static identities operator-a and operator-b.
        yield LeaseAPI(
            ns=ns, get=cluster.get,
            kubeconfig_path=lambda ident: plane.kubeconfig_for(f"operator-{ident}"),
            deletes=lambda: [(e.username.removeprefix("operator-"), e.code)
                             for e in plane.audit() if e.verb == "delete"
                             and e.ref("resource") == "leases" and e.ref("namespace") == ns])
        cluster.delete("v1/namespaces", ns)
        return
    if real_cluster is not None:  # any cluster: one kubeconfig, so no audit by identity
        ns = f"forescale-lease-{uuid.uuid4().hex[:8]}"
        real_cluster.create({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": ns}})
        yield LeaseAPI(ns=ns, get=real_cluster.get,
                       kubeconfig_path=lambda ident: real_cluster.kubeconfig, deletes=None)
        real_cluster.delete("v1/namespaces", ns)
        return
    with run_emulator() as handle:
        yield LeaseAPI(
            ns="default", get=handle.get, kubeconfig_path=handle.kubeconfig_path,
            deletes=lambda: [(e.identity, e.status_code) for e in handle.audit()
                             if e.method == "DELETE" and e.resource == "leases"])
        handle.assert_healthy()


def lease_lock(kube: LeaseAPI, identity: str) -> LeaseLock:
    """A LeaseLock with a KubeClient of its own (its own connection and credentials)."""
    return LeaseLock(KubeClient(kubeconfig=str(kube.kubeconfig_path(identity))),
                     identity=identity)
