"""How long one LSTM forecast takes: the committed NASA model on a week of minute history.

Budget: well under 10 ms per forecast on one CPU thread (the operator forecasts once per
decision period per policy; a backtest replays tens of thousands of decisions). Measured
here with pytest-benchmark rather than asserted in the unit tests, where a shared machine
would make a timing assertion flaky:

    .venv/bin/pytest benchmarks/bench_lstm.py --benchmark-enable

With more than one torch thread on a busy machine the tail latency grows by orders of
magnitude (tiny ops gain nothing from threads, and waiting for a descheduled one costs
milliseconds), so the operator should run torch with one thread; the second benchmark shows
the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from forescale.core.forecast.lstm import LSTMForecaster
from forescale.core.series import Series
from forescale.trace import load_trace, parse_timestamp

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nasa-jul1995"
TRACE = ROOT / "traces" / "nasa_ksc_jul1995_1min.csv"
BUDGET_SECONDS = 0.010


@pytest.fixture(scope="module")
def model() -> LSTMForecaster:
    return LSTMForecaster.load(MODEL)


@pytest.fixture(scope="module")
def history() -> Series:
    # After the training range, as the operator would see it: the last 7 days.
    rates = load_trace(TRACE).rates
    return rates.until(parse_timestamp("1995-07-20T15:00:00Z")).tail(7 * 1440)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield int(request.param)
    torch.set_num_threads(before)


def test_single_forecast(benchmark: BenchmarkFixture, model: LSTMForecaster, history: Series,
                         threads: int) -> None:
    model.forecast(history, 15, 0.9)  # warm up: the first call allocates torch's buffers
    fc = benchmark(model.forecast, history, 15, 0.9)
    assert fc.horizon == 15
    if benchmark.stats is not None and threads == 1:
        assert benchmark.stats.stats.median < BUDGET_SECONDS
