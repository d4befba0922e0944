"""Every PromQL expression of the chart's Grafana dashboard and PrometheusRule, evaluated
against a real Prometheus that scrapes a running operator: each one is accepted, the
dashboard's panels show data, and the alert for scaling blocked fires for the policy that
is blocked by a fault (and not for one observing on purpose)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chart.test_chart import CHART, render
from tests.chart.test_chart_observability import VALUES, alert_rules, dashboard_queries
from tests.integration.conftest import World
from tests.support.prometheus import PrometheusServer, prometheus_binaries

pytestmark = pytest.mark.integration

#: Panels whose queries must return data once the operator has decided a few times.
MUST_SHOW = ("Arrival rate: observed against forecast", "Replicas: desired, current, "
             "recommended", "Serving model", "Decision latency",
             "What set the planned rate")
LEAD = "5s"  # the dashboard's $lead, short enough for a test's few minutes of history


@pytest.fixture
def scraper(world: World, tmp_path: Path) -> Any:
    """A second Prometheus that scrapes the operators' /metrics every second."""
    prometheus, _ = prometheus_binaries()
    servers: list[PrometheusServer] = []

    def start(ports: list[int]) -> PrometheusServer:
        (tmp_path / "scraper").mkdir()
        server = PrometheusServer(work_dir=tmp_path / "scraper", binary=prometheus,
                                  scrape_targets=[f"127.0.0.1:{p}" for p in ports],
                                  scrape_interval_seconds=1.0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_dashboard_and_alerts_against_a_running_operator(world: World, scraper: Any) -> None:
    import helm_python

    world.deployment("web", replicas=1)
    world.deployment("watched", replicas=1)
    world.policy("web", "web")
    world.policy("watched", "watched", mode="Observe")
    world.policy("broken", "no-such-deployment")
    op = world.start_operator("operator-a")
    world.wait(lambda: (c := world.condition("web", "Ready")) and c["status"] == "True",
               what="Ready=True")
    prom = scraper([op.metrics_port])
    # Wait until the forecast band has been scraped for longer than the dashboard's lead,
    # so the "offset $lead" queries have something to look back at.
    began = time.time()
    prom.wait_for_query("forescale_forecast_mean_arrival_rate", timeout_seconds=60)
    time.sleep(max(0.0, began + 2 * float(LEAD.rstrip("s")) + 2 - time.time()))

    dashboard = json.loads((CHART / "dashboards" / "forescale.json").read_text())
    answers: dict[str, list[dict[str, Any]]] = {}
    for title, query in dashboard_queries(dashboard):
        expr = query.replace("offset 2m", f"offset {LEAD}")
        # Raises on any error Prometheus reports (a 400 for a bad expression).
        answers.setdefault(title, []).extend(prom.wait_for_query(
            expr, until=lambda r, t=title: t not in MUST_SHOW or bool(r),
            timeout_seconds=60))
    for title in MUST_SHOW:
        assert answers[title], f"panel {title!r} shows no data"
    policies = {r["metric"].get("policy") for r in answers[
        "Arrival rate: observed against forecast"]}
    assert "web" in policies

    chart = helm_python.Chart.load(str(CHART))
    try:
        rules = {r["alert"]: r["expr"] for r in alert_rules(render(chart, VALUES))}
    finally:
        chart.close()
    fired = {name: prom.query(expr) for name, expr in rules.items()}
    blocked = prom.wait_for_query(rules["ForescaleScalingBlocked"], timeout_seconds=60)
    # The missing target alerts; Observe mode, chosen by the user, does not.
    assert {r["metric"]["policy"] for r in blocked} == {"broken"}
    assert fired["ForescaleMetricsUnavailable"] == []
