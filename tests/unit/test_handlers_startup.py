"""The kopf wiring's startup: readiness follows the API's answers, not a single attempt."""

from __future__ import annotations

import asyncio

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
