"""ForecastChain: one test per fallback cause, plus refit scheduling and the result's shape.

Fakes stand in for models through the registry (``monkeypatch.setitem``) or the chain's
``lstm`` argument; the real LSTM is used where the artifact itself is the point.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from forescale.core.calibration import Histogram, Records, Scored
from forescale.core.errors import ArtifactError
from forescale.core.forecast import registry
from forescale.core.forecast.arima import ArimaForecaster
from forescale.core.forecast.base import Forecast, Forecaster
from forescale.core.forecast.chain import ChainResult, ForecastChain
from forescale.core.series import FloatArray, Series
from forescale.core.spec import ForecastSettings, ModelName

#: The ``make_seasonal`` fixture (tests/conftest.py).
SeasonalFactory = Callable[..., Series]

HORIZON = 6
NOW = 1_800_000_000.0

Behaviour = Callable[[Series, int], tuple[FloatArray, FloatArray, FloatArray]]


def _level(history: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A decent forecast: the mean of the last hour, ±20 %."""
    mean = np.full(horizon, float(history.values[-12:].mean()))
    return mean, 0.8 * mean, 1.2 * mean


class Fake(Forecaster):
    """A forecaster whose output (or failure) a test chooses."""

    def __init__(self, behaviour: Behaviour = _level, *, name: str = "fake",
                 min_history: int = 1, on_forecast: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.name = name
        self._behaviour = behaviour
        self._min_history = min_history
        self._on_forecast = on_forecast
        self.forecasts = 0

    @property
    def min_history(self) -> int:
        return self._min_history

    def _fit(self, history: Series) -> None:
        return None

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        self.forecasts += 1
        if self._on_forecast is not None:
            self._on_forecast()
        mean, lower, upper = self._behaviour(history, horizon)
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean, lower,
                        upper, level)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _raise(history: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    raise np.linalg.LinAlgError("Schur decomposition solver error.\nsecond line")


def _constant(value: float) -> Behaviour:
    def behaviour(history: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        mean = np.full(horizon, value)
        return mean, mean - 1.0, mean + 1.0
    return behaviour


@pytest.fixture
def history(make_seasonal: SeasonalFactory) -> Series:
    return make_seasonal(days=1.0)


def _settings(*models: ModelName, **changes: object) -> ForecastSettings:
    return ForecastSettings(models=models, **changes)  # type: ignore[arg-type]


def _use(monkeypatch: pytest.MonkeyPatch, name: ModelName, model: Forecaster) -> None:
    monkeypatch.setitem(registry.FACTORIES, name, lambda settings: model)


def _reasons(result: ChainResult) -> list[tuple[str, str]]:
    return [(s.model, s.reason) for s in result.stages]


def _assert_fell_back(result: ChainResult, model: str, reason: str) -> None:
    assert result.reason == "Forecasted"
    assert result.served_by == "ma"
    assert result.forecast is not None and result.forecast.model == "ma"
    assert (model, reason) in _reasons(result)
    assert f"{model}: {reason}" in result.message


# -- one test per fallback cause -------------------------------------------------------


def test_artifact_missing_without_a_path(history: Series) -> None:
    result = ForecastChain(_settings("lstm", "ma")).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "lstm", "ArtifactMissing")


def test_artifact_missing_at_the_path(history: Series, tmp_path: Path) -> None:
    settings = _settings("lstm", "ma", lstm_model=str(tmp_path / "nowhere"))
    result = ForecastChain(settings).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "lstm", "ArtifactMissing")
    assert "nowhere" in result.stages[0].message


def test_artifact_corrupt(history: Series, tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text("{not json")
    (tmp_path / "weights.pt").write_bytes(b"\x00garbage")
    settings = _settings("lstm", "ma", lstm_model=str(tmp_path))
    result = ForecastChain(settings).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "lstm", "ArtifactCorrupt")


@pytest.fixture(scope="module")
def lstm_artifact(tmp_path_factory: pytest.TempPathFactory,
                  make_seasonal: SeasonalFactory) -> Path:
    """A small LSTM trained for 2 epochs at a 5-minute step, saved as an artifact."""
    from forescale.core.forecast.lstm import train_lstm

    path = tmp_path_factory.mktemp("lstm")
    train_lstm(make_seasonal(), epochs=2, seed=0, hidden_size=16).save(path)
    return path


def test_artifact_mismatch_step(lstm_artifact: Path, make_seasonal: SeasonalFactory) -> None:
    minute_steps = make_seasonal(days=1.0, step_seconds=60.0)
    settings = _settings("lstm", "ma", lstm_model=str(lstm_artifact))
    result = ForecastChain(settings).forecast(minute_steps, HORIZON, now=NOW)
    _assert_fell_back(result, "lstm", "ArtifactMismatch")
    assert "300s" in result.stages[0].message


def test_artifact_mismatch_horizon(lstm_artifact: Path, history: Series) -> None:
    settings = _settings("lstm", "ma", lstm_model=str(lstm_artifact))
    result = ForecastChain(settings).forecast(history, 16, now=NOW)  # trained for 15
    _assert_fell_back(result, "lstm", "ArtifactMismatch")


