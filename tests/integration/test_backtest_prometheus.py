"""``forescale backtest --prometheus-url``: the same answer from Prometheus as from a CSV.

A real Prometheus is backfilled with a trace's counts (30 s scrapes of minute counts, so
``rate(x[1m])`` gives back every minute's rate); the backtest read from it must score
exactly like the backtest of the same trace written as a CSV.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from forescale.cli import main
from tests.support.prometheus import CounterSeries, PrometheusServer, running_prometheus

pytestmark = pytest.mark.integration

T0 = datetime(1995, 7, 1, tzinfo=UTC)
DAYS = 4.1
QUERY = 'sum(rate(http_requests_total{job="web"}[1m]))'


def counts() -> np.ndarray:
    minutes = np.arange(round(DAYS * 1440))
    rate = 40 + 30 * np.sin(2 * np.pi * minutes / 1440)
    return np.random.default_rng(0).poisson(rate).astype(float)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[tuple[PrometheusServer, CounterSeries]]:
    history = CounterSeries.from_counts(counts(), start_seconds=T0.timestamp(),
                                        step_seconds=60, labels={"job": "web"},
                                        scrape_interval_seconds=30)
    with running_prometheus(series=[history]) as prom:
        yield prom, history


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc: dict[str, object] = json.loads(captured.out)
    return doc


def test_prometheus_history_scores_like_the_csv(
        prometheus: tuple[PrometheusServer, CounterSeries], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prom, history = prometheus
    csv = tmp_path / "t.csv"
    lines = ["timestamp,requests"] + [
        f"{T0 + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ},{int(c)}"
        for i, c in enumerate(counts())]
    csv.write_text("\n".join(lines) + "\n")
    common = ["--policy", "hpa", "--no-rescale", "--service-rate", "5", "--json",
              "--no-progress"]
    from_csv = run_json(capsys, ["backtest", "--trace", str(csv), *common])
    end = datetime.fromtimestamp(history.end_seconds, tz=UTC).isoformat()
    from_prom = run_json(capsys, ["backtest", "--prometheus-url", prom.url, "--query", QUERY,
                                  "--since", f"{round(DAYS * 1440)}m", "--until", end,
                                  *common])
    assert from_prom["parameters"] == from_csv["parameters"]
    policies_csv, policies_prom = from_csv["policies"], from_prom["policies"]
    assert isinstance(policies_csv, list) and isinstance(policies_prom, list)
    assert len(policies_prom) == len(policies_csv) == 14
    for a, b in zip(policies_csv, policies_prom, strict=True):
        assert b["cost_pod_hours"] == pytest.approx(a["cost_pod_hours"], rel=1e-9)
        assert b["violation_rate"] == pytest.approx(a["violation_rate"], abs=1e-12)


def test_prometheus_errors_are_one_line(prometheus: tuple[PrometheusServer, CounterSeries],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    prom, history = prometheus
    end = str(history.end_seconds)
    for argv, needle in [
        (["--query", "sum(rate(nothing_total[1m]))", "--since", "5d", "--until", end],
         "returned no data"),
        (["--query", "sum(rate(", "--since", "5d", "--until", end], "--prometheus-url"),
        (["--since", "5d"], "--query PROMQL"),
    ]:
        assert main(["backtest", "--prometheus-url", prom.url, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
