"""Rolling-origin evaluation on small synthetic series with hand-checkable scores."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from forescale.core.calibration import Records
from forescale.core.errors import InvalidInputError
from forescale.core.evaluation import EvaluationResult, ModelScore, rolling_origin_evaluation
from forescale.core.forecast.base import Forecast, Forecaster
from forescale.core.forecast.chain import ForecastChain
from forescale.core.forecast.moving_average import (
    ExponentialMovingAverage,
    MovingAverageForecaster,
)
from forescale.core.series import Series
from forescale.core.spec import ForecastSettings

STEP = 60.0
DAY = 1440


def synthetic(days: int = 2, *, seed: int = 0) -> Series:
    """A daily wave around 20 req/s with noise; never zero."""
    t = np.arange(days * DAY)
    rng = np.random.default_rng(seed)
    values = 20 + 8 * np.sin(2 * np.pi * t / DAY) + rng.uniform(-2, 2, t.size)
    return Series.from_array(values, step_seconds=STEP)


class Oracle(Forecaster):
    """Knows the future: the actual values after the history, times ``1 + bias``."""

    def __init__(self, truth: Series, bias: float = 0.0) -> None:
        super().__init__()
        self.truth, self.bias = truth, bias
        self.name = "oracle"

    @property
    def min_history(self) -> int:
        return 1

    def _fit(self, history: Series) -> None:
        pass

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        i = round((history.end_seconds - self.truth.start_seconds) / self.truth.step_seconds)
        mean = self.truth.values[i:i + horizon] * (1 + self.bias)
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean, mean, mean,
                        level)


def test_a_perfect_forecaster_and_constant_biases_score_exactly() -> None:
    s = synthetic()
    models = {"perfect": Oracle(s).fit(s), "plus5": Oracle(s, 0.05).fit(s),
              "minus20": Oracle(s, -0.20).fit(s)}
    r = rolling_origin_evaluation(s, models, start=DAY * STEP, end=2 * DAY * STEP,
                                  history_seconds=3600)
    # Origins every 15 min from day 1 while 15 min of actuals follow: 96 of them.
    assert r.origins == 96
    assert r.scores["perfect"] == ModelScore(mape=0.0, within_10pct=1.0, wape=0.0)
    assert r.scores["plus5"].mape == pytest.approx(0.05)
    assert r.scores["plus5"].within_10pct == 1.0
    assert r.scores["minus20"].mape == pytest.approx(0.20)
    assert r.scores["minus20"].within_10pct == 0.0
    assert r.scores["minus20"].wape == pytest.approx(0.20)
    assert r.scores["perfect"].ms_per_forecast is None  # no clock, no timings
    assert r.chain_served == {} and r.chain_unserved == 0
    assert list(r.scores) == ["perfect", "plus5", "minus20"]


def test_origins_span_and_the_last_full_horizon() -> None:
    s = synthetic(1)
    m = {"perfect": Oracle(s).fit(s)}
    # [2h, 4h], every 30 min, horizon 30 min: origins at 2:00, 2:30, 3:00 and 3:30 (a 4:00
    # origin's horizon would end after ``end``).
    r = rolling_origin_evaluation(s, m, start=7200, end=14400, horizon_seconds=1800,
                                  every_seconds=1800, block_seconds=600, history_seconds=600)
    assert r.origins == 4
    # The series ends: origins without a full horizon of actuals are not scored.
    r = rolling_origin_evaluation(s, m, start=DAY * STEP - 3600, end=DAY * STEP + 86400,
                                  history_seconds=600)
    assert r.origins == 4


def test_block_means_are_scored_not_single_samples() -> None:
    # Actuals alternate 10, 30 (block mean 20); a forecaster of a flat 20 is exact on
    # 2-minute blocks and 50 % off on every single minute.
    s = Series.from_array(np.tile([10.0, 30.0], 600), step_seconds=STEP)

    class Flat(Oracle):
        def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
            mean = np.full(horizon, 20.0)
            return Forecast("flat", history.end_seconds, STEP, mean, mean, mean, level)

    flat = {"flat": Flat(s).fit(s)}
    blocks = rolling_origin_evaluation(s, flat, start=3600, end=7200, horizon_seconds=600,
                                       every_seconds=600, block_seconds=120,
                                       history_seconds=600)
    minutes = rolling_origin_evaluation(s, flat, start=3600, end=7200, horizon_seconds=600,
                                        every_seconds=600, block_seconds=60,
                                        history_seconds=600)
    assert blocks.scores["flat"].mape == 0.0
    # |20-10|/10 = 1 and |20-30|/30 = 1/3 alternate: mean 2/3.
    assert minutes.scores["flat"].mape == pytest.approx(2 / 3)


def test_an_injected_clock_times_each_forecast() -> None:
    s = synthetic(1)
    ticks = iter(np.arange(0, 1000, 0.25))  # every call advances 0.25 s
    r = rolling_origin_evaluation(s, {"perfect": Oracle(s).fit(s)}, start=3600, end=7200,
                                  history_seconds=600, clock=lambda: float(next(ticks)))
    assert r.scores["perfect"].ms_per_forecast == pytest.approx(250.0)


def test_history_is_the_last_history_seconds_before_each_origin() -> None:
    s = synthetic(1)
    seen: list[tuple[float, int]] = []

    class Spy(Oracle):
        def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
            seen.append((history.end_seconds, len(history)))
            return super()._forecast(history, horizon, level)

    done: list[tuple[int, int]] = []
    rolling_origin_evaluation(s, {"spy": Spy(s).fit(s)}, start=7200, end=9000,
                              history_seconds=1800, progress=lambda i, n: done.append((i, n)))
    assert seen == [(7200.0, 30), (8100.0, 30)]  # no look-ahead, 30 minutes of history
    assert done == [(1, 2), (2, 2)]


def test_the_chains_track_records_are_scored_as_the_plans_are(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the intensity over the policy's intensitySeconds (5 steps of 60 s), as plan()
    scores them: the accuracy benchmark's relative gate was fed raw steps."""
    from forescale.core import evaluation

    seen: list[int] = []
    original = evaluation.Records.score

    def score(self: Records, history: Series, **kwargs: Any) -> None:
        seen.append(kwargs["intensity_steps"])
        original(self, history, **kwargs)

    monkeypatch.setattr(evaluation.Records, "score", score)
    s = synthetic()
    ma = ExponentialMovingAverage().fit(s.head(DAY))
    chain = ForecastChain(ForecastSettings(models=("ma",), intensity_seconds=300.0))
    rolling_origin_evaluation(s, {"ma": ma}, chain=chain, start=DAY * STEP,
                              end=DAY * STEP + 3600, history_seconds=3 * 3600)
    assert seen and set(seen) == {5}


