"""The LSTM forecaster: training, artifact, intervals, errors, and the committed NASA model."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forescale.core.errors import ArtifactError, InvalidInputError, NotFittedError
from forescale.core.forecast.baselines import SeasonalNaive
from forescale.core.forecast.lstm import (
    DAY_OF_WEEK_FEATURES,
    FEATURES,
    METADATA_FILE,
    MIN_DAYS_FOR_YESTERDAY,
    TIME_OF_DAY_FEATURES,
    YESTERDAY_FEATURE,
    LSTMConfig,
    LSTMForecaster,
    ProgressCallback,
    min_training_points,
    train_lstm,
)
from forescale.core.forecast.model_card import MODEL_CARD_FILE, render_model_card
from forescale.core.metrics import wape
from forescale.core.series import Series
from forescale.trace import load_trace, parse_timestamp

# One thread: the machine is shared, and tiny ops gain nothing from more.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
NASA_TRACE = REPO / "traces" / "nasa_ksc_jul1995_1min.csv"
NASA_MODEL = REPO / "models" / "nasa-jul1995"
DAY = 86400.0
MONDAY = 1_700_438_400.0  # 2023-11-20T00:00:00Z

#: Small enough that a training run takes well under a second.
SMALL = LSTMConfig(window=24, horizon=6, hidden_size=16, epochs=2, batch_size=128)


def train_small(series: Series, *, epochs: int = SMALL.epochs, seed: int = 0,
                num_threads: int = 1, day_of_week: bool | None = None,
                same_time_yesterday: bool | None = False,
                progress: ProgressCallback | None = None) -> LSTMForecaster:
    return train_lstm(series, window=SMALL.window, horizon=SMALL.horizon,
                      hidden_size=SMALL.hidden_size, batch_size=SMALL.batch_size,
                      epochs=epochs, seed=seed, num_threads=num_threads,
                      day_of_week=day_of_week, same_time_yesterday=same_time_yesterday,
                      progress=progress)


def seasonal(days: float = 4.0, *, step: float = 300.0, seed: int = 3) -> Series:
    """Poisson arrivals around a daily sine (5-minute steps, 4 days: 1,152 samples)."""
    n = round(days * DAY / step)
    t = MONDAY + step * np.arange(n)
    rate = 20.0 * (1.0 + 0.6 * np.sin(2 * np.pi * (t % DAY) / DAY))
    counts = np.random.default_rng(seed).poisson(rate * step)
    return Series.from_array(counts / step, start_seconds=MONDAY, step_seconds=step)


@pytest.fixture(scope="module")
def series() -> Series:
    return seasonal()


@pytest.fixture(scope="module")
def model(series: Series) -> LSTMForecaster:
    return train_small(series)


@pytest.fixture(scope="module")
def saved(model: LSTMForecaster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("lstm") / "model")


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


# -- the module stays light ------------------------------------------------------------------


def test_importing_the_module_does_not_import_torch() -> None:
    code = ("import sys; import forescale.core.forecast.lstm, forescale.core.forecast.model_card;"
            " import forescale.cli.train_cmd; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "False"


# -- the forecaster contract -----------------------------------------------------------------


def test_forecast_before_fit_raises(series: Series) -> None:
    with pytest.raises(NotFittedError):
        LSTMForecaster().forecast(series, 5, 0.9)


def test_forecast_is_finite_non_negative_and_ordered(model: LSTMForecaster,
                                                     series: Series) -> None:
    fc = model.forecast(series, 6, 0.9)
    assert fc.model == "lstm" and fc.horizon == 6
    assert fc.start_seconds == series.end_seconds and fc.step_seconds == 300.0
    for arr in (fc.mean, fc.lower, fc.upper):
        assert np.all(np.isfinite(arr))
    assert np.all(fc.lower >= 0)
    assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)
    # A sanity bound, not an accuracy test: the forecast is in the series' range of rates.
    assert 0.2 * series.values.mean() < fc.mean.mean() < 3 * series.values.mean()


def test_shorter_horizon_is_a_prefix(model: LSTMForecaster, series: Series) -> None:
    full, short = model.forecast(series, 6, 0.8), model.forecast(series, 2, 0.8)
    np.testing.assert_array_equal(short.mean, full.mean[:2])
    np.testing.assert_array_equal(short.upper, full.upper[:2])


def test_forecast_uses_only_the_latest_window(model: LSTMForecaster, series: Series) -> None:
    # Applied to a newer history than it was trained on, it looks at the last window only.
    newer = seasonal(5.0, seed=11)
    a = model.forecast(newer, 6, 0.9)
    b = model.forecast(newer.tail(model.window), 6, 0.9)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert a.start_seconds == newer.end_seconds


def test_forecast_scales_with_the_traffic_level(model: LSTMForecaster,
                                                series: Series) -> None:
    """Inputs are relative to the recent level: ten or a thousand times the traffic gives
    ten or a thousand times the forecast and interval, although training never saw it."""
    base = model.forecast(series, 6, 0.9)
    for factor in (10.0, 1000.0):
        scaled = Series.from_array(series.values * factor, start_seconds=MONDAY,
                                   step_seconds=series.step_seconds)
        fc = model.forecast(scaled, 6, 0.9)
        np.testing.assert_allclose(fc.mean, base.mean * factor, rtol=1e-6)
        np.testing.assert_allclose(fc.lower, base.lower * factor, rtol=1e-6)
        np.testing.assert_allclose(fc.upper, base.upper * factor, rtol=1e-6)


def test_interval_widens_with_level(model: LSTMForecaster, series: Series) -> None:
    widths = [model.forecast(series, 6, level).upper - model.forecast(series, 6, level).lower
              for level in (0.5, 0.8, 0.95)]
    assert np.all(widths[0] <= widths[1]) and np.all(widths[1] <= widths[2])
    assert widths[0].sum() < widths[1].sum() < widths[2].sum()


def test_too_short_history_is_refused_in_one_line() -> None:
    config = SMALL
    short = seasonal(step=300.0).head(min_training_points(config) - 1)
    with pytest.raises(InvalidInputError, match=r"lstm needs at least \d+ samples to train"):
        LSTMForecaster(config).fit(short)
    LSTMForecaster(config).fit(seasonal(step=300.0).head(min_training_points(config)))


def test_constant_series_is_refused() -> None:
    flat = Series.from_array(np.full(600, 3.0), start_seconds=MONDAY, step_seconds=300.0)
    with pytest.raises(InvalidInputError, match="constant"):
        train_small(flat)


def test_a_silent_validation_range_is_refused() -> None:
    """Its residuals are all ~0, so the artifact's interval would be ±2 % around the mean,
    and served on real traffic it covered 3 % of it: refused before training."""
    values = seasonal(step=300.0).values.copy()
    values[-len(values) // 5:] = 0.0  # the validation tail (15 %) and more: no traffic
    silent = Series.from_array(values, start_seconds=MONDAY, step_seconds=300.0)
    with pytest.raises(InvalidInputError, match=r"validation range .* has no traffic"):
        train_small(silent)


def test_bad_config_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="window"):
        LSTMConfig(window=0)
    with pytest.raises(InvalidInputError, match="validation fraction"):
        LSTMConfig(validation_fraction=1.0)


# -- training --------------------------------------------------------------------------------


def test_training_is_deterministic(series: Series, model: LSTMForecaster) -> None:
    again = train_small(series)
    np.testing.assert_array_equal(again.forecast(series, 6, 0.9).mean,
                                  model.forecast(series, 6, 0.9).mean)
    np.testing.assert_array_equal(again.forecast(series, 6, 0.9).upper,
                                  model.forecast(series, 6, 0.9).upper)
    assert again.metadata == model.metadata
    other = train_small(series, seed=1)
    assert not np.array_equal(other.forecast(series, 6, 0.9).mean,
                              model.forecast(series, 6, 0.9).mean)


def test_training_restores_torch_global_state(series: Series) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    torch.set_num_threads(2)
    try:
        train_small(series, epochs=1, num_threads=1)
        # The caller's random stream and thread count are untouched.
        assert torch.equal(torch.rand(3), expected)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_progress_is_reported_per_epoch(series: Series) -> None:
    seen: list[int] = []
    train_small(series, progress=lambda p: seen.append(p.epoch))
    assert seen == [1, 2]


def test_day_of_week_only_with_weeks_of_data(model: LSTMForecaster, series: Series) -> None:
    assert model.metadata.features == tuple(f for f in FEATURES
                                            if f not in DAY_OF_WEEK_FEATURES)
    forced = train_small(series, epochs=1, day_of_week=True)
    assert forced.metadata.features == FEATURES
    assert np.all(np.isfinite(forced.forecast(series, 6, 0.9).mean))


# -- the same-time-yesterday input -------------------------------------------------------


def every_day_alike(days: float = 4.0, *, step: float = 300.0) -> Series:
    """A series whose rate tomorrow equals today's, with a different value at every step of
    the day (so an input one step off would not match)."""
    n = round(days * DAY / step)
    t = MONDAY + step * np.arange(n)
    phase = (t % DAY) / DAY
    rate = 20.0 + 15.0 * np.sin(2 * np.pi * phase) + 5.0 * np.sin(6 * np.pi * phase) + phase
    return Series.from_array(rate, start_seconds=MONDAY, step_seconds=step)


RATE_AND_TIME_OF_DAY = (FEATURES[0], *TIME_OF_DAY_FEATURES)


@pytest.fixture(scope="module")
def yesterday_model() -> LSTMForecaster:
    return train_small(seasonal(), epochs=1, same_time_yesterday=True)


def test_yesterday_input_is_yesterdays_rate_at_the_forecast_steps(
        yesterday_model: LSTMForecaster) -> None:
    model, alike = yesterday_model, every_day_alike()
    m = model.metadata
    assert m.features == (*RATE_AND_TIME_OF_DAY, YESTERDAY_FEATURE)
    seen: list[torch.Tensor] = []
    assert model._net is not None
    hook = model._net.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        origin = len(alike) - 100
        model.forecast(alike.head(origin), m.horizon, 0.9)
    finally:
        hook.remove()
    (x,) = seen
    values = alike.values
    level = values[origin - m.anchor_steps:origin].mean()
    b = m.level_offset * level

    def relative(rates: np.ndarray) -> np.ndarray:
        return np.log((rates + b) / (level + b)) / m.scale

    def mean5(at: np.ndarray) -> np.ndarray:  # the 5 steps centred on each index
        return np.stack([values[i - 2:i + 3].mean() for i in at])

    # Tomorrow equals today: yesterday at the forecast's target times is what comes next.
    targets = np.arange(origin, origin + m.horizon)
    np.testing.assert_allclose(x[0, -m.horizon:, -1].numpy(), relative(mean5(targets)),
                               rtol=1e-5)
    # Every input step carries the rate one day before the step `horizon` after it...
    day = round(DAY / m.step_seconds)
    steps = np.arange(origin - m.window, origin) + m.horizon - day
    np.testing.assert_allclose(x[0, :, -1].numpy(), relative(mean5(steps)), rtol=1e-5)
    # ...and the rate column is unchanged by the new one.
    np.testing.assert_allclose(x[0, :, 0].numpy(),
                               relative(values[origin - m.window:origin]), rtol=1e-5)


def test_yesterday_input_needs_a_day_of_history(yesterday_model: LSTMForecaster,
                                                series: Series) -> None:
    m = yesterday_model.metadata
    needed = m.window + round(DAY / m.step_seconds) - m.horizon + 2  # + half the mean
    assert yesterday_model.min_history == needed
    yesterday_model.forecast(series.tail(needed), m.horizon, 0.9)
    with pytest.raises(InvalidInputError, match=rf"at least {needed} samples.*one day.*"
                                                r"same-time-yesterday.*got \d+"):
        yesterday_model.forecast(series.tail(needed - 1), m.horizon, 0.9)
    # A history at another step is a mismatch with the artifact, as for any model.
    minute = Series.from_array(series.values, start_seconds=MONDAY, step_seconds=60.0)
    with pytest.raises(ArtifactError) as info:
        yesterday_model.forecast(minute, m.horizon, 0.9)
    assert info.value.reason == "ArtifactMismatch"


def test_yesterday_input_training_needs_the_lag_too() -> None:
    config = replace(SMALL, same_time_yesterday=True)
    needed = min_training_points(config, 300.0)
    assert needed > min_training_points(SMALL, 300.0) + 280
    with pytest.raises(InvalidInputError, match="same-time-yesterday"):
        LSTMForecaster(config).fit(seasonal(step=300.0).head(needed - 1))
    LSTMForecaster(config).fit(seasonal(step=300.0).head(needed))
    # A step that does not divide a day has no "same time yesterday".
    odd = Series.from_array(np.random.default_rng(0).poisson(50, 3000) / 7.0,
                            start_seconds=MONDAY, step_seconds=7 * 60.0 + 1)
    with pytest.raises(InvalidInputError, match="divides a day"):
        LSTMForecaster(config).fit(odd)
    # Nor one whose horizon reaches a day: "yesterday" at the last step would be the future.
    hourly = seasonal(days=30, step=3600.0)
    with pytest.raises(InvalidInputError, match="more than the horizon"):
        LSTMForecaster(replace(config, horizon=23)).fit(hourly)


def test_yesterday_input_when_left_to_decide(series: Series) -> None:
    auto = replace(SMALL, epochs=1, same_time_yesterday=None)
    assert series.end_seconds - series.start_seconds >= MIN_DAYS_FOR_YESTERDAY * DAY
    assert YESTERDAY_FEATURE in LSTMForecaster(auto).fit(series).metadata.features
    short = series.head(round((MIN_DAYS_FOR_YESTERDAY - 0.5) * DAY / series.step_seconds))
    assert YESTERDAY_FEATURE not in LSTMForecaster(auto).fit(short).metadata.features


def test_artifacts_without_the_yesterday_input_still_load(saved: Path, series: Series) -> None:
    """Every artifact written before the input existed has one of the older feature sets."""
    old = LSTMForecaster.load(saved)
    assert YESTERDAY_FEATURE not in old.metadata.features
    assert old.config.same_time_yesterday is False
    assert old.min_history == old.window == SMALL.window
    assert np.all(np.isfinite(old.forecast(series.tail(SMALL.window), 6, 0.9).mean))


def test_yesterday_artifact_round_trip(yesterday_model: LSTMForecaster, series: Series,
                                       tmp_path: Path) -> None:
    loaded = LSTMForecaster.load(yesterday_model.save(tmp_path / "y"))
    assert loaded.metadata == yesterday_model.metadata
    assert loaded.config.same_time_yesterday is True
    assert loaded.min_history == yesterday_model.min_history
    np.testing.assert_array_equal(loaded.forecast(series, 6, 0.9).mean,
                                  yesterday_model.forecast(series, 6, 0.9).mean)
    again = train_small(seasonal(), epochs=1, same_time_yesterday=True)
    assert again.metadata == yesterday_model.metadata  # same seed, same weights
    np.testing.assert_array_equal(again.forecast(series, 6, 0.9).mean,
                                  yesterday_model.forecast(series, 6, 0.9).mean)


def test_metadata_records_training_and_validation(model: LSTMForecaster,
                                                  series: Series) -> None:
    m = model.metadata
    assert (m.window, m.horizon, m.step_seconds, m.hidden_size) == (24, 6, 300.0, 16)
    assert m.training_start_seconds == series.start_seconds
    assert m.training_end_seconds == series.end_seconds
    assert m.training_points == len(series) and m.epochs == 2 and m.seed == 0
    v = m.validation
    assert v.end_seconds == series.end_seconds
    assert v.origins == round((v.end_seconds - v.start_seconds) / 300.0) - 6 + 1
    assert v.wape_lstm is not None and v.wape_seasonal_naive is not None
    assert v.wape_moving_average is not None
    assert len(m.residual_quantiles) == 6


# -- the artifact ----------------------------------------------------------------------------


def test_save_load_round_trip(model: LSTMForecaster, saved: Path, series: Series) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["metadata.json", "weights.pt"]
    loaded = LSTMForecaster.load(saved)
    assert loaded.metadata == model.metadata
    for level in (0.5, 0.9):
        a, b = model.forecast(series, 6, level), loaded.forecast(series, 6, level)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.lower, b.lower)
        np.testing.assert_array_equal(a.upper, b.upper)


def test_metadata_schema(saved: Path) -> None:
    raw = json.loads((saved / "metadata.json").read_text())
    assert raw["format_version"] == 2 and raw["model"] == "lstm"
    assert raw["normalisation"]["transform"] == "log_relative"
    assert raw["features"][0] == "log_rate_relative"
    assert {"window", "horizon", "step_seconds", "features", "hidden_size", "normalisation",
            "training", "validation", "residual_quantiles"} <= raw.keys()
    assert raw["training"]["start"].endswith("Z") and raw["training"]["seed"] == 0
    assert set(raw["validation"]["wape"]) == {"lstm", "seasonal_naive", "moving_average_15"}


def _reason(path: Path) -> str:
    with pytest.raises(ArtifactError) as info:
        LSTMForecaster.load(path)
    return info.value.reason


def test_missing_artifact(saved: Path, tmp_path: Path) -> None:
    assert _reason(tmp_path / "nothing-here") == "ArtifactMissing"
    for name in ("weights.pt", "metadata.json"):
        copy = Path(shutil.copytree(saved, tmp_path / name))
        (copy / name).unlink()
        assert _reason(copy) == "ArtifactMissing"


def _edit_metadata(path: Path, edit: str) -> None:
    meta = json.loads((path / "metadata.json").read_text())
    if edit == "version":
        meta["format_version"] = 99
    elif edit == "missing-key":
        del meta["normalisation"]["scale"]
    elif edit == "hidden-size":
        meta["hidden_size"] = 32  # the weights are for 16
    elif edit == "horizon":
        meta["horizon"] = 7  # quantile table and head are for 6
    elif edit == "features":
        meta["features"] = ["log_rate_relative", "temperature"]
    elif edit == "wrong-type":
        meta["window"] = "24"
    elif edit == "huge-integer":  # valid JSON; math.isfinite(10**400) raised OverflowError
        meta["step_seconds"] = 10 ** 400
    elif edit == "absurd-hidden-size":  # torch's allocator raised, or took gigabytes
        meta["hidden_size"] = 10 ** 12
    elif edit == "large-hidden-size":  # 17 GB of weights had the net been built first
        meta["hidden_size"] = 30_000
    (path / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit", ["version", "missing-key", "hidden-size", "horizon",
                                  "features", "wrong-type", "huge-integer",
                                  "absurd-hidden-size", "large-hidden-size"])
def test_inconsistent_metadata_is_corrupt(saved: Path, tmp_path: Path, edit: str) -> None:
    copy = _copy(saved, tmp_path)
    _edit_metadata(copy, edit)
    assert _reason(copy) == "ArtifactCorrupt"


def test_the_digest_is_of_the_bytes_the_model_was_built_from(
        saved: Path, tmp_path: Path, series: Series, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retrain that lands between the load and the hash must not lend the old model the
    new files' digest (the new model would inherit the old one's track record)."""
    import forescale.core.forecast.lstm as lstm_module

    copy = _copy(saved, tmp_path)
    old = LSTMForecaster.load(copy).artifact_digest
    retrained = train_small(series, seed=1).save(tmp_path / "retrained")
    new = LSTMForecaster.load(retrained).artifact_digest
    assert old != new
    build = lstm_module._build_net

    def retrain_lands(**kwargs: Any) -> Any:
        for name in ("weights.pt", "metadata.json"):
            shutil.copy2(retrained / name, copy / name)
        return build(**kwargs)

    monkeypatch.setattr(lstm_module, "_build_net", retrain_lands)
    loaded = LSTMForecaster.load(copy)
    assert loaded.metadata.seed == 0 and loaded.artifact_digest == old
    monkeypatch.setattr(lstm_module, "_build_net", build)
    assert LSTMForecaster.load(copy).artifact_digest == new


