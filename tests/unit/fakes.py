"""In-memory stand-ins for the Kubernetes API and Prometheus, for the cycle's unit tests.

Fakes, not mocks: they keep state and enforce what the operator's correctness depends on
(resourceVersion preconditions on Leases and /scale), so a test asserts outcomes — the
replicas, the Lease, the status — rather than calls. The integration tier runs the real
operator against a real API server and Prometheus.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from forescale.controller.kube import JSON, Conflict, KubeError, NotFound, ScaleResource
from forescale.controller.status import merge_patch
from forescale.core.series import Series

DEPLOYMENTS = ScaleResource("apps", "v1", "deployments")


class FakeKube:
    def __init__(self) -> None:
        self.replicas: dict[tuple[str, str], int] = {}
        self.scale_rv: dict[tuple[str, str], int] = {}
        self.leases: dict[tuple[str, str], JSON] = {}
        self.statuses: dict[tuple[str, str], JSON] = {}
        self.events: list[tuple[str, str, str]] = []
        self.hpas: list[JSON] = []
        self.scale_writes: list[tuple[str, str, int]] = []
        self.scale_reads: list[tuple[str, str]] = []
        self.fail_scale_writes: KubeError | None = None
        #: Raised by the reads of /scale, the autoscaler lists, the Lease calls.
        self.fail_scale_reads: KubeError | None = None
        self.fail_autoscaler_lists: KubeError | None = None
        self.fail_leases: KubeError | None = None
        #: How many of the next status patches fail (the API unreachable: no answer).
        self.fail_status_patches = 0
        self._rv = 0

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # -- the KubeApi protocol -----------------------------------------------------------

    def connection_params(self) -> dict[str, Any]:
        return {}

    def resolve_scale(self, api_version: str, kind: str) -> ScaleResource | None:
        return DEPLOYMENTS if (api_version, kind) == ("apps/v1", "Deployment") else None

    def get_scale(self, resource: ScaleResource, namespace: str, name: str) -> JSON:
        self.scale_reads.append((namespace, name))
        if self.fail_scale_reads is not None:
            raise self.fail_scale_reads
        if (namespace, name) not in self.replicas:
            raise NotFound(404, "NotFound", f"deployments {name} not found")
        return {"spec": {"replicas": self.replicas[namespace, name]},
                "metadata": {"resourceVersion": str(self.scale_rv.get((namespace, name), 1))}}

    def patch_scale(self, resource: ScaleResource, namespace: str, name: str, *,
                    replicas: int, resource_version: str) -> JSON:
        if self.fail_scale_writes is not None:
            raise self.fail_scale_writes
        if resource_version != str(self.scale_rv.get((namespace, name), 1)):
            raise Conflict(409, "Conflict", "the object has been modified")
        self.replicas[namespace, name] = replicas
        self.scale_rv[namespace, name] = self.scale_rv.get((namespace, name), 1) + 1
        self.scale_writes.append((namespace, name, replicas))
        return {"metadata": {"resourceVersion": str(self.scale_rv[namespace, name])}}

    def list_hpas(self, namespace: str) -> list[JSON]:
        if self.fail_autoscaler_lists is not None:
            raise self.fail_autoscaler_lists
        return list(self.hpas)

    def list_scaled_objects(self, namespace: str) -> list[JSON]:
        return []

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        if self.fail_leases is not None:
            raise self.fail_leases
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease is not None else None

    def list_leases(self, namespace: str, *, label_selector: str) -> list[JSON]:
        wanted = dict(term.partition("=")[::2] for term in label_selector.split(","))
        return [copy.deepcopy(lease) for (ns, _), lease in self.leases.items()
                if ns == namespace and all(lease["metadata"]["labels"].get(k) == v
                                           for k, v in wanted.items())]

    def create_lease(self, namespace: str, name: str, spec: JSON, *,
                     labels: Mapping[str, str], annotations: Mapping[str, str]) -> JSON:
        if (namespace, name) in self.leases:
            raise Conflict(409, "AlreadyExists", "exists")
        lease = {"metadata": {"namespace": namespace, "name": name,
                              "resourceVersion": self._next_rv(), "labels": dict(labels),
                              "annotations": dict(annotations)}, "spec": dict(spec)}
        self.leases[namespace, name] = lease
        return copy.deepcopy(lease)

    def replace_lease(self, lease: JSON, spec: JSON) -> JSON:
        meta = lease["metadata"]
        key = (meta["namespace"], meta["name"])
        stored = self.leases.get(key)
        if stored is None:
            raise NotFound(404, "NotFound", "gone")
        if stored["metadata"]["resourceVersion"] != meta.get("resourceVersion"):
            raise Conflict(409, "Conflict", "modified")
        new = {"metadata": {**meta, "resourceVersion": self._next_rv()}, "spec": dict(spec)}
        self.leases[key] = new
        return copy.deepcopy(new)

    def delete_lease(self, lease: JSON) -> None:
        meta = lease["metadata"]
        stored = self.leases.get((meta["namespace"], meta["name"]))
        if stored is not None and stored["metadata"]["resourceVersion"] != meta.get(
                "resourceVersion"):
            raise Conflict(409, "Conflict", "modified")
        self.leases.pop((meta["namespace"], meta["name"]), None)

    def patch_policy_status(self, namespace: str, name: str, status: JSON) -> JSON:
        if self.fail_status_patches > 0:
            self.fail_status_patches -= 1
            raise KubeError(0, "Unreachable", "TimeoutError: timed out")
        # A merge patch, as the API server applies it: what a write leaves out stays.
        self.statuses[namespace, name] = merge_patch(self.statuses.get((namespace, name)),
                                                     status)
        return {"status": self.statuses[namespace, name]}

    def create_event(self, *, involved: Mapping[str, Any], type_: str, reason: str,
                     message: str, now: float, component: str, instance: str) -> None:
        self.events.append((type_, reason, message))


class FakeSource:
    """Prometheus answering a constant rate (or raising ``error``); counts the points it
    was asked for."""

    def __init__(self, rate: float = 100.0) -> None:
        self.rate = rate
        self.points = 0
        self.calls = 0
        self.queries: list[str] = []
        self.error: Exception | None = None

    def read_rate(self, query: str, *, start: float, end: float, step_seconds: float,
                  allow_empty: bool = False) -> Series:
        self.calls += 1
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        n = max(math.floor((end - start) / step_seconds + 1e-9), 0)
        self.points += n
        return Series(start, step_seconds, np.full(n, self.rate))
