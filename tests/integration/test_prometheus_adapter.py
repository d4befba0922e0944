"""PrometheusSource against a real Prometheus holding 14 days of the NASA July 1995 trace.

The history is backfilled as a counter scraped every 30 s, so ``rate(x[60s])`` evaluated at
each minute's end must give back that minute's rate exactly. Every query is made at the
trace's own time (1995), never at wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forescale.adapters.prometheus import (
    METRICS_REASONS,
    AmbiguousQuery,
    BadQuery,
    MetricsError,
    NoData,
    PrometheusSource,
    PrometheusUnavailable,
    rate_query,
)
from forescale.core.calibration import day_level
from forescale.core.errors import InvalidInputError
from forescale.trace import Trace, load_trace
from tests.support.prometheus import (
    CounterSeries,
    LiveCounter,
    PrometheusServer,
    running_prometheus,
    write_openmetrics,
)

pytestmark = pytest.mark.integration

TRACE = Path(__file__).resolve().parents[2] / "traces" / "nasa_ksc_jul1995_1min.csv"
DAY = 86_400.0
STEP = 60.0
WEB = 'http_requests_total{job="web"}'


@pytest.fixture(scope="module")
def trace() -> Trace:
    return load_trace(TRACE)


@pytest.fixture(scope="module")
def history(trace: Trace) -> CounterSeries:
    return CounterSeries.from_trace(trace, end=trace.start_seconds + 14 * DAY,
                                    labels={"job": "web"}, scrape_interval_seconds=30)


@pytest.fixture(scope="module")
def prometheus(trace: Trace, history: CounterSeries) -> Iterator[PrometheusServer]:
    # A second job over the first day, so that an unaggregated query returns two series.
    other = CounterSeries.from_trace(trace, end=trace.start_seconds + DAY,
                                     labels={"job": "api"}, scrape_interval_seconds=30)
    with running_prometheus(series=[history, other]) as server:
        yield server


@pytest.fixture
def source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    with PrometheusSource(prometheus.url, timeout_seconds=5) as src:
        yield src


def test_reads_the_trace_minute_rates_exactly(source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    # Start one step early: that interval ends at the counter's first sample, so rate() has
    # a single sample there and Prometheus returns nothing (NaN): the documented first window.
    series = source.read_rate(rate_query(WEB, STEP), start=t0 - STEP, end=t0 + 3 * DAY,
                              step_seconds=STEP)
    assert series.start_seconds == t0 - STEP
    assert series.step_seconds == STEP
    assert len(series) == 3 * 1440 + 1
    assert np.isnan(series.values[0])
    np.testing.assert_allclose(series.values[1:], trace.rates.values[: 3 * 1440],
                               rtol=1e-9, atol=1e-9)


def test_a_wider_window_is_the_trailing_mean_ending_at_each_interval_end(
        source: PrometheusSource, trace: Trace) -> None:
    t0, n = trace.start_seconds, 1440
    series = source.read_rate(rate_query(WEB, 2 * STEP), start=t0, end=t0 + DAY,
                              step_seconds=STEP)
    rates = trace.rates.values[:n]
    # Sample i covers [t_i, t_i + 60); with a 120 s window it is the mean of minutes i-1, i.
    np.testing.assert_allclose(series.values[1:], (rates[:-1] + rates[1:]) / 2,
                               rtol=1e-9, atol=1e-9)
    # The first window reaches back before the counter existed; Prometheus extrapolates
    # only to where the counter would be zero, so it reads low (here exactly half).
    assert series.values[0] == pytest.approx(rates[0] / 2)


def test_fourteen_days_read_in_chunks_equal_single_chunk_reads(
        prometheus: PrometheusServer, source: PrometheusSource, trace: Trace) -> None:
    t0, n = trace.start_seconds, 14 * 1440
    query = rate_query(WEB, STEP)
    began = time.monotonic()
    full = source.read_rate(query, start=t0, end=t0 + 14 * DAY, step_seconds=STEP)
    elapsed = time.monotonic() - began
    assert len(full) == n == 20_160  # over Prometheus' 11,000 points: needs three requests
    assert full.missing == 0
    np.testing.assert_allclose(full.values, trace.rates.values[:n], rtol=1e-9, atol=1e-9)
    # Spans that fit in one request, across the chunk boundaries of the long read.
    for boundary in range(source.max_points_per_query, n, source.max_points_per_query):
        lo, hi = boundary - 700, min(boundary + 700, n)
        part = source.read_rate(query, start=t0 + lo * STEP, end=t0 + hi * STEP,
                                step_seconds=STEP)
        np.testing.assert_array_equal(part.values, full.values[lo:hi])
    # Tiny chunks that do not line up with days or with the default chunk size.
    with PrometheusSource(prometheus.url, max_points_per_query=997) as small:
        np.testing.assert_array_equal(
            small.read_rate(query, start=t0, end=t0 + 14 * DAY, step_seconds=STEP).values,
            full.values)
    assert elapsed < 5, f"14-day read took {elapsed:.1f}s"


def test_a_grid_off_whole_seconds_is_kept(prometheus: PrometheusServer,
                                          trace: Trace) -> None:
    # The client would round start/end to whole seconds; the adapter must not let it (that
    # would put every point off the grid), and a fractional timeout must be a valid duration.
    start = trace.start_seconds + 600.5
    with PrometheusSource(prometheus.url, timeout_seconds=2.5) as src:
        series = src.read_rate(rate_query(WEB, STEP), start=start, end=start + 3600,
                               step_seconds=STEP)
    assert series.start_seconds == start
    assert series.missing == 0
    # Half a second after each minute's end the 60 s window still holds the same two 30 s
    # scrapes as at the minute's end (rate() extrapolates over the half second): sample i
    # is minute 10+i's rate.
    np.testing.assert_allclose(series.values, trace.rates.values[10:70], rtol=1e-9)


def test_range_beyond_the_data_is_nan_not_an_error(source: PrometheusSource,
                                                   history: CounterSeries) -> None:
    end = history.end_seconds
    series = source.read_rate(rate_query(WEB, STEP), start=end - 10 * STEP,
                              end=end + 10 * STEP, step_seconds=STEP)
    assert not np.isnan(series.values[:10]).any()
    # Past the last sample rate() has too few samples: missing, not zero.
    assert np.isnan(series.values[11:]).all()


def test_instant_value_at_the_historical_now(source: PrometheusSource, trace: Trace,
                                             history: CounterSeries) -> None:
    now = history.end_seconds
    value = source.read_value(rate_query(WEB, STEP), at=now)
    assert value == pytest.approx(trace.rates.values[14 * 1440 - 1])
    # At wall-clock time the 1995 history is out of Prometheus' 5-minute lookback.
    with pytest.raises(NoData):
        source.read_value(rate_query(WEB, STEP), at=time.time())


def test_bad_promql_is_a_bad_query_with_prometheus_message(source: PrometheusSource,
                                                           trace: Trace) -> None:
    t0 = trace.start_seconds
    with pytest.raises(BadQuery) as caught:
        source.read_rate("sum(rate(http_requests_total[1m]", start=t0, end=t0 + 3600,
                         step_seconds=STEP)
    assert caught.value.reason == "BadQuery"
    assert "parse error" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_execution_error_is_a_bad_query(source: PrometheusSource, trace: Trace) -> None:
    # Valid syntax, but the match is many-to-many: Prometheus answers 422, not 400.
    t0 = trace.start_seconds
    with pytest.raises(BadQuery, match=r"many-to-many|duplicate series"):
        source.read_rate("http_requests_total + on() http_requests_total", start=t0,
                         end=t0 + 3600, step_seconds=STEP)


def test_two_series_are_ambiguous(source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    query = "sum by (job) (rate(http_requests_total[60s]))"
    with pytest.raises(AmbiguousQuery, match=r"sum\(") as caught:
        source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
    # The differing label's name, never its values: tenants may read each other's status.
    assert "labels: job" in str(caught.value) and '"api"' not in str(caught.value)
    with pytest.raises(AmbiguousQuery):
        source.read_value(query, at=t0 + 3600)


def test_ambiguity_is_found_across_chunks(prometheus: PrometheusServer,
                                          trace: Trace) -> None:
    # Series whose labels change over time (an unaggregated query across a relabel or a new
    # pod): here job="api" until the end of day 1, job="web" after it. With 30-point chunks
    # no single request sees both, yet the stitched result would mix them.
    t0 = trace.start_seconds
    query = ('rate(http_requests_total{job="api"}[60s]) '
             'or on() rate(http_requests_total{job="web"}[60s])')
    with (PrometheusSource(prometheus.url, max_points_per_query=30) as src,
          pytest.raises(AmbiguousQuery)):
        src.read_rate(query, start=t0 + DAY - 3600, end=t0 + DAY + 3600, step_seconds=STEP)


def test_no_data(source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    query = rate_query('http_requests_total{job="nonexistent"}', STEP)
    with pytest.raises(NoData, match="nonexistent") as caught:
        source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
    assert caught.value.reason == "NoData"
    empty = source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP,
                             allow_empty=True)
    assert len(empty) == 60 and empty.missing == 60


def test_negative_values_are_rejected(source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    with pytest.raises(BadQuery, match="negative"):
        source.read_rate(f"-{rate_query(WEB, STEP)}", start=t0, end=t0 + 3600,
                         step_seconds=STEP)


def test_nan_and_inf_samples_become_missing(source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    # Division by zero: +Inf where there was traffic, NaN (0/0) where there was none.
    query = f"{rate_query(WEB, STEP)} / 0"
    series = source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
    assert series.missing == len(series) == 60


def test_stopped_prometheus_is_unavailable_and_restart_recovers(
        prometheus: PrometheusServer, source: PrometheusSource, trace: Trace) -> None:
    t0 = trace.start_seconds
    query = rate_query(WEB, STEP)
    before = source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
    prometheus.stop()
    try:
        began = time.monotonic()
        with pytest.raises(PrometheusUnavailable, match="connection refused") as caught:
            source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
        # Fails fast: the operator's loop must not hang on a dead Prometheus.
        assert time.monotonic() - began < 3
        assert caught.value.reason == "PrometheusUnavailable"
        assert prometheus.url in str(caught.value)
    finally:
        prometheus.start()
    # Same data directory and URL; the same source object reads again.
    after = source.read_rate(query, start=t0, end=t0 + 3600, step_seconds=STEP)
    np.testing.assert_array_equal(after.values, before.values)


def test_wrong_url_path_is_unavailable(prometheus: PrometheusServer, trace: Trace) -> None:
    with (PrometheusSource(prometheus.url + "/not-prometheus") as src,
          pytest.raises(PrometheusUnavailable, match="404")):
        src.read_rate(rate_query(WEB, STEP), start=trace.start_seconds,
                      end=trace.start_seconds + 3600, step_seconds=STEP)


def test_live_counter_rate_is_what_the_test_sets() -> None:
    with (LiveCounter(labels={"job": "live"}, rate_per_second=5.0) as counter,
          running_prometheus(scrape_targets=[counter.target],
                             scrape_interval_seconds=0.5) as prom,
          PrometheusSource(prom.url) as src):
        query = rate_query('http_requests_total{job="live"}', 2.0, scrape_interval_seconds=0.5)
        prom.wait_for_query(query, until=lambda r: _near(r, 5.0), timeout_seconds=20)
        counter.set_rate(20.0)
        prom.wait_for_query(query, until=lambda r: _near(r, 20.0), timeout_seconds=20)
        # The adapter reads it too, at the "now" the caller passes in.
        assert src.read_value(query, at=time.time()) == pytest.approx(20.0, rel=0.05)
        # An exporter is not a Prometheus API: it answers 200 with metrics text.
        with (PrometheusSource(f"http://{counter.target}") as wrong,
              pytest.raises(PrometheusUnavailable, match="not with Prometheus API JSON")):
            wrong.read_value(query, at=time.time())


def test_a_sparse_rate_read_through_scrape_jitter_keeps_one_request_as_its_quantum(
        ) -> None:
    """A sparse service (~0.3 requests a minute) scraped every 15 s by a server whose
    scrapes land a few ms off their schedule (beyond its 2 ms tolerance, so the stored
    timestamps keep the jitter). ``rate(x[2m])`` divides by the span between a window's
    first and last samples, so one request reads as a different float nearly every
    minute. The calibration's quantum is still one request (the spacing of those
    clusters), not the 10⁻⁵ of one between them."""
    rng = np.random.default_rng(15)
    start = 804_571_200.0
    scrapes = 4 * 1440 + 16
    times = (start + 7.0 + 15.0 * np.arange(scrapes)
             + np.round(rng.normal(0.0, 0.004, scrapes), 3))
    values = 1000.0 + np.cumsum(rng.poisson(0.3 / 4, scrapes)).astype(np.float64)
    series = CounterSeries("http_requests_total", {"job": "sparse"}, times, values)
    with running_prometheus(series=[series]) as prom, PrometheusSource(prom.url) as src:
        rates = src.read_rate(rate_query(series.selector, 120, scrape_interval_seconds=15),
                              start=start + 180, end=start + 180 + DAY, step_seconds=STEP)
    positive = rates.values[rates.values > 0]
    one = positive[positive < 1.5 * positive.min()]
    assert one.size > 100 and np.unique(one).size > 20  # one request, as many floats
    level = day_level(rates, 5)
    assert level.median == 0.0
    assert level.quantum == pytest.approx(float(one.mean()) / 5, rel=0.01)
    assert level.epsilon == level.quantum


def _near(result: list[dict[str, object]], rate: float) -> bool:
    if len(result) != 1:
        return False
    value = result[0]["value"]
    assert isinstance(value, list)
    return abs(float(value[1]) - rate) <= 0.05 * rate


# --- pure checks of the pieces the tests above rely on --------------------------------------

def test_rate_query_shape_and_window_check() -> None:
    assert rate_query('http_requests_total{job="web"}', 120) == \
        'sum(rate(http_requests_total{job="web"}[120s]))'
    assert rate_query("x_total", 1.5) == "sum(rate(x_total[1500ms]))"
    with pytest.raises(InvalidInputError, match="two scrape intervals"):
        rate_query("x_total", 30, scrape_interval_seconds=30)
    with pytest.raises(InvalidInputError, match="already has a range"):
        rate_query("x_total[5m]", 60)


def test_errors_carry_their_reason_and_one_line() -> None:
    errors = [PrometheusUnavailable("a\nb"), BadQuery("x"), AmbiguousQuery("y"), NoData("z")]
    assert [e.reason for e in errors] == list(METRICS_REASONS)
    assert all(isinstance(e, MetricsError) for e in errors)
    assert str(errors[0]) == "a b"


def test_source_rejects_a_url_without_scheme() -> None:
    with pytest.raises(InvalidInputError, match="http"):
        PrometheusSource("localhost:9090")


def test_openmetrics_is_what_promtool_needs(tmp_path: Path) -> None:
    s = CounterSeries.from_counts([60, 0, 30], start_seconds=804_571_200, step_seconds=60,
                                  labels={"job": "web"}, scrape_interval_seconds=30)
    text = write_openmetrics(tmp_path / "h.om", [s]).read_text()
    lines = text.splitlines()
    assert lines[0] == "# TYPE http_requests counter"
    assert lines[-1] == "# EOF" and text.endswith("# EOF\n")
    assert "" not in lines
    samples = [line.split() for line in lines[1:-1]]
    assert [float(v) for _, v, _ in samples] == [0, 30, 60, 60, 60, 75, 90]
    # Seconds, not milliseconds, ascending.
    assert [float(t) for _, _, t in samples] == [804_571_200 + 30 * k for k in range(7)]