def test_format_version_1_is_refused_as_a_mismatch(saved: Path, tmp_path: Path) -> None:
    """A version 1 artifact (absolute-level inputs) must be retrained, not misread."""
    copy = _copy(saved, tmp_path)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["format_version"] = 1
    meta["features"][0] = "log_rate_standardised"
    meta["normalisation"] = {"transform": "log1p", "mean": 0.58, "std": 0.27}
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError) as info:
        LSTMForecaster.load(copy)
    assert info.value.reason == "ArtifactMismatch"
    assert "format version 1" in str(info.value) and "retrain" in str(info.value)


@pytest.mark.parametrize("damage", ["json", "weights", "not-a-state-dict", "nan-weights"])
def test_unreadable_files_are_corrupt(saved: Path, tmp_path: Path, damage: str) -> None:
    copy = _copy(saved, tmp_path)
    if damage == "json":
        (copy / "metadata.json").write_text("{not json")
    elif damage == "weights":
        (copy / "weights.pt").write_bytes(b"\x00garbage" * 10)
    elif damage == "nan-weights":  # it loaded, and forecast NaN at every decision
        state = torch.load(copy / "weights.pt", weights_only=True)
        first = next(iter(state))
        state[first] = torch.full_like(state[first], float("nan"))
        torch.save(state, copy / "weights.pt")
    else:
        torch.save([1, 2, 3], copy / "weights.pt")
    assert _reason(copy) == "ArtifactCorrupt"


