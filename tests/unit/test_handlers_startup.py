"""The kopf wiring's startup: readiness follows the API's answers, not a single attempt."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

import kopf
import pytest

from forescale.controller import handlers
from forescale.controller.health import Health
from forescale.controller.kube import KubeError, ScaleResource
from forescale.controller.metrics import OperatorMetrics
from forescale.controller.settings import ControllerSettings
from forescale.controller.worker import Controller
from tests.unit.fakes import FakeKube


class SlowStartKube(FakeKube):
    """Refuses its first ``failures`` discovery calls (a sidecar not ready yet)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def resolve_scale(self, api_version: str, kind: str) -> ScaleResource | None:
        if self.failures > 0:
            self.failures -= 1
            raise KubeError(0, "Unreachable", "ConnectionRefusedError")
        return super().resolve_scale(api_version, kind)


@pytest.mark.parametrize("failures", [0, 1, 3])
def test_readiness_comes_once_the_api_answers(monkeypatch: pytest.MonkeyPatch,
                                              failures: int) -> None:
    """One failed call at startup left a replica with no status to write (no policies, or
    all of them assigned elsewhere) unready for ever: out of the metrics Service, and
    blocking node drains behind the PodDisruptionBudget."""
    monkeypatch.setattr(handlers, "HEARTBEAT_SECONDS", 0.01)
    kube, health = SlowStartKube(failures), Health()
    controller = Controller(ControllerSettings(identity="op-a",
                                               prometheus_url="http://prom:9090"),
                            kube, OperatorMetrics(), health=health)
    registry = handlers.build_registry(controller, workers=1)
    startup = next(h for h in registry._activities.get_all_handlers()
                   if "startup" in str(h.id))

    async def run() -> bool:
        await startup.fn()
        for _ in range(200):
            if health.readiness().ok:
                break
            await asyncio.sleep(0.01)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        return health.readiness().ok

    assert asyncio.run(run())
    assert kube.failures == 0


class BlackholedKube(FakeKube):
    """An API server that stops answering: every Lease call waits for its timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.hang.is_set():
            time.sleep(0.6)
            raise KubeError(0, "Unreachable", "ConnectTimeoutError")
        return super().get_lease(namespace, name)


def test_a_slow_api_does_not_make_a_live_event_loop_look_stuck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The beat waited for the membership heartbeat: with the API server blackholed the
    probe said "the event loop has not ticked" while it was free, and the kubelet would
    restart every replica during an API outage."""
    monkeypatch.setattr(handlers, "HEARTBEAT_SECONDS", 0.01)
    kube, health = BlackholedKube(), Health(loop_timeout_seconds=0.3)
    controller = Controller(ControllerSettings(identity="op-a",
                                               prometheus_url="http://prom:9090",
                                               lease_namespace="forescale"),
                            kube, OperatorMetrics(), health=health)
    registry = handlers.build_registry(controller, workers=1)
    startup = next(h for h in registry._activities.get_all_handlers()
                   if "startup" in str(h.id))

    async def run() -> list[str]:
        await startup.fn()
        for _ in range(100):
            if health.readiness().ok:
                break
            await asyncio.sleep(0.01)
        kube.hang.set()
        stuck = []
        for _ in range(100):  # a second in which the loop answers every 10 ms
            verdict = health.liveness()
            if not verdict.ok:
                stuck.append(verdict.message)
            await asyncio.sleep(0.01)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        return stuck

    assert asyncio.run(run()) == []


class LeasesForbiddenKube(FakeKube):
    """Leases not granted to the operator (the LeaseForbidden state)."""

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise KubeError(403, "Forbidden", 'leases.coordination.k8s.io "x" is forbidden')


class UnansweredLeaseKube(FakeKube):
    """The Lease read got no answer to go by: ``status`` and ``reason`` as KubeClient says."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__()
        self.error = KubeError(status, reason, "no answer")

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise self.error


POLICY = {"metadata": {"namespace": "shop", "name": "web", "uid": "uid-web"},
          "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "web"},
                   "metrics": {"query": "sum(rate(x[2m]))"}, "serviceRatePerReplica": 10}}


def _delete_handler(kube: FakeKube) -> Any:
    controller = Controller(ControllerSettings(identity="op-a",
                                               prometheus_url="http://prom:9090"),
                            kube, OperatorMetrics())
    registry = handlers.build_registry(controller, workers=1)
    return next(h for h in registry._changing.get_all_handlers() if "release" in str(h.id))


def test_a_policy_whose_lease_is_forbidden_can_be_deleted() -> None:
    """A 403 does not change by retrying: retried every 2 s without end, the finalizer
    stayed and `kubectl delete` (or the namespace's deletion) hung."""
    delete = _delete_handler(LeasesForbiddenKube())
    asyncio.run(delete.fn(body=copy.deepcopy(POLICY)))  # no TemporaryError


@pytest.mark.parametrize(("status", "reason"), [
    (0, "Unreachable"), (200, "InvalidResponse"), (401, "Unauthorized"), (429, "TooMany"),
    (503, "ServiceUnavailable")])
def test_a_lease_release_without_an_answer_is_retried(status: int, reason: str) -> None:
    """A body cut short (InvalidResponse, with a 2xx status) or an expired token is no
    refusal: the Lease would be held for its whole duration."""
    delete = _delete_handler(UnansweredLeaseKube(status, reason))
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(delete.fn(body=copy.deepcopy(POLICY)))
