"""A real Prometheus for integration tests: backfilled history and a live counter.

Typical use (a module-scoped fixture)::

    history = CounterSeries.from_trace(trace, end=trace.start_seconds + 3 * 86400,
                                       labels={"job": "web"}, scrape_interval_seconds=30)
    with running_prometheus(series=[history]) as prom:
        source = PrometheusSource(prom.url)
        source.read_rate(query, start=..., end=history.end_seconds, step_seconds=60)

Historical time: the traces are from 1995 and 1998, so every query about them must be made
at the trace's own "now" (``CounterSeries.end_seconds``), never at wall-clock time. An
instant query without ``time`` is evaluated at the server's clock and looks back only five
minutes, so it finds nothing; range queries take explicit ``start``/``end``. Retention is
measured from the newest block, so the server keeps ``100000d``: enough for 1995 history
next to samples scraped today. To continue a trace into live traffic, shift it so that it
ends now (``shift_seconds``) and let a :class:`LiveCounter` with the same labels take over.

Waiting is by polling (``/-/ready``, then a query that must return data); nothing sleeps
for a fixed time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from forescale.core.series import FloatArray
from forescale.trace import Trace

# Retention counts back from the newest block; 1995 history next to today's scrapes needs
# over 11,000 days. Prometheus accepts "d" here (promtool's block duration does not).
RETENTION = "100000d"
# promtool's default is 2h blocks: 14 days become 169 of them, and each block costs ~0.15 s
# (mostly fsync) here. 16-day blocks (hours: promtool takes no "d") make 14 days 2-3 blocks,
# ~0.6 s instead of ~2.5 s at 24h. Prometheus loads blocks of any length; only its own
# compaction caps their size, and nothing here is old enough to compact.
MAX_BLOCK_DURATION = "384h"
POLL_SECONDS = 0.05


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def prometheus_binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``.

    Skips the calling test when they are missing on a developer machine; in CI (``CI=true``)
    a missing binary fails the test instead, so that CI can never pass by skipping.
    """
    found = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = (f"{' and '.join(missing)} not on PATH; install with "
                   f"'sudo scripts/install-prometheus.sh' (make test does it)")
        if in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    prometheus, promtool = found["prometheus"], found["promtool"]
    assert prometheus is not None and promtool is not None
    return prometheus, promtool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- backfilled history --------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq would compare numpy arrays
class CounterSeries:
    """One counter series as Prometheus would have scraped it: cumulative values in time."""

    name: str
    labels: Mapping[str, str]
    timestamps_seconds: FloatArray
    values: FloatArray

    def __post_init__(self) -> None:
        if not self.name.endswith("_total"):
            raise ValueError(f"a counter's name ends with _total, got {self.name!r}")
        if self.timestamps_seconds.shape != self.values.shape or len(self.values) < 2:
            raise ValueError("need at least two samples with one timestamp each")
        if (np.diff(self.timestamps_seconds) <= 0).any():
            # promtool silently drops out-of-order samples.
            raise ValueError("timestamps must be strictly ascending")
        if (np.diff(self.values) < 0).any():
            raise ValueError("a counter never decreases")

    @classmethod
    def from_counts(cls, counts: npt.ArrayLike, *, start_seconds: float, step_seconds: float,
                    name: str = "http_requests_total",
                    labels: Mapping[str, str] | None = None,
                    scrape_interval_seconds: float | None = None,
                    initial_value: float = 0.0) -> CounterSeries:
        """A counter that grows by ``counts[i]`` over ``[start + i*step, start + (i+1)*step)``.

        It is sampled at the start of the first interval (``initial_value``) and then every
        ``scrape_interval_seconds`` (default: once per step), with each interval's count spread
        evenly over its scrapes. So ``rate(x[w])`` for any ``w`` of at least two scrape
        intervals, evaluated at interval ends, recovers ``counts / step`` exactly: e.g. 30 s
        scrapes of minute counts let ``rate(x[60s])`` give back every minute's rate.
        """
        counts = np.asarray(counts, dtype=np.float64)
        scrape = step_seconds if scrape_interval_seconds is None else scrape_interval_seconds
        per_step = step_seconds / scrape
        if not (per_step >= 1 and float(per_step).is_integer()):
            raise ValueError(f"the step ({step_seconds:g}s) must be a whole multiple of the "
                             f"scrape interval ({scrape:g}s)")
        m = int(per_step)
        fraction = np.arange(1, m + 1, dtype=np.float64) / m           # scrapes within a step
        before = initial_value + np.concatenate(([0.0], np.cumsum(counts)[:-1]))
        values = (before[:, None] + counts[:, None] * fraction[None, :]).ravel()
        offsets = (np.arange(len(counts))[:, None] * step_seconds
                   + fraction[None, :] * step_seconds).ravel()
        return cls(name=name, labels=dict(labels or {}),
                   timestamps_seconds=start_seconds + np.concatenate(([0.0], offsets)),
                   values=np.concatenate(([initial_value], values)))

    @classmethod
    def from_trace(cls, trace: Trace, *, start: float | None = None, end: float | None = None,
                   shift_seconds: float = 0.0, **kwargs: Any) -> CounterSeries:
        """The trace's intervals that lie within ``[start, end)`` (Unix seconds, unshifted),
        moved by ``shift_seconds``; other arguments as :meth:`from_counts`."""
        times = trace.start_seconds + trace.step_seconds * np.arange(len(trace))
        keep = np.ones(len(trace), dtype=bool)
        if start is not None:
            keep &= times >= start
        if end is not None:
            keep &= times + trace.step_seconds <= end
        index = np.flatnonzero(keep)
        if index.size == 0:
            raise ValueError("no trace interval lies within [start, end)")
        return cls.from_counts(trace.counts[index[0]: index[-1] + 1],
                               start_seconds=float(times[index[0]]) + shift_seconds,
                               step_seconds=trace.step_seconds, **kwargs)

    @property
    def start_seconds(self) -> float:
        return float(self.timestamps_seconds[0])

    @property
    def end_seconds(self) -> float:
        """The last sample's time: the history's own "now", where queries about it are made."""
        return float(self.timestamps_seconds[-1])

    @property
    def selector(self) -> str:
        """PromQL selector of exactly this series."""
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"


