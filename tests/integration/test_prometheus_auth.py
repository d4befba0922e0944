"""``forescale run``'s Prometheus authentication, end to end against a real Prometheus.

A tiny reverse proxy on 127.0.0.1 stands in for an authenticating Prometheus (as
kube-rbac-proxy or an ingress would): it forwards to the real server only when the request
carries ``Authorization: Bearer <the current token>`` and answers 401 otherwise. The
PrometheusSource is the one the operator builds from its settings.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from forescale.adapters.prometheus import PrometheusUnavailable, rate_query
from forescale.controller.settings import ControllerSettings
from forescale.trace import Trace, load_trace
from tests.support.prometheus import CounterSeries, PrometheusServer, running_prometheus

pytestmark = pytest.mark.integration

TRACE = Path(__file__).resolve().parents[2] / "traces" / "nasa_ksc_jul1995_1min.csv"
DAY = 86_400.0
STEP = 60.0
QUERY = rate_query('http_requests_total{job="web"}', STEP)


class AuthProxy:
    """Forwards GETs to ``upstream`` when the bearer token matches ``token``; else 401."""

    def __init__(self, upstream: str, token: str, *,
                 tls: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.token = token
        self.seen: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                given = self.headers.get("Authorization")
                proxy.seen.append(given)
                if given != f"Bearer {proxy.token}":
                    self._answer(401, b"Unauthorized\n", "text/plain")
                    return
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=10) as r:
                        self._answer(r.status, r.read(), r.headers["Content-Type"])
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read(), exc.headers["Content-Type"])

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(TRACE)


@pytest.fixture(scope="module")
def prometheus(trace: Trace) -> Iterator[PrometheusServer]:
    history = CounterSeries.from_trace(trace, end=trace.start_seconds + DAY,
                                       labels={"job": "web"}, scrape_interval_seconds=30)
    with running_prometheus(series=[history]) as server:
        yield server


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[AuthProxy]:
    p = AuthProxy(prometheus.url, "s3cret")
    yield p
    p.close()


def test_reads_through_the_proxy_with_the_token_and_picks_up_a_rotated_one(
        proxy: AuthProxy, trace: Trace, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")  # a Secret's trailing newline is not part of it
    settings = ControllerSettings(identity="t", prometheus_url=proxy.url,
                                  prometheus_bearer_token_file=token_file)
    t0 = trace.start_seconds
    with settings.prometheus_source(proxy.url) as source:
        series = source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)
        np.testing.assert_allclose(series.values, trace.rates.values[:60], rtol=1e-9)
        assert proxy.seen[-1] == "Bearer s3cret"
        # The Secret rotates: the same source (as the operator keeps it) sends the new token.
        proxy.token = "rotated"
        token_file.write_text("rotated\n")
        again = source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)
        np.testing.assert_array_equal(again.values, series.values)
        assert proxy.seen[-1] == "Bearer rotated"


def test_without_the_right_token_the_source_reports_prometheus_unavailable(
        proxy: AuthProxy, trace: Trace, tmp_path: Path) -> None:
    t0 = trace.start_seconds
    without = ControllerSettings(identity="t", prometheus_url=proxy.url)
    with (without.prometheus_source(proxy.url) as source,
          pytest.raises(PrometheusUnavailable, match=r"refused access \(HTTP 401\)") as info):
        source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)
    assert info.value.reason == "PrometheusUnavailable"
    assert proxy.seen[-1] is None

    wrong = tmp_path / "wrong"
    wrong.write_text("guess")
    settings = ControllerSettings(identity="t", prometheus_url=proxy.url,
                                  prometheus_bearer_token_file=wrong)
    with (settings.prometheus_source(proxy.url) as source,
          pytest.raises(PrometheusUnavailable, match="HTTP 401")):
        source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)

    missing = ControllerSettings(identity="t", prometheus_url=proxy.url,
                                 prometheus_bearer_token_file=tmp_path / "absent")
    before = len(proxy.seen)
    with (missing.prometheus_source(proxy.url) as source,
          pytest.raises(PrometheusUnavailable, match="cannot read the bearer token") as info):
        source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)
    assert info.value.reason == "PrometheusUnavailable"
    assert len(proxy.seen) == before  # nothing was sent without the token


def test_the_token_goes_only_to_the_operators_own_prometheus(
        proxy: AuthProxy, prometheus: PrometheusServer, trace: Trace, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret")
    # The operator's Prometheus is elsewhere: a policy naming the proxy gets no token.
    settings = ControllerSettings(identity="t", prometheus_url=prometheus.url,
                                  prometheus_bearer_token_file=token_file)
    t0 = trace.start_seconds
    with (settings.prometheus_source(proxy.url) as source,
          pytest.raises(PrometheusUnavailable, match="HTTP 401")):
        source.read_rate(QUERY, start=t0, end=t0 + 3600, step_seconds=STEP)
    assert proxy.seen[-1] is None


@pytest.fixture
def tls_proxy(prometheus: PrometheusServer, tmp_path: Path) -> Iterator[tuple[AuthProxy, Path]]:
    """The proxy over HTTPS with a self-signed certificate for 127.0.0.1 (its own CA)."""
    cert, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    p = AuthProxy(prometheus.url, "s3cret", tls=context)
    yield p, cert
    p.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_with_the_ca_file_or_without_verification(
        tls_proxy: tuple[AuthProxy, Path], trace: Trace, tmp_path: Path) -> None:
    proxy, ca = tls_proxy
    token = tmp_path / "token"
    token.write_text("s3cret")
    t0 = trace.start_seconds
    read = {"query": QUERY, "start": t0, "end": t0 + 600, "step_seconds": STEP}
    base = {"identity": "t", "prometheus_url": proxy.url, "prometheus_bearer_token_file": token}
    with ControllerSettings(**base, prometheus_ca_file=ca).prometheus_source(proxy.url) as s:
        np.testing.assert_allclose(s.read_rate(**read).values, trace.rates.values[:10])
    with ControllerSettings(**base, prometheus_insecure_skip_verify=True).prometheus_source(
            proxy.url) as s:
        np.testing.assert_allclose(s.read_rate(**read).values, trace.rates.values[:10])
    # The system CAs do not know this certificate.
    with (ControllerSettings(**base).prometheus_source(proxy.url) as s,
          pytest.raises(PrometheusUnavailable) as info):
        s.read_rate(**read)
    assert info.value.reason == "PrometheusUnavailable"
