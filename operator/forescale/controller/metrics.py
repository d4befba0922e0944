"""The operator's own metrics (prometheus_client), served on ``--metrics-port``.

One registry per process rather than the global default, so tests and the benchmark can
run several operators' metrics side by side. Labels are namespace and policy name.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from forescale import __version__
from forescale.controller.decision_metrics import DecisionMetrics, remove_series
from forescale.controller.health import Health, Verdict

LABELS = ("namespace", "policy")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.forecast_rate = Gauge(
            "forescale_forecast_arrival_rate", "Planned arrival rate: the rate the last "
            "decision sized for (req/s); forescale_sized_for says what set it.", LABELS,
            registry=r)
        self.observed_rate = Gauge(
            "forescale_observed_arrival_rate", "Latest observed arrival rate (req/s).",
            LABELS, registry=r)
        self.desired = Gauge("forescale_desired_replicas", "Replicas the plan asks for.",
                             LABELS, registry=r)
        self.current = Gauge("forescale_current_replicas", "Replicas /scale reports.",
                             LABELS, registry=r)
        self.serving = Gauge("forescale_serving_model",
                             "1 for the model that served the last forecast.",
                             (*LABELS, "model"), registry=r)
        self.latency = Histogram(
            "forescale_decision_seconds", "Wall time of one decision cycle.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.cpu = Histogram(
            "forescale_decision_cpu_seconds", "CPU time of one decision cycle's thread: the "
            "cycle's own cost, without waiting for the GIL, the CPU or the API.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r)
        self.errors = Counter("forescale_errors_total", "Errors by cause (CamelCase reason).",
                              ("cause",), registry=r)
        self.scales = Counter("forescale_scale_writes_total", "Replica changes written.",
                              ("direction",), registry=r)
        # The forecast band, recommendation and conditions the chart's dashboard and
        # alerts read (issue 11).
        self.decision = DecisionMetrics(r)
        self.points_read = Counter(
            "forescale_history_points_read_total",
            "Arrival-rate points asked of Prometheus (a full window once, then the tail).",
            registry=r)
        self.build_info = Gauge("forescale_build_info", "Always 1; the labels say what runs.",
                                ("version", "python"), registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # CPU, memory, open files and the interpreter: what a capacity plan needs.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def set_serving(self, namespace: str, policy: str, model: str | None) -> None:
        for name in ("lstm", "arima", "ma"):
            self.serving.labels(namespace, policy, name).set(1.0 if name == model else 0.0)

    def forget_plan(self, namespace: str, policy: str) -> None:
        """Remove the series of the policy's last plan, keeping its conditions: a cycle that
        made no plan (an invalid spec, a missing target, a failure) must not leave the
        replicas, rates and serving model of an earlier one for the dashboard and the
        alerts to read as current."""
        self.decision.forget_plan(namespace, policy)
        for gauge in (self.forecast_rate, self.observed_rate, self.desired, self.current):
            remove_series(gauge, namespace, policy)
        for name in ("lstm", "arima", "ma"):
            remove_series(self.serving, namespace, policy, name)

    def forget(self, namespace: str, policy: str) -> None:
        self.forget_plan(namespace, policy)
        self.decision.forget(namespace, policy)


def serve(metrics: OperatorMetrics, *, address: str, port: int,
          health: Health | None = None) -> int:
    """Serve ``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness) from a
    background thread; returns the port. Without ``health`` both probes answer ok."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    exposition = make_wsgi_app(metrics.registry)

    def probe(verdict: Verdict, start_response: object) -> list[bytes]:
        status = "200 OK" if verdict.ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [verdict.message.encode() + b"\n"]

    def app(environ: dict[str, object], start_response: object) -> object:
        path = environ.get("PATH_INFO")
        if path in ("/healthz", "/livez"):
            return probe(health.liveness() if health else Verdict(True, "ok"), start_response)
        if path == "/readyz":
            return probe(health.readiness() if health else Verdict(True, "ok"),
                         start_response)
        return exposition(environ, start_response)

    server = make_server(address, port, app, ThreadingWSGIServer,  # type: ignore[arg-type]
                         handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return int(server.server_port)