def test_step_and_horizon_mismatch(model: LSTMForecaster, series: Series) -> None:
    minute = Series.from_array(series.values, start_seconds=MONDAY, step_seconds=60.0)
    for call in (lambda: model.check_compatible(minute, 6),
                 lambda: model.forecast(minute, 6, 0.9),
                 lambda: model.check_compatible(series, 7),
                 lambda: model.forecast(series, 7, 0.9)):
        with pytest.raises(ArtifactError) as info:
            call()
        assert info.value.reason == "ArtifactMismatch"
    model.check_compatible(series, 6)


def test_artifact_error_reason_is_backwards_compatible() -> None:
    assert ArtifactError("old style").reason == "ArtifactCorrupt"
    err = pickle.loads(pickle.dumps(ArtifactError("x", reason="ArtifactMissing")))
    assert err.reason == "ArtifactMissing" and str(err) == "x"
    with pytest.raises(ValueError):
        ArtifactError("x", reason="Whatever")  # type: ignore[arg-type]


def test_model_card_quotes_the_metadata(model: LSTMForecaster) -> None:
    card = render_model_card(model, name="tiny", trace_name="synthetic",
                             trace_path="synthetic.csv", command="forescale train ...")
    v = model.metadata.validation
    assert "only" in card and "2023-11-20T00:00:00Z" in card
    for value in (v.wape_lstm, v.wape_seasonal_naive, v.wape_moving_average):
        assert value is not None and f"{value:.4f}" in card
    assert "Reproduce with: `forescale train ...`" in card


