"""/healthz and /readyz say something: kopf's loop ticks, no decision is stuck, the API was
reached. Served by the real HTTP server on a free port; time is injected."""

from __future__ import annotations

import urllib.error
import urllib.request

from forescale.controller.health import Health
from forescale.controller.metrics import OperatorMetrics, serve


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_follow_the_operators_state() -> None:
    clock = Clock()
    health = Health(loop_timeout_seconds=30, cycle_timeout_seconds=120, clock=clock)
    port = serve(OperatorMetrics(), address="127.0.0.1", port=0, health=health)
    # Starting: alive (nothing is stuck yet) but not ready.
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz") == (503, "kopf has not started\n")
    health.beat()
    assert get(port, "/readyz") == (503, "the Kubernetes API has not been reached yet\n")
    health.api_reached()
    assert get(port, "/readyz") == (200, "ok\n")
    # A stuck event loop: no beat for longer than the timeout.
    clock.now += 31
    status, text = get(port, "/healthz")
    assert status == 503 and "event loop has not ticked for 31s" in text
    assert get(port, "/readyz")[0] == 503
    health.beat()
    assert get(port, "/healthz")[0] == 200
    # Decisions stopped: a cycle running far too long fails liveness, so the pod restarts.
    assert health.cycle_started("shop/web")
    clock.now += 100
    health.beat()
    assert get(port, "/healthz")[0] == 200
    clock.now += 21
    health.beat()
    status, text = get(port, "/healthz")
    assert status == 503 and "shop/web" in text
    health.cycle_finished("shop/web")
    assert get(port, "/healthz")[0] == 200


def test_metrics_carry_build_info_and_process_figures() -> None:
    port = serve(OperatorMetrics(), address="127.0.0.1", port=0)
    status, text = get(port, "/metrics")
    assert status == 200
    assert 'forescale_build_info{python="' in text
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text
    assert "forescale_history_points_read_total" in text