def test_the_chain_is_scored_and_counted() -> None:
    s = synthetic()
    ma = ExponentialMovingAverage().fit(s.head(DAY))
    kwargs = {"start": DAY * STEP, "end": DAY * STEP + 6 * 3600, "history_seconds": 3 * 3600}
    serving = ForecastChain(ForecastSettings(models=("ma",), max_error=10.0))
    r = rolling_origin_evaluation(s, {"ma": ma}, chain=serving, **kwargs)
    assert r.origins == 24
    assert r.chain_served == {"ma": 24} and r.chain_unserved == 0
    # The chain's stage is the same moving average: the same scores.
    assert r.scores["chain"] == r.scores["ma"]

    # A gate nothing passes: the least inaccurate stage serves anyway (ServedAboveMaxError).
    gated = ForecastChain(ForecastSettings(models=("ma",), max_error=1e-9))
    r = rolling_origin_evaluation(s, {"ma": ma}, chain=gated, **kwargs)
    assert r.chain_served == {"ma": 24} and r.chain_unserved == 0
    assert r.scores["chain"] == r.scores["ma"]

    # A stage that cannot run at all (a flat window longer than the history): every origin
    # is scored with the last stage's ungated forecast.
    failing = ForecastChain(ForecastSettings(models=("ma",), moving_average_rule="flat",
                                             moving_average_window=1000))
    r = rolling_origin_evaluation(s, {"ma": ma}, chain=failing, **kwargs)
    assert r.chain_served == {"none (AllForecastersFailed)": 24}
    assert r.chain_unserved == 24
    assert r.scores["chain"] == r.scores["ma"]

    with pytest.raises(InvalidInputError, match="chain's last stage 'ma'"):
        rolling_origin_evaluation(s, {"perfect": Oracle(s).fit(s)}, chain=failing, **kwargs)