# -- the committed NASA model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def nasa() -> Series:
    return load_trace(NASA_TRACE).rates


@pytest.fixture(scope="module")
def nasa_model() -> LSTMForecaster:
    return LSTMForecaster.load(NASA_MODEL)


def test_nasa_model_was_trained_on_the_first_14_days_only(nasa_model: LSTMForecaster) -> None:
    m = nasa_model.metadata
    assert m.training_start_seconds == parse_timestamp("1995-07-01T04:00:00Z")
    assert m.training_end_seconds == parse_timestamp("1995-07-15T04:00:00Z")
    assert (m.step_seconds, m.window, m.horizon) == (60.0, 60, 15)
    card = (NASA_MODEL / MODEL_CARD_FILE).read_text()
    assert "1995-07-01T04:00:00Z to 1995-07-15T04:00:00Z only" in card
    size = sum(p.stat().st_size for p in NASA_MODEL.iterdir())
    assert size < 1_000_000


def test_nasa_model_forecasts_after_its_training_range(nasa_model: LSTMForecaster,
                                                       nasa: Series) -> None:
    for at in ("1995-07-17T14:00:00Z", "1995-07-20T15:00:00Z", "1995-07-23T03:00:00Z"):
        history = nasa.until(parse_timestamp(at)).tail(7 * 1440)
        fc = nasa_model.forecast(history, 15, 0.9)
        assert fc.horizon == 15
        assert np.all(np.isfinite(fc.mean)) and np.all(fc.lower >= 0)
        assert np.all(fc.upper >= fc.mean)


