"""A policy's Prometheus URL is attacker-chosen unless the admin allowed it; whatever answers
there must not get the operator's token, be followed through a redirect, or have its body
repeated in a status. A tiny HTTP server on 127.0.0.1 plays the hostile service."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from forescale.adapters.prometheus import (
    AmbiguousQuery,
    BadQuery,
    MetricsError,
    PrometheusSource,
    PrometheusUnavailable,
)
from forescale.controller.settings import ControllerSettings
from forescale.core.errors import InvalidInputError

SECRET = "SECRET-INTERNAL-DATA: db_password=hunter2"


class Hostile:
    """Answers each path with a canned response and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                me.requests.append((self.path, self.headers.get("Authorization")))
                path = self.path.split("?")[0]
                status, body, headers = me.answer(path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/leak500"):
            return 500, SECRET.encode(), {"Content-Type": "text/plain"}
        if path.startswith("/leak400"):
            return 400, json.dumps({"secret": SECRET}).encode(), {}
        if path.startswith("/fake-prom-error"):
            body = {"status": "error", "errorType": "execution",
                    "error": 'found duplicate series for {job="payroll", secret="x"} \x1b[31m'
                             + "A" * 500}
            return 422, json.dumps(body).encode(), {}
        if path.startswith("/redirect"):
            return 302, b"", {"Location": self.url + "/leak500/api/v1/query_range"}
        if path.startswith("/two"):
            data = {"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {"tenant": "other-team-secret"}, "values": [[60, "1"]]},
                {"metric": {"tenant": "mine"}, "values": [[60, "2"]]}]}}
            return 200, json.dumps(data).encode(), {}
        if path.startswith("/huge"):  # an unaggregated query: hundreds of series
            series = b'{"metric":{"pod":"p"},"values":[' + b'[60,"1"],' * 40_000 + b'[60,"1"]]}'
            return 200, (b'{"status":"success","data":{"resultType":"matrix","result":['
                         + b",".join([series] * 100) + b"]}}"), {}
        if path.startswith("/deep"):
            return 200, b"[" * 100_000, {}
        if path.startswith("/long-int"):
            return 200, (b'{"status":"success","data":{"resultType":"matrix","result":'
                         + b"1" * 5000 + b"}}"), {}
        if path.startswith("/native"):
            data = {"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {}, "histograms": [[60, {"count": "3", "sum": "1.5"}]]}]}}
            return 200, json.dumps(data).encode(), {}
        for name, stamp in (("/nan-time", b"NaN"), ("/inf-time", b'"Infinity"'),
                            ("/text-nan-time", b'"nan"')):
            if path.startswith(name):
                return 200, (b'{"status":"success","data":{"resultType":"matrix","result":'
                             b'[{"metric":{},"values":[[' + stamp + b',"1"]]}]}}'), {}
        return 404, b"", {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


def _error(url: str) -> MetricsError:
    with PrometheusSource(url, timeout_seconds=5) as source, \
            pytest.raises(MetricsError) as info:
        source.read_rate("up", start=0, end=120, step_seconds=60)
    return info.value


@pytest.mark.parametrize("path", ["/nan-time", "/inf-time", "/text-nan-time"])
def test_a_sample_at_no_time_is_a_malformed_answer(hostile: Hostile, path: str) -> None:
    """round() of it raised ValueError/OverflowError: DecisionFailed, not
    MetricsAvailable=False with the reason."""
    assert "is the URL a Prometheus API?" in str(_error(hostile.url + path))


@pytest.mark.parametrize("path", ["/deep", "/long-int"])
def test_json_python_cannot_take_is_a_metrics_error(hostile: Hostile, path: str) -> None:
    """Nested too deep (RecursionError) or an integer of 5,000 digits (ValueError): these
    escaped as DecisionFailed and a backtest traceback."""
    error = _error(hostile.url + path)
    assert isinstance(error, PrometheusUnavailable)
    assert "not with Prometheus API JSON" in str(error)


@pytest.mark.parametrize("step", [1 / 3, 0.0005, 60.0001])
def test_a_step_of_no_whole_milliseconds_is_refused(step: float) -> None:
    """Prometheus cuts the step to milliseconds: at 1/3 s its samples drifted off the grid
    and 1,984 of 2,000 came back NaN."""
    with PrometheusSource("http://127.0.0.1:1", timeout_seconds=5) as source, \
            pytest.raises(InvalidInputError, match="whole number of milliseconds"):
        source.read_rate("up", start=0, end=600, step_seconds=step)


def test_native_histograms_are_a_bad_query_not_an_unavailable_prometheus(
        hostile: Hostile) -> None:
    """rate() of a native histogram answers series of histograms without float values: the
    query is wrong (BadQuery, not retried), not the URL."""
    error = _error(hostile.url + "/native")
    assert isinstance(error, BadQuery)
    assert "histogram_count" in str(error)


@pytest.mark.parametrize("timeout", [0.0, 3601.0, 1e15, math.inf])
def test_a_timeout_past_an_hour_is_refused(timeout: float) -> None:
    """1e15 s overflowed the clock at the first read, and every read failed."""
    with pytest.raises(InvalidInputError, match="at most 3600"):
        PrometheusSource("http://127.0.0.1:9", timeout_seconds=timeout)


@pytest.mark.parametrize("path", ["/leak500", "/leak400"])
def test_an_error_body_never_reaches_the_message(hostile: Hostile, path: str) -> None:
    error = _error(hostile.url + path)
    assert "SECRET" not in str(error) and "hunter2" not in str(error)
    assert "not a Prometheus API error response" in str(error)


def test_a_prometheus_error_gives_a_bounded_printable_reason(hostile: Hostile) -> None:
    error = _error(hostile.url + "/fake-prom-error")
    assert isinstance(error, BadQuery)
    text = str(error)
    assert "execution: found duplicate series" in text
    assert "payroll" not in text and "\x1b" not in text  # label values and escapes dropped
    assert len(text) < 300


def test_redirects_are_not_followed(hostile: Hostile) -> None:
    error = _error(hostile.url + "/redirect")
    assert isinstance(error, PrometheusUnavailable)
    assert "redirect" in str(error)
    assert [p for p, _ in hostile.requests if p.startswith("/leak500")] == []


def test_ambiguity_names_labels_not_values(hostile: Hostile) -> None:
    error = _error(hostile.url + "/two")
    assert isinstance(error, AmbiguousQuery)
    assert "tenant" in str(error) and "other-team-secret" not in str(error)


def test_the_token_goes_only_to_the_operators_prometheus(hostile: Hostile,
                                                         tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("operator-token")
    settings = ControllerSettings(identity="t", prometheus_url="http://prom.monitoring:9090",
                                  prometheus_bearer_token_file=token,
                                  allowed_prometheus_urls=(hostile.url + "/",))
    assert settings.check_prometheus_url(hostile.url + "/leak500") is None
    with settings.prometheus_source(hostile.url + "/leak500") as source, \
            pytest.raises(MetricsError):
        source.read_rate("up", start=0, end=120, step_seconds=60)
    assert hostile.requests and all(auth is None for _, auth in hostile.requests)


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://prom.monitoring:9090", True),              # the operator's own
    ("http://prom.monitoring:9090/any/prefix", True),
    ("http://PROM.monitoring:9090/", True),
    ("http://prom.monitoring:9091", False),             # another port
    ("https://prom.monitoring:9090", False),            # another scheme
    ("http://tenant-prom.team-a:9090/prometheus", True),  # on the allow-list
    ("http://tenant-prom.team-a:9090/prometheus/", True),
    ("http://tenant-prom.team-a:9090/prometheus-evil", False),
    ("http://tenant-prom.team-a:9090/prometheus/../admin", False),
    # The same segment percent-encoded: requests sends it decoded, servers resolve it.
    ("http://tenant-prom.team-a:9090/prometheus/%2e%2e/admin", False),
    ("http://tenant-prom.team-a:9090/prometheus/%2E%2E/admin", False),
    ("http://tenant-prom.team-a:9090/prometheus/.%2e/admin", False),
    ("http://tenant-prom.team-a:9090/prometheus%2f..%2fadmin", False),
    ("http://tenant-prom.team-a:9090/prometheus/%2e", False),
    ("http://tenant-prom.team-a:9090/prometheus/tenant%2Da", True),
    ("http://tenant-prom.team-a:9090/", False),
    ("http://169.254.169.254/latest/meta-data", False),
    ("http://10.0.0.1/secret#", False),
    ("http://10.0.0.1/x?y=1", False),
    ("http://user:pw@prom.monitoring:9090", False),
    ("file:///etc/passwd", False),
    ("http://[::1", False),
])
def test_allow_list(url: str, allowed: bool) -> None:
    settings = ControllerSettings(identity="t", prometheus_url="http://prom.monitoring:9090",
                                  allowed_prometheus_urls=(
                                      "http://tenant-prom.team-a:9090/prometheus",))
    problem = settings.check_prometheus_url(url)
    assert (problem is None) == allowed, problem
    if problem is not None:
        assert problem.startswith("spec.metrics.prometheusUrl")


def test_without_an_allow_list_only_the_operators_own() -> None:
    settings = ControllerSettings(identity="t", prometheus_url="http://prom:9090")
    problem = settings.check_prometheus_url("http://elsewhere:9090")
    assert problem is not None and "allow-list" in problem and "none besides" in problem
    assert ControllerSettings(identity="t").check_prometheus_url("http://prom:9090") is not None


class Trickle:
    """Answers every request one byte every ``interval`` seconds (the status line and
    headers too when ``headers_too``): each read gets a byte well within a per-read
    timeout, so only a deadline for the whole answer stops it."""

    def __init__(self, *, interval: float, headers_too: bool) -> None:
        body = json.dumps({"status": "success", "data": {"resultType": "matrix",
                                                         "result": []}}).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.stop = threading.Event()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not headers_too:
                    self.wfile.write(head)
                    self.wfile.flush()
                for byte in (head if headers_too else b"") + body:
                    if me.stop.wait(interval):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up: what the test wants
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("headers_too", [False, True])
def test_the_timeout_is_a_deadline_for_the_whole_answer(headers_too: bool) -> None:
    # A server that answers a byte every 0.2 s never trips a 1 s per-read timeout; the read
    # must still give up after about 1 s, as PrometheusUnavailable, or a cycle could run
    # past the liveness limit.
    server = Trickle(interval=0.2, headers_too=headers_too)
    try:
        with PrometheusSource(server.url, timeout_seconds=1) as source, \
                pytest.raises(PrometheusUnavailable, match="did not answer within 1s"):
            began = time.monotonic()
            try:
                source.read_rate("up", start=0, end=120, step_seconds=60)
            finally:
                took = time.monotonic() - began
        assert took < 2.0
    finally:
        server.close()


def test_what_cannot_be_sent_is_not_reported_as_an_answer(tmp_path: Path) -> None:
    """ValueErrors raised before anything is sent (a host label too long, a token file of
    two lines) were reported as "answered, but not with Prometheus API JSON"."""
    with PrometheusSource("http://" + "a" * 64 + ".example:9090", timeout_seconds=2) as source, \
            pytest.raises(PrometheusUnavailable, match="could not be sent: "):
        source.read_rate("up", start=0, end=600, step_seconds=60)
    token = tmp_path / "token"
    token.write_text("first-line\nsecond-line\n")
    with PrometheusSource("http://127.0.0.1:1", timeout_seconds=2,
                          bearer_token_file=str(token)) as source, \
            pytest.raises(PrometheusUnavailable, match="holds more than one token"):
        source.read_rate("up", start=0, end=600, step_seconds=60)


def test_an_answer_too_large_to_hold_is_a_bad_query(hostile: Hostile) -> None:
    """An unaggregated query over hundreds of series was parsed whole before the
    one-series check: ~210 bytes a sample, 500 series OOM-killed a 1 GiB operator at every
    start. Past MAX_RESPONSE_BYTES the read stops, and the query is wrong (not retried)."""
    error = _error(hostile.url + "/huge")
    assert isinstance(error, BadQuery)
    assert "more than 32 MiB" in str(error) and "sum(" in str(error)