def test_rejects_bad_inputs() -> None:
    s = synthetic(1)
    m = {"perfect": Oracle(s).fit(s)}
    with pytest.raises(InvalidInputError, match="no forecast origin"):
        rolling_origin_evaluation(s, m, start=3600, end=3600 + 600)
    with pytest.raises(InvalidInputError, match="horizon_seconds"):
        rolling_origin_evaluation(s, m, start=0, end=3600, horizon_seconds=0)
    with pytest.raises(InvalidInputError, match="shorter than the series"):
        rolling_origin_evaluation(s, m, start=0, end=3600, horizon_seconds=20)
    gappy = Series.from_array([1.0, math.nan, 1.0], step_seconds=STEP)
    with pytest.raises(InvalidInputError, match="missing"):
        rolling_origin_evaluation(gappy, m, start=0, end=3600)


def test_markdown_and_dict() -> None:
    s = synthetic()
    models = {"seasonal_naive": Oracle(s, 0.10).fit(s), "lstm": Oracle(s, 0.05).fit(s)}
    ticks = iter(np.arange(0, 1000, 0.001))
    r = rolling_origin_evaluation(s, models, start=DAY * STEP, end=DAY * STEP + 3600,
                                  history_seconds=600, clock=lambda: float(next(ticks)))
    table = r.to_markdown()
    assert table.splitlines()[0] == ("| model | MAPE | WAPE | within 10 % | MAPE / seasonal naive "
                                     "| ms per forecast |")
    assert "| lstm | 5.0% | 5.0% | 100.0% | 0.50 | 1.00 |" in table
    assert r._repr_markdown_() == table
    assert "MAPE /" not in r.to_markdown(baseline="arima")  # not scored: no column
    d = json.loads(json.dumps(r.to_dict()))
    assert d["origins"] == 4
    assert d["scores"]["lstm"]["mape"] == pytest.approx(0.05)
    assert d["scores"]["lstm"]["mean_forecast_ms"] == pytest.approx(1.0)
    assert set(d) >= {"chain_served", "chain_unserved", "horizon_seconds"}
    assert r.relative_mape()["lstm"] == pytest.approx(0.5)
    untimed = EvaluationResult(start=0, end=1, horizon_seconds=1, every_seconds=1,
                               block_seconds=1, history_seconds=1, origins=1,
                               scores={"x": ModelScore(0.1, 0.5)})
    assert untimed.to_markdown().splitlines()[0] == "| model | MAPE | WAPE | within 10 % |"


def test_a_block_longer_than_the_horizon_is_refused() -> None:
    """Every block was empty, and the models were scored a perfect WAPE of 0."""
    series = Series.from_array(np.random.default_rng(0).poisson(600, 2000) / 60.0,
                               start_seconds=0.0)
    ma = MovingAverageForecaster(15).fit(series.head(100))
    with pytest.raises(InvalidInputError, match="longer than the horizon"):
        rolling_origin_evaluation(series, {"ma": ma}, start=60_000, end=110_000,
                                  horizon_seconds=900, block_seconds=3600,
                                  history_seconds=86_400)


@pytest.mark.parametrize("start", [math.nan, math.inf])
def test_a_non_finite_start_is_refused(start: float) -> None:
    series = Series.from_array(np.full(2000, 10.0), start_seconds=0.0)
    ma = MovingAverageForecaster(15).fit(series.head(100))
    with pytest.raises(InvalidInputError, match="finite times"):
        rolling_origin_evaluation(series, {"ma": ma}, start=start, end=110_000)