def test_nasa_model_beats_seasonal_naive(nasa_model: LSTMForecaster) -> None:
    v = nasa_model.metadata.validation
    assert v.wape_lstm is not None and v.wape_seasonal_naive is not None
    assert v.wape_lstm < v.wape_seasonal_naive


def test_nasa_validation_errors_are_what_the_card_says(nasa_model: LSTMForecaster,
                                                       nasa: Series) -> None:
    """Recompute every number of the card's table through the public API (no shortcuts)."""
    m = nasa_model.metadata
    v = m.validation
    history = nasa.until(m.training_end_seconds)
    first = round((v.start_seconds - history.start_seconds) / m.step_seconds)
    origins = range(first, len(history) - m.horizon + 1)
    assert len(origins) == v.origins
    actual = np.stack([history.values[o:o + m.horizon] for o in origins])
    lstm = np.stack([nasa_model.forecast(history.head(o), m.horizon, 0.9).mean
                     for o in origins])
    naive = SeasonalNaive().fit(history.head(first))
    seasonal_naive = np.stack([naive.forecast(history.head(o), m.horizon, 0.9).mean
                               for o in origins])
    moving_average = np.stack([np.full(m.horizon, history.values[o - 15:o].mean())
                               for o in origins])
    assert v.wape_lstm == pytest.approx(wape(actual, lstm), abs=1e-5)
    assert v.wape_seasonal_naive == pytest.approx(wape(actual, seasonal_naive), abs=1e-9)
    assert v.wape_moving_average == pytest.approx(wape(actual, moving_average), abs=1e-9)
    card = (NASA_MODEL / MODEL_CARD_FILE).read_text()
    for value in (v.wape_lstm, v.wape_seasonal_naive, v.wape_moving_average):
        assert value is not None and f"| {value:.4f} |" in card