def test_a_look_ahead_is_shortened_to_the_lstms_horizon(lstm_artifact: Path,
                                                        history: Series) -> None:
    """The plan asks for 18 steps of which it needs 12 (the rest is a scale-up's
    look-ahead): every stage forecasts the LSTM's 15 and the LSTM serves. Needing 16 it
    cannot, and hands over as before."""
    settings = _settings("lstm", "ma", lstm_model=str(lstm_artifact))
    result = ForecastChain(settings).forecast(history, 18, now=NOW, least=12,
                                              track_due=True)
    assert result.served_by == "lstm" and result.forecast is not None
    assert result.forecast.horizon == 15
    assert {run.model: run.forecast.horizon for run in result.runs} == {"lstm": 15, "ma": 15}
    short = ForecastChain(settings).forecast(history, 18, now=NOW, least=16)
    _assert_fell_back(short, "lstm", "ArtifactMismatch")
    assert short.forecast is not None and short.forecast.horizon == 18
    plain = ForecastChain(_settings("ma")).forecast(history, 18, now=NOW, least=12)
    assert plain.forecast is not None and plain.forecast.horizon == 18


@pytest.fixture
def lstm_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of every LSTM artifact loaded while the test runs."""
    from forescale.core.forecast.lstm import LSTMForecaster

    loads: list[str] = []
    original = LSTMForecaster.load.__func__  # type: ignore[attr-defined]

    def counting_load(cls: type[LSTMForecaster], path: str) -> LSTMForecaster:
        loads.append(path)
        loaded: LSTMForecaster = original(cls, path)
        return loaded

    monkeypatch.setattr(LSTMForecaster, "load", classmethod(counting_load))
    return loads


def test_lstm_artifact_loaded_once_and_served(lstm_artifact: Path, history: Series,
                                              lstm_loads: list[str]) -> None:
    # A generous error limit: a 2-epoch net is not accurate, the plumbing is the point.
    chain = ForecastChain(_settings("lstm", "ma", lstm_model=str(lstm_artifact),
                                    max_error=10.0))
    for k in range(2):
        result = chain.forecast(history.head(len(history) - k), HORIZON, now=NOW + 60 * k)
        assert result.served_by == "lstm", result.message
        assert _reasons(result) == [("lstm", "Served"), ("ma", "NotTried")]
        assert result.stages[0].recent_error is not None
    assert lstm_loads == [str(lstm_artifact)]


def test_the_artifact_is_looked_at_once_per_forecast(lstm_artifact: Path, history: Series,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The look-ahead's horizon check, the stage and a shadow run share one look."""
    looks: list[object] = []
    original = registry.artifact_fingerprint

    def counting(settings: ForecastSettings) -> object:
        looks.append(settings.lstm_model)
        return original(settings)

    monkeypatch.setattr(registry, "artifact_fingerprint", counting)
    chain = ForecastChain(_settings("ma", "lstm", lstm_model=str(lstm_artifact),
                                    max_error=10.0))
    for k in range(3):
        chain.forecast(history.head(len(history) - k), 18, now=NOW + 60 * k, least=12,
                       track_due=True)
    assert looks == [str(lstm_artifact)] * 3


def test_an_artifact_is_loaded_again_when_its_files_change(
        lstm_artifact: Path, history: Series, tmp_path: Path, lstm_loads: list[str]) -> None:
    """A retrained (here: damaged, then repaired) artifact takes effect at the next
    decision, and one that cannot be loaded is read once, not at every decision."""
    artifact = tmp_path / "model"
    shutil.copytree(lstm_artifact, artifact)
    good = (artifact / "weights.pt").read_bytes()
    chain = ForecastChain(_settings("lstm", "ma", lstm_model=str(artifact), max_error=10.0))

    def decide(k: int) -> ChainResult:
        return chain.forecast(history.head(len(history) - k), HORIZON, now=NOW + 60 * k)

    assert decide(0).served_by == "lstm"
    # Replaced in place: same inode, another size.
    (artifact / "weights.pt").write_bytes(b"\x00not a state dict")
    for k in (1, 2, 3):
        _assert_fell_back(decide(k), "lstm", "ArtifactCorrupt")
    assert len(lstm_loads) == 2
    # Replaced as a ConfigMap update does it: a new file renamed over the old one.
    (artifact / ".weights.pt.new").write_bytes(good)
    os.replace(artifact / ".weights.pt.new", artifact / "weights.pt")
    again = decide(4)
    assert again.served_by == "lstm"
    assert "loaded again: its files changed" in again.stages[0].message
    assert again.reloaded == str(artifact)
    later = decide(5)
    assert later.served_by == "lstm"
    assert "loaded again" not in later.stages[0].message and later.reloaded is None
    assert lstm_loads == [str(artifact)] * 3