def write_openmetrics(path: Path, series: Iterable[CounterSeries]) -> Path:
    """Write the series as OpenMetrics text that ``promtool`` backfills.

    What promtool needs and does not check: timestamps in seconds (milliseconds land in the
    year 58856), ascending per series (others are dropped), no blank line, ``# EOF`` last.
    """
    by_family: dict[str, list[CounterSeries]] = {}
    for s in series:
        by_family.setdefault(s.name.removesuffix("_total"), []).append(s)
    lines: list[str] = []
    for family, members in by_family.items():
        # A family's samples must be contiguous in OpenMetrics.
        lines.append(f"# TYPE {family} counter")
        for s in members:
            name = s.selector.replace("{}", "")
            lines.extend(f"{name} {float(v)!r} {float(t):.3f}"
                         for t, v in zip(s.timestamps_seconds, s.values, strict=True))
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")
    return path


def backfill(openmetrics: Path, data_dir: Path, *, promtool: str = "promtool") -> None:
    """Turn OpenMetrics text into TSDB blocks in ``data_dir``, before Prometheus starts.

    Blocks copied into a running server appear only after about a minute, so always backfill
    first and start (or restart) the server afterwards.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics",
         f"--max-block-duration={MAX_BLOCK_DURATION}", str(openmetrics), str(data_dir)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"promtool backfill of {openmetrics} failed "
                           f"({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


# --- the server ----------------------------------------------------------------------------

class PrometheusError(RuntimeError):
    """The harness could not start Prometheus or query it."""


@dataclass
class PrometheusServer:
    """One ``prometheus`` process on 127.0.0.1 with its own data directory.

    ``stop()`` and ``start()`` keep the data directory and the port, so a test can stop
    Prometheus in the middle of a run and bring the same server (and URL) back.
    """

    work_dir: Path
    binary: str = "prometheus"
    scrape_targets: Sequence[str] = ()
    scrape_interval_seconds: float = 1.0
    port: int = field(default_factory=free_port)
    timings: dict[str, float] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def write_config(self) -> Path:
        interval = _duration(self.scrape_interval_seconds)
        scrape_configs = []
        if self.scrape_targets:
            scrape_configs.append({
                "job_name": "live",
                "scrape_interval": interval,
                "scrape_timeout": _duration(min(self.scrape_interval_seconds, 10.0)),
                # Keep the exporter's own labels (job="web"…), so that one selector finds
                # both the backfilled history and the live samples.
                "honor_labels": True,
                "static_configs": [{"targets": list(self.scrape_targets)}],
            })
        config = {"global": {"scrape_interval": interval}, "scrape_configs": scrape_configs}
        path = self.work_dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        return path

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        if self.running:
            return
        config = self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config.file={config}",
                 f"--storage.tsdb.path={self.data_dir}",
                 f"--storage.tsdb.retention.time={RETENTION}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--web.enable-lifecycle", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._poll(self._ready, timeout_seconds=timeout_seconds, what="/-/ready")
        except BaseException:
            self.stop()
            raise
        self.timings["start_seconds"] = time.monotonic() - began

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, timeout_seconds: float = 30.0) -> None:
        self.stop()
        self.start(timeout_seconds=timeout_seconds)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Raw instant query (stdlib HTTP, independent of the adapter under test).

        ``at`` is the evaluation time; give the history's own "now" for backfilled data.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"query {promql!r}: HTTP {exc.code}: "
                                  f"{exc.read().decode(errors='replace')}") from None
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_query(self, promql: str, *, at: float | None = None,
                       timeout_seconds: float = 30.0,
                       until: Callable[[list[dict[str, Any]]], bool] = bool,
                       ) -> list[dict[str, Any]]:
        """Poll an instant query until ``until(result)`` (default: any data) and return it.

        Live-scraped samples take ~5 s to become queryable; backfilled ones are there at once
        but only when asked at their own time (``at``).
        """
        last: list[list[dict[str, Any]]] = [[]]

        def check() -> bool:
            try:
                last[0] = self.query(promql, at=at)
            except OSError:  # not listening (yet); an HTTP error (a bad query) is raised
                return False
            return until(last[0])

        self._poll(check, timeout_seconds=timeout_seconds, what=f"data for {promql!r}")
        return last[0]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _poll(self, condition: Callable[[], bool], *, timeout_seconds: float, what: str) -> None:
        deadline = time.monotonic() + timeout_seconds
        while not condition():
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited while waiting for {what}:\n"
                                      f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise PrometheusError(f"no {what} after {timeout_seconds:g}s:\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)


@contextmanager
def running_prometheus(*, series: Sequence[CounterSeries] = (),
                       scrape_targets: Sequence[str] = (),
                       scrape_interval_seconds: float = 1.0,
                       work_dir: Path | None = None,
                       timeout_seconds: float = 30.0) -> Iterator[PrometheusServer]:
    """Backfill ``series``, start Prometheus, wait until every series is queryable, yield it.

    ``scrape_targets`` (``host:port``, e.g. :attr:`LiveCounter.target`) are scraped every
    ``scrape_interval_seconds``. The work directory is temporary unless given.
    """
    prometheus, promtool = prometheus_binaries()
    with ExitStack() as stack:
        root = Path(work_dir) if work_dir is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="forescale-prometheus-")))
        server = PrometheusServer(work_dir=root, binary=prometheus,
                                  scrape_targets=tuple(scrape_targets),
                                  scrape_interval_seconds=scrape_interval_seconds)
        if series:
            began = time.monotonic()
            om = write_openmetrics(root / "history.om", series)
            backfill(om, server.data_dir, promtool=promtool)
            server.timings["backfill_seconds"] = time.monotonic() - began
        stack.callback(server.stop)
        server.start(timeout_seconds=timeout_seconds)
        began = time.monotonic()
        for s in series:
            server.wait_for_query(s.selector, at=s.end_seconds, timeout_seconds=timeout_seconds)
        server.timings["data_seconds"] = time.monotonic() - began
        yield server


# --- a live counter ------------------------------------------------------------------------

class LiveCounter(Collector):
    """A prometheus_client exporter on 127.0.0.1 whose counter grows at a rate the test sets.

    The value is computed when scraped, ``count + rate × elapsed``, so the counter is exact
    at any scrape time and ``set_rate`` takes effect from the moment it is called.
    """

    def __init__(self, *, name: str = "http_requests_total",
                 labels: Mapping[str, str] | None = None, rate_per_second: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends with _total, got {name!r}")
        self.name = name
        self.labels = dict(labels or {"job": "web"})
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0.0
        self._rate = 0.0
        self._since = clock()
        self.set_rate(rate_per_second)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def set_rate(self, rate_per_second: float) -> None:
        if not (math.isfinite(rate_per_second) and rate_per_second >= 0):
            raise ValueError(f"rate must be finite and >= 0, got {rate_per_second!r}")
        with self._lock:
            now = self._clock()
            self._count += self._rate * (now - self._since)
            self._rate, self._since = float(rate_per_second), now

    @property
    def count(self) -> float:
        with self._lock:
            return self._count + self._rate * (self._clock() - self._since)

    @property
    def target(self) -> str:
        if self._server is None:
            raise RuntimeError("LiveCounter is not started")
        return f"127.0.0.1:{self._server.server_port}"

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name.removesuffix("_total"),
                                     "Requests served (forescale test counter).",
                                     labels=sorted(self.labels))
        family.add_metric([self.labels[k] for k in sorted(self.labels)], self.count)
        yield family

    def start(self) -> LiveCounter:
        registry = CollectorRegistry()
        registry.register(self)
        # Port 0: the kernel picks a free one, so parallel test sessions never collide.
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LiveCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _duration(seconds: float) -> str:
    # Prometheus durations take no fractions: whole milliseconds.
    return f"{round(seconds * 1000)}ms"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
