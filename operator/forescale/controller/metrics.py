"""The operator's own metrics (prometheus_client), served on ``--metrics-port``.

One registry per process rather than the global default, so tests and the benchmark can
run several operators' metrics side by side. Labels are namespace and policy name.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from forescale.controller.decision_metrics import DecisionMetrics

LABELS = ("namespace", "policy")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.forecast_rate = Gauge(
            "forescale_forecast_arrival_rate", "Planned arrival rate: the highest forecast "
            "upper bound over the planning window (req/s).", LABELS, registry=r)
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
        self.errors = Counter("forescale_errors_total", "Errors by cause (CamelCase reason).",
                              ("cause",), registry=r)
        self.scales = Counter("forescale_scale_writes_total", "Replica changes written.",
                              ("direction",), registry=r)
        # The forecast band, recommendation and conditions the chart's dashboard and
        # alerts read (issue 11).
        self.decision = DecisionMetrics(r)

    def set_serving(self, namespace: str, policy: str, model: str | None) -> None:
        for name in ("lstm", "arima", "ma"):
            self.serving.labels(namespace, policy, name).set(1.0 if name == model else 0.0)

    def forget(self, namespace: str, policy: str) -> None:
        self.decision.forget(namespace, policy)
        for gauge in (self.forecast_rate, self.observed_rate, self.desired, self.current):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, policy)
        for name in ("lstm", "arima", "ma"):
            with contextlib.suppress(KeyError):
                self.serving.remove(namespace, policy, name)


def serve(metrics: OperatorMetrics, *, address: str, port: int) -> int:
    """Serve ``/metrics`` and ``/healthz`` from a background thread; returns the port."""
    import threading
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, object], start_response: object) -> object:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
            return [b"ok\n"]
        return exposition(environ, start_response)

    server = make_server(address, port, app, ThreadingWSGIServer,  # type: ignore[arg-type]
                         handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return int(server.server_port)