def test_a_pickle_with_code_is_corrupt_and_the_status_never_advises_running_it(
        saved: Path, tmp_path: Path) -> None:
    """torch's own message suggests weights_only=False (running the file's code): that
    advice must not reach the status; only the exception's type does."""
    import datetime

    copy = _copy(saved, tmp_path)
    torch.save({"when": datetime.datetime(2026, 1, 1)}, copy / "weights.pt")
    with pytest.raises(ArtifactError) as info:
        LSTMForecaster.load(copy)
    assert info.value.reason == "ArtifactCorrupt"
    assert "weights_only" not in str(info.value) and "UnpicklingError" in str(info.value)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _fail_the_metadata_rename(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make renaming the metadata into place fail as a full disk does; the real rename."""
    from forescale.core.forecast import lstm

    real_replace = os.replace

    def replace_(src: object, dst: object) -> None:
        if Path(str(dst)).name == METADATA_FILE:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(lstm.os, "replace", replace_)
    return real_replace


@pytest.mark.parametrize("failure", ["metadata", "rename"])
def test_a_failed_save_leaves_the_old_artifact_whole(series: Series, saved: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     failure: str) -> None:
    """New weights beside the old metadata load, with the same shapes, and forecast with
    the old normalisation: a save that fails half way once left exactly that (the weights
    were renamed into place before the metadata was even serialised)."""
    from forescale.core.forecast import lstm

    copy = _copy(saved, tmp_path)
    before = _files(copy)
    other = train_small(series, seed=7)
    if failure == "metadata":  # json.dumps(allow_nan=False) of a NaN loss raises this
        def dumps(*args: object, **kwargs: object) -> str:
            raise ValueError("Out of range float values are not JSON compliant")

        monkeypatch.setattr(lstm.json, "dumps", dumps)
        expected: type[Exception] = ValueError
    else:
        _fail_the_metadata_rename(monkeypatch)
        expected = OSError
    with pytest.raises(expected):
        other.save(copy)
    assert _files(copy) == before  # no temporary file left either
    monkeypatch.undo()
    other.save(copy)
    assert LSTMForecaster.load(copy).metadata == other.metadata
    assert sorted(_files(copy)) == sorted(before)


def test_an_artifact_is_saved_over_on_a_file_system_without_hard_links(
        series: Series, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old weights are kept by a copy where a hard link is refused (vfat, some FUSE and
    network file systems), and put back if the metadata cannot be renamed in."""
    from forescale.core.forecast import lstm

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(lstm.os, "link", no_links)
    copy = _copy(saved, tmp_path)
    before = _files(copy)
    other = train_small(series, seed=7)
    real_replace = _fail_the_metadata_rename(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        other.save(copy)
    assert _files(copy) == before
    monkeypatch.setattr(lstm.os, "replace", real_replace)
    other.save(copy)
    assert LSTMForecaster.load(copy).metadata == other.metadata
    assert sorted(_files(copy)) == sorted(before)


def test_a_perfect_baseline_gets_a_verdict_not_a_division_by_zero() -> None:
    """A trace that repeats exactly scores the seasonal naive a WAPE of 0: training
    finished, then the card raised ZeroDivisionError and nothing was written."""
    from forescale.core.forecast.model_card import _verdict

    assert "does **not** beat seasonal naive" in _verdict(0.03, 0.0, "seasonal naive")
    assert "on par with" in _verdict(0.0, 0.0, "seasonal naive")


def test_a_full_disk_is_an_os_error_and_keeps_the_artifact(
        model: LSTMForecaster, saved: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save reported ENOSPC as a RuntimeError (a traceback from `forescale train`):
    the weights are serialised in memory and written as bytes, whose failure is the
    OSError the command turns into one line."""
    import errno

    copy = _copy(saved, tmp_path)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as info:
        model.save(copy)
    assert info.value.strerror == "No space left on device"
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