def test_a_reloaded_lstm_is_judged_on_its_own_record(lstm_artifact: Path, history: Series,
                                                     tmp_path: Path) -> None:
    """A retrained artifact is not handed over for its predecessor's errors: at the
    decision it is loaded again the chain gates it without the stage's old track record
    (the plan forgets that record too), and leaves the caller's records as they were."""
    artifact = tmp_path / "model"
    shutil.copytree(lstm_artifact, artifact)
    chain = ForecastChain(_settings("lstm", "ma", lstm_model=str(artifact), max_error=10.0))
    records = _records_with({"lstm": 0.8, "ma": 0.05})
    before = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(before)[0] == ("lstm", "WorseThanFallback")
    weights = artifact / "weights.pt"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # retrained
    after = chain.forecast(history, HORIZON, now=NOW + 60, records=records)
    assert after.reloaded == str(artifact)
    assert _reasons(after) == [("lstm", "Served"), ("ma", "NotTried")], after.message
    assert records.recent_error("lstm")[1] == 12  # the caller's, untouched
    # Without a reload the old record still counts (the plan has not forgotten it here).
    assert _reasons(chain.forecast(history, HORIZON, now=NOW + 120,
                                   records=records))[0] == ("lstm", "WorseThanFallback")


def test_the_records_know_the_artifact_by_its_contents(lstm_artifact: Path, history: Series,
                                                       tmp_path: Path) -> None:
    """The digest of the artifact a record was kept for is in the records: after a restart
    (a fresh chain) another artifact starts its own record, where only a chain that had
    seen the old files knew to; and identical files synced again (new inodes, a ConfigMap
    update) are the same model, whose record stands."""
    artifact = tmp_path / "model"
    shutil.copytree(lstm_artifact, artifact)
    settings = _settings("lstm", "ma", lstm_model=str(artifact), max_error=10.0)
    records = _records_with({"lstm": 0.8, "ma": 0.05})
    first = ForecastChain(settings).forecast(history, HORIZON, now=NOW, records=records)
    assert first.lstm_digest is not None and not first.forget_lstm
    records.artifacts["lstm"] = first.lstm_digest  # as the plan stores it
    # Synced again, byte for byte: loaded again, the same model, its record stands.
    kept = ForecastChain(settings)
    kept.forecast(history, HORIZON, now=NOW, records=records)
    for name in ("metadata.json", "weights.pt"):
        (artifact / f".{name}.new").write_bytes((artifact / name).read_bytes())
        os.replace(artifact / f".{name}.new", artifact / name)
    same = kept.forecast(history, HORIZON, now=NOW + 60, records=records)
    assert same.reloaded == str(artifact) and not same.forget_lstm
    assert _reasons(same)[0] == ("lstm", "WorseThanFallback")
    # Another artifact, found by a restarted operator: judged on its own record.
    meta = json.loads((artifact / "metadata.json").read_text())
    (artifact / "metadata.json").write_text(json.dumps(meta, indent=4))
    restarted = ForecastChain(settings).forecast(history, HORIZON, now=NOW + 120,
                                                 records=records)
    assert restarted.reloaded is None and restarted.forget_lstm
    assert restarted.lstm_digest not in (None, first.lstm_digest)
    assert _reasons(restarted) == [("lstm", "Served"), ("ma", "NotTried")]


def test_history_too_short(history: Series) -> None:
    short = history.head(40)  # ARIMA needs 60
    result = ForecastChain(_settings("arima", "ma")).forecast(short, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "HistoryTooShort")
    assert "60" in result.stages[0].message


def test_raising_model(history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, "arima", Fake(_raise))
    result = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "ModelError")
    message = result.stages[0].message
    assert message.startswith("LinAlgError: Schur")
    assert "\n" not in message


def test_budget_overrun_with_a_fake_clock(history: Series,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()

    def slow() -> None:
        clock.now += 3.0  # each forecast "takes" 3 s; the budget is 5 s

    _use(monkeypatch, "arima", Fake(on_forecast=slow))
    settings = _settings("arima", "ma", stage_budget_seconds=5.0)
    result = ForecastChain(settings, clock=clock).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "BudgetExceeded")
    assert "budget 5s" in result.stages[0].message


def test_one_slow_forecast_is_caught_before_the_accuracy_check(
        history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    slow = Fake(on_forecast=lambda: setattr(clock, "now", clock.now + 6.0))
    _use(monkeypatch, "arima", slow)
    result = ForecastChain(_settings("arima", "ma"), clock=clock).forecast(
        history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "BudgetExceeded")
    assert slow.forecasts == 1


def test_budget_not_enforced_without_a_clock(history: Series,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    _use(monkeypatch, "arima", Fake(on_forecast=lambda: setattr(clock, "now", 1e9)))
    result = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW)
    assert result.served_by == "arima"


def test_non_finite_output(history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_upper(h: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        mean, lower, upper = _level(h, horizon)
        upper[-1] = np.inf
        return mean, lower, upper

    _use(monkeypatch, "arima", Fake(nan_upper))
    result = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "NonFiniteForecast")


def test_negative_output(history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, "arima", Fake(_constant(-0.5)))
    result = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "NegativeForecast")
    assert "-0.5" in result.stages[0].message


def test_an_implausible_forecast_hands_over_whatever_the_record(
        history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage with twelve good scored forecasts that now forecasts 50 times the level:
    its record said it was fine, and it served 5 -> 80 replicas. The forecast in hand is
    checked against the history at every decision; three times the history's highest
    rate still serves (a forecast may rise above anything seen, within reason)."""
    level = float(np.nanmax(history.values))
    _use(monkeypatch, "arima", Fake(_constant(50.0 * level), name="arima"))
    records = _records_with({"arima": 0.01, "ma": 0.05})
    chain = ForecastChain(_settings("arima", "ma"))
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    _assert_fell_back(result, "arima", "ImplausibleForecast")
    assert f"the highest rate in the history ({level:.3g} req/s)" in result.stages[0].message
    _use(monkeypatch, "arima", Fake(_constant(2.9 * level), name="arima"))
    kept = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW,
                                                            records=records)
    assert kept.served_by == "arima"


@pytest.mark.parametrize("steps", [0, 1, HORIZON + 1])
def test_a_forecast_of_other_steps_than_asked_hands_over(
        history: Series, monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """A model that breaks the contract: zero steps crashed the decision (a minimum of an
    empty array), one step served and the plan sized from it for the whole window."""
    def wrong(h: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        return _level(h, steps)

    _use(monkeypatch, "arima", Fake(wrong, name="arima"))
    records = _records_with({"arima": 0.01, "ma": 0.05})
    result = ForecastChain(_settings("arima", "ma")).forecast(history, HORIZON, now=NOW,
                                                              records=records)
    _assert_fell_back(result, "arima", "ModelError")
    assert f"where {HORIZON} were asked for" in result.stages[0].message


def test_accuracy_above_the_limit(history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    level = float(history.values.mean())
    _use(monkeypatch, "arima", Fake(_constant(3.0 * level)))  # ~200 % off
    settings = _settings("arima", "ma", max_error=0.5)
    result = ForecastChain(settings).forecast(history, HORIZON, now=NOW)
    _assert_fell_back(result, "arima", "AccuracyTooLow")
    stage = result.stages[0]
    assert stage.recent_error is not None and stage.recent_error > 0.5
    served = result.stages[1]
    assert served.recent_error is not None and served.recent_error <= 0.5


def test_when_every_stage_is_above_the_limit_the_least_inaccurate_serves(
        history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse service's errors are mostly counting noise: every stage above maxError.
    Rather than nothing (the plan would size for the last minute's count with no margin),
    the stage with the lowest recent error serves, and says why."""
    level = float(history.values.mean())
    _use(monkeypatch, "arima", Fake(_constant(3.0 * level)))  # ~200 % off
    settings = _settings("arima", "ma", max_error=1e-6)
    result = ForecastChain(settings).forecast(history, HORIZON, now=NOW)
    assert result.reason == "Forecasted" and result.served_by == "ma"
    assert _reasons(result) == [("arima", "AccuracyTooLow"), ("ma", "ServedAboveMaxError")]
    arima, ma = result.stages
    assert ma.served and ma.recent_error is not None and arima.recent_error is not None
    assert 1e-6 < ma.recent_error < arima.recent_error
    assert "least inaccurate" in ma.message
    assert [(r.model, r.served) for r in result.runs] == [("arima", False), ("ma", True)]


def test_no_data() -> None:
    chain = ForecastChain(ForecastSettings())
    for history in (Series.from_array([]), Series.from_array([np.nan] * 30)):
        result = chain.forecast(history, HORIZON, now=NOW)
        assert (result.reason, result.forecast, result.served_by) == ("NoData", None, None)
        assert [s.reason for s in result.stages] == ["NotTried"] * 3


def test_all_forecasters_failed(history: Series) -> None:
    settings = _settings("lstm", "arima", "ma", moving_average_rule="flat",
                         moving_average_window=100)
    result = ForecastChain(settings).forecast(history.head(50), HORIZON, now=NOW)
    assert result.reason == "AllForecastersFailed"
    assert result.forecast is None and result.served_by is None
    assert _reasons(result) == [("lstm", "ArtifactMissing"), ("arima", "HistoryTooShort"),
                                ("ma", "HistoryTooShort")]


# -- the rest of the semantics ----------------------------------------------------------


def test_real_chain_on_three_days_of_nasa(nasa_3days: Series) -> None:
    result = ForecastChain(ForecastSettings()).forecast(nasa_3days, 15, now=NOW)
    assert _reasons(result) == [("lstm", "ArtifactMissing"), ("arima", "Served"),
                                ("ma", "NotTried")]
    arima = result.stages[1]
    assert arima.recent_error is not None and arima.recent_error < 0.5
    assert result.forecast is not None
    # Around 40 requests a minute at that hour: well inside 0-3 req/s.
    assert 0.0 < result.forecast.mean.min() <= result.forecast.mean.max() < 3.0


def test_stages_after_the_served_one_are_not_tried(history: Series) -> None:
    result = ForecastChain(_settings("ma", "arima")).forecast(history, HORIZON, now=NOW)
    assert _reasons(result) == [("ma", "Served"), ("arima", "NotTried")]
    assert result.message == "forecast by ma"


def test_too_short_to_check_serves_unchecked(history: Series) -> None:
    # The flat moving average (window 15) needs 16 samples; one check origin would need 22.
    result = ForecastChain(_settings("ma", moving_average_rule="flat")).forecast(
        history.head(20), HORIZON, now=NOW)
    assert result.served_by == "ma"
    assert result.stages[0].recent_error is None
    assert "not checked" in result.stages[0].message


def test_missing_samples_are_interpolated_and_noted(history: Series) -> None:
    values = history.values.copy()
    values[[100, 101, 102, 200]] = np.nan
    gappy = Series(history.start_seconds, history.step_seconds, values)
    result = ForecastChain(_settings("ma")).forecast(gappy, HORIZON, now=NOW)
    assert result.served_by == "ma"
    assert "interpolated 4 missing of 288 samples (longest gap 3)" in result.message


def test_served_interval_is_clipped_to_non_negative(history: Series,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def dips(h: Series, horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        mean, _, upper = _level(h, horizon)
        return mean, mean - 1e3, upper

    _use(monkeypatch, "arima", Fake(dips))
    result = ForecastChain(_settings("arima")).forecast(history, HORIZON, now=NOW)
    assert result.forecast is not None
    assert (result.forecast.lower == 0.0).all()


def test_deterministic_and_json_ready(history: Series) -> None:
    settings = _settings("lstm", "arima", "ma")
    first = ForecastChain(settings).forecast(history, HORIZON, now=NOW).to_dict()
    second = ForecastChain(settings).forecast(history, HORIZON, now=NOW).to_dict()
    assert first == second
    document = json.loads(json.dumps(first, allow_nan=False))
    assert document["reason"] == "Forecasted"
    assert document["served_by"] == "arima"
    assert [s["reason"] for s in document["stages"]] == ["ArtifactMissing", "Served",
                                                         "NotTried"]
    assert set(document["stages"][0]) == {"model", "served", "reason", "message",
                                          "recent_error"}
    assert len(document["forecast"]["mean"]) == HORIZON


def test_preloaded_lstm_is_used_and_checked(history: Series) -> None:
    mismatch = ArtifactError("trained at 60s", reason="ArtifactMismatch")

    class Incompatible(Fake):
        def check_compatible(self, history: Series, horizon: int) -> None:
            raise mismatch

    fake = Incompatible(name="lstm")
    fake.fit(history)
    result = ForecastChain(_settings("lstm", "ma"), lstm=fake).forecast(
        history, HORIZON, now=NOW)
    _assert_fell_back(result, "lstm", "ArtifactMismatch")
    good = Fake(name="lstm").fit(history)
    served = ForecastChain(_settings("lstm", "ma"), lstm=good).forecast(
        history, HORIZON, now=NOW)
    assert served.served_by == "lstm"


# -- ARIMA refits on schedule and updates in between -----------------------------------



def test_arima_updates_between_refits_and_refits_on_schedule(
        arima_fit_calls: list[int], make_seasonal: SeasonalFactory) -> None:
    series = make_seasonal(days=2.5)
    n, step = len(series), series.step_seconds
    chain = ForecastChain(_settings("arima", arima_refit_seconds=3600.0))

    def at(k: int) -> ChainResult:
        # k samples after the first call, with the clock moving in step with the data.
        result = chain.forecast(series.head(n - 20 + k), HORIZON, now=NOW + k * step)
        assert result.served_by == "arima", result.message
        return result

    assert "refitted (first fit)" in at(0).stages[0].message
    for k in (1, 2, 11):  # 55 minutes later: still within the hour
        assert "no refit" in at(k).stages[0].message
    assert len(arima_fit_calls) == 1
    assert "refitted (last fit 3600s ago)" in at(12).stages[0].message
    assert len(arima_fit_calls) == 2
    assert "no refit" in at(13).stages[0].message
    assert len(arima_fit_calls) == 2


def test_arima_refits_when_history_does_not_continue(arima_fit_calls: list[int],
                                                     make_seasonal: SeasonalFactory) -> None:
    series = make_seasonal(days=2.5)
    chain = ForecastChain(_settings("arima"))
    chain.forecast(series.head(len(series) - 10), HORIZON, now=NOW)
    restarted = make_seasonal(days=2.5, seed=99)  # same times, other samples
    result = chain.forecast(restarted, HORIZON, now=NOW + 60)
    assert "history does not continue" in result.stages[0].message
    assert len(arima_fit_calls) == 2


def test_failed_refit_is_retried(history: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def failing(self: ArimaForecaster, h: Series) -> None:
        attempts.append(len(h))
        raise ValueError("optimizer blew up")

    monkeypatch.setattr(ArimaForecaster, "_fit", failing)
    chain = ForecastChain(_settings("arima", "ma"))
    for k in range(2):
        result = chain.forecast(history, HORIZON, now=NOW + k)
        _assert_fell_back(result, "arima", "ModelError")
    assert len(attempts) == 2


# --- track records: the relative gate and shadow runs ------------------------------------


def _records_with(errors: dict[str, float], n: int = 12) -> Records:
    """Track records where each stage forecast ``actual * (1 + error)`` at ``n`` origins."""
    records = Records()
    for name, error in errors.items():
        records.tracks[name] = [Scored(NOW - 300.0 * k, 100.0 * (1 + error), 100.0)
                                for k in range(n, 0, -1)]
    return records


def test_a_stage_clearly_worse_than_the_next_healthy_one_hands_over(
        monkeypatch: pytest.MonkeyPatch, history: Series) -> None:
    _use(monkeypatch, "arima", Fake(name="arima"))  # fitted by the chain
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _records_with({"lstm": 0.30, "arima": 0.10, "ma": 0.20})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(result) == [("lstm", "WorseThanFallback"), ("arima", "Served"),
                                ("ma", "NotTried")]
    assert "0.3 is more than 10% above arima's 0.1" in result.stages[0].message
    # Both ran: the one that handed over is still recorded, so it can come back.
    assert [(r.model, r.served) for r in result.runs] == [("lstm", False), ("arima", True)]


def test_a_stage_hands_over_only_to_a_stage_that_can_serve_now(
        monkeypatch: pytest.MonkeyPatch, history: Series) -> None:
    """ARIMA's record is the best, but ARIMA fails now (a negative forecast): the LSTM,
    worse than ARIMA's record and better than the moving average's, serves, rather than
    the moving average; ARIMA's failure is reported, and its run was made only once."""
    arima = Fake(_constant(-5.0), name="arima")
    _use(monkeypatch, "arima", arima)
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _records_with({"lstm": 0.10, "arima": 0.05, "ma": 0.30})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert result.served_by == "lstm", result.message
    assert _reasons(result) == [("lstm", "Served"), ("arima", "NegativeForecast"),
                                ("ma", "NotTried")]
    assert "run as a fallback" in result.stages[1].message
    assert result.message == "forecast by lstm"  # nothing before it was skipped
    assert arima.forecasts == 1
    # ARIMA healthy again: the LSTM hands over to it, which serves from the same run.
    healthy = Fake(name="arima")
    _use(monkeypatch, "arima", healthy)
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    again = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(again)[:2] == [("lstm", "WorseThanFallback"), ("arima", "Served")]
    assert healthy.forecasts == 1


def test_within_the_margin_the_earlier_stage_keeps_serving(history: Series) -> None:
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _records_with({"lstm": 0.105, "arima": 0.10})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert result.served_by == "lstm"
    assert "over its last 12 scored forecasts" in result.stages[0].message


def _with_widths(records: Records, spreads: dict[str, float], steps: int = 3) -> Records:
    """Give each stage scored steps whose log errors are spread ``spread`` above the median
    (a quarter of them): a bound width of about ``spread``."""
    for name, spread in spreads.items():
        for h in range(steps):
            hist = records.histograms.setdefault(f"{name}|{h}", Histogram())
            for k in range(200):
                hist.add(spread * (k % 4 == 0))
    return records


def test_a_stage_whose_bound_is_clearly_wider_hands_over_at_the_same_wape(
        history: Series) -> None:
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    # The same WAPE: the centre of the errors alike; lstm's upper tail twice as far out.
    records = _with_widths(_records_with({"lstm": 0.10, "arima": 0.10}),
                           {"lstm": 0.6, "arima": 0.3})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(result)[:2] == [("lstm", "WorseThanFallback"), ("arima", "Served")]
    assert "calibrated bound reaches x1.83 its median error, more than 10% above " \
        "arima's x1.32" in result.stages[0].message
    # Within the margin, or with too few scores to measure a width, lstm keeps serving.
    close = _with_widths(_records_with({"lstm": 0.10, "arima": 0.10}),
                         {"lstm": 0.33, "arima": 0.3})
    assert chain.forecast(history, HORIZON, now=NOW, records=close).served_by == "lstm"
    young = _records_with({"lstm": 0.10, "arima": 0.10})
    young.histograms = {f"{k}|0": Histogram({100: 5.0}) for k in ("lstm", "arima")}
    assert chain.forecast(history, HORIZON, now=NOW, records=young).served_by == "lstm"


def test_the_larger_of_the_two_ratios_is_the_reason(history: Series) -> None:
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _with_widths(_records_with({"lstm": 0.30, "arima": 0.10}),
                           {"lstm": 0.35, "arima": 0.3})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert result.stages[0].reason == "WorseThanFallback"
    assert "recent error (WAPE) 0.3" in result.stages[0].message


def test_an_unhealthy_next_stage_is_skipped_for_the_comparison(history: Series) -> None:
    # arima's own record is above maxError (0.5): lstm is compared with ma instead.
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _records_with({"lstm": 0.30, "arima": 0.9, "ma": 0.35})
    assert chain.forecast(history, HORIZON, now=NOW, records=records).served_by == "lstm"
    records = _records_with({"lstm": 0.45, "arima": 0.9, "ma": 0.2})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert result.stages[0].reason == "WorseThanFallback" and "ma's" in \
        result.stages[0].message


def test_a_stage_off_most_of_the_time_hands_over_at_the_same_wape(history: Series) -> None:
    # Equal WAPEs (0.15): lstm misses by 15 % at every origin, arima by 5 % at ten and by
    # 65 % at two. arima's typical miss is a third of lstm's.
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = Records()
    records.tracks["lstm"] = [Scored(NOW - 300.0 * k, 115.0, 100.0) for k in range(12, 0, -1)]
    records.tracks["arima"] = [Scored(NOW - 300.0 * k, 165.0 if k <= 2 else 105.0, 100.0)
                               for k in range(12, 0, -1)]
    compared = records.compare("lstm", "arima")
    assert compared is not None
    assert compared.wape == pytest.approx((0.15, 0.15))
    assert compared.median == pytest.approx((15.0, 5.0))
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(result)[:2] == [("lstm", "WorseThanFallback"), ("arima", "Served")]
    assert "median error of the level 15 req/s is more than 10% above arima's 5" in \
        result.stages[0].message


def test_every_later_healthy_stage_is_compared(history: Series) -> None:
    # lstm is no worse than arima, but both are twice as far off as the moving average:
    # each hands over to it.
    chain = ForecastChain(_settings("lstm", "arima", "ma"), lstm=Fake(name="lstm").fit(history))
    records = _records_with({"lstm": 0.20, "arima": 0.21, "ma": 0.10})
    result = chain.forecast(history, HORIZON, now=NOW, records=records)
    assert _reasons(result) == [("lstm", "WorseThanFallback"), ("arima", "WorseThanFallback"),
                                ("ma", "Served")]
    assert "above ma's 0.1" in result.stages[0].message
    # Within the margin of every later stage, the first keeps serving.
    close = _records_with({"lstm": 0.105, "arima": 0.21, "ma": 0.10})
    assert chain.forecast(history, HORIZON, now=NOW, records=close).served_by == "lstm"


def test_a_tracked_error_above_the_limit_fails_the_absolute_gate_but_is_recorded(
        history: Series) -> None:
    chain = ForecastChain(_settings("lstm", "ma"), lstm=Fake(name="lstm").fit(history))
    result = chain.forecast(history, HORIZON, now=NOW, records=_records_with({"lstm": 0.8}))
    assert _reasons(result) == [("lstm", "AccuracyTooLow"), ("ma", "Served")]
    assert ("lstm", False) in [(r.model, r.served) for r in result.runs]


def test_later_stages_shadow_only_at_track_origins(history: Series) -> None:
    chain = ForecastChain(_settings("lstm", "ma"), lstm=Fake(name="lstm").fit(history))
    quiet = chain.forecast(history, HORIZON, now=NOW, records=Records())
    assert [r.model for r in quiet.runs] == ["lstm"]
    due = chain.forecast(history, HORIZON, now=NOW, records=Records(), track_due=True)
    assert [(r.model, r.served) for r in due.runs] == [("lstm", True), ("ma", False)]
    assert due.stages[1].reason == "NotTried"


def test_a_remembered_lstm_shortens_the_look_ahead_too(lstm_artifact: Path,
                                                       history: Series) -> None:
    """The backtest wraps the LSTM to remember its forecasts; the wrapper says how far the
    model forecasts, so the look-ahead is shortened there as in the operator."""
    from forescale.backtest.forescale_policy import WindowMemo
    from forescale.core.forecast.lstm import LSTMForecaster

    model = LSTMForecaster.load(lstm_artifact)
    memo = WindowMemo(model, window=model.metadata.window)
    assert memo.horizon == 15
    chain = ForecastChain(_settings("lstm", "ma"), lstm=memo)
    result = chain.forecast(history, 18, now=NOW, least=12)
    assert result.served_by == "lstm" and result.forecast is not None
    assert result.forecast.horizon == 15


# -- forecasts of the wrong shape, horizons, refits after a clock step ---------------------


class _Shaped(Forecaster):
    """Returns its level in the wrong shape: a scalar, or ``(horizon, columns)``."""

    name = "arima"

    def __init__(self, columns: int | None) -> None:
        super().__init__()
        self.columns = columns

    @property
    def min_history(self) -> int:
        return 1

    def _fit(self, history: Series) -> None:
        return None

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        m: FloatArray = np.float64(10.0) if self.columns is None else \
            np.full((horizon, self.columns), 10.0)  # type: ignore[assignment]
        return Forecast(self.name, history.end_seconds, history.step_seconds, m, m * 0.9,
                        m * 1.1, level)


@pytest.mark.parametrize("columns", [None, 1, 2])
def test_a_forecast_of_the_wrong_shape_is_a_model_error(
        monkeypatch: pytest.MonkeyPatch, columns: int | None) -> None:
    """A scalar raised TypeError out of the chain (the decision failed); (h, 1) was served
    2-D; (h, 2) was called AccuracyTooLow and broke the track record."""
    monkeypatch.setitem(registry.FACTORIES, "arima", lambda settings: _Shaped(columns))
    history = Series.from_array(np.full(300, 10.0), start_seconds=1_700_000_000.0)
    result = ForecastChain(ForecastSettings(models=("arima", "ma"))).forecast(
        history, 6, now=1_700_100_000.0)
    assert result.stages[0].reason == "ModelError"
    assert "one value per step" in result.stages[0].message
    assert result.served_by == "ma" and result.forecast is not None
    assert result.forecast.mean.shape == (6,)
    records = Records()
    for run in result.runs:
        records.record(history.end_seconds, run.model, served=run.served, track=True,
                       means=run.forecast.mean)


class _YoungLSTM(Forecaster):
    """An LSTM trained for 3 steps that needs more history than there is."""

    name = "lstm"
    horizon = 3

    @property
    def min_history(self) -> int:
        return 1000

    def check_compatible(self, history: Series, steps: int) -> None:
        return None

    def _fit(self, history: Series) -> None:
        return None

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        m = np.full(horizon, 1.0)
        return Forecast(self.name, history.end_seconds, history.step_seconds, m, m, m, level)


def test_an_lstm_that_cannot_run_does_not_shorten_the_others_horizon() -> None:
    lstm = _YoungLSTM()
    lstm._fitted = True
    chain = ForecastChain(ForecastSettings(models=("lstm", "ma")), lstm=lstm)
    history = Series.from_array(np.full(300, 10.0), start_seconds=1_700_438_400.0)
    result = chain.forecast(history, 10, now=1_700_438_400.0 + 1e5, least=2)
    assert result.stages[0].reason == "HistoryTooShort"
    assert result.served_by == "ma" and result.forecast is not None
    assert result.forecast.horizon == 10  # was the LSTM's 3


def test_arima_is_refitted_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit made 'in the future' has no age anyone knows: it was served as fresh until the
    clock caught up with it, and for the refit period after."""
    fits: list[float] = []
    fit = ArimaForecaster._fit

    def counted(self: ArimaForecaster, history: Series) -> None:
        fits.append(history.end_seconds)
        fit(self, history)

    monkeypatch.setattr(ArimaForecaster, "_fit", counted)
    t0 = 1_700_438_400.0
    history = Series.from_array(np.random.default_rng(0).poisson(600, 400) / 60.0,
                                start_seconds=t0)
    chain = ForecastChain(ForecastSettings(models=("arima", "ma"), arima_refit_seconds=3600))
    now = t0 + 400 * 60.0
    chain.forecast(history, 5, now=now)
    assert len(fits) == 1
    chain.forecast(history, 5, now=now + 600)
    assert len(fits) == 1  # within the refit period
    result = chain.forecast(history, 5, now=now - 86_400.0)  # NTP stepped back a day
    assert len(fits) == 2
    assert "after now" in result.stages[0].message
    chain.forecast(history, 5, now=now - 86_400.0 + 600)
    assert len(fits) == 2  # dated by the step-back clock from then on


def _young(real_steps: int, step: float = 60.0) -> Series:
    """A 7-day window of a workload that has existed for ``real_steps`` samples: NaN
    before it (what Prometheus answers for the time before the series existed)."""
    n = 7 * 1440
    t = 1_700_000_000.0 + step * np.arange(n)
    rate = 50 + 40 * np.sin(2 * np.pi * (t % 86400) / 86400)
    values = np.random.default_rng(5).poisson(rate * step) / step
    values[: n - real_steps] = np.nan
    return Series(1_700_000_000.0, step, values)


def test_a_young_workloads_window_is_its_observed_history_not_filler() -> None:
    """Filled before the stages' checks, ten real samples passed ARIMA's 60 (a forecast
    fitted on 10,070 copies of the first sample, an interval of millionths of a req/s)."""
    history = _young(10)
    result = ForecastChain(ForecastSettings(models=("arima", "ma"))).forecast(
        history, 15, now=history.end_seconds)
    assert result.stages[0].reason == "HistoryTooShort", result.stages[0].message
    assert result.served_by == "ma"


def test_one_observed_day_fits_no_daily_terms() -> None:
    """One day cannot tell a daily pattern from a trend (arima.py): with two days of
    filler before it, ARIMA fitted daily Fourier terms."""
    history = _young(1440)
    chain = ForecastChain(ForecastSettings(models=("arima",)))
    chain.forecast(history, 15, now=history.end_seconds)
    model = chain._models["arima"]
    assert isinstance(model, ArimaForecaster) and model.fourier_terms_used == 0
