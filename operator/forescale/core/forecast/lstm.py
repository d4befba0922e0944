"""The LSTM forecaster: a small recurrent net trained offline and applied to the latest window.

The net sees the last ``window`` samples of the arrival rate, each with the time of day, the
day of the week and (optionally) the rate at the same clock time one day earlier, and
outputs all ``horizon`` following steps at once (direct multi-step output: no recursive
feeding of its own forecasts, so errors do not compound).

torch is imported lazily, inside the functions that need it: importing this module (for the
registry, the CLI's help or a chain that does not use the LSTM) must not pay for torch.

An artifact is a directory with ``weights.pt`` (the state_dict, loaded with
``weights_only=True`` so a crafted file cannot run code) and ``metadata.json`` (everything
needed to rebuild the net, normalise its input and judge whether it fits a series). Format
version 2 (inputs relative to the recent level) replaced version 1 (absolute level); a
version 1 artifact is refused as ``ArtifactMismatch`` and must be retrained. The
same-time-yesterday input is a new feature set within version 2 (listed in the artifact's
``features``): artifacts without it mean what they meant and load as before.

One forecast takes ~0.4 ms on one torch thread. Forecasting never changes torch's global
thread count, but a process that serves forecasts should set ``torch.set_num_threads(1)``:
with two threads on a busy machine the median doubled and the 90th percentile reached
~50 ms (see benchmarks/bench_lstm.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from forescale.core.errors import ArtifactError, InvalidInputError
from forescale.core.forecast.base import Forecast, Forecaster, check_horizon, check_level
from forescale.core.forecast.baselines import SeasonalNaive
from forescale.core.metrics import wape
from forescale.core.series import DAY_SECONDS, FloatArray, Series

if TYPE_CHECKING:
    import torch

#: Bumped whenever the meaning of weights.pt or metadata.json changes.
FORMAT_VERSION = 2
WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "metadata.json"

#: Input features per time step. An artifact lists the ones it was trained with, in order;
#: the rate always comes first, the calendar columns are computed from the timestamps (UTC).
RATE_FEATURE = "log_rate_relative"
TIME_OF_DAY_FEATURES: tuple[str, ...] = ("time_of_day_sin", "time_of_day_cos")
DAY_OF_WEEK_FEATURES: tuple[str, ...] = ("day_of_week_sin", "day_of_week_cos")
FEATURES: tuple[str, ...] = (RATE_FEATURE, *TIME_OF_DAY_FEATURES, *DAY_OF_WEEK_FEATURES)
#: The rate one day before the time ``horizon`` steps after the input step (the mean of the
#: 5 steps centred there), relative to the same anchor level (and scale) as the rate: the
#: last ``horizon`` input steps carry yesterday's rates at the forecast's target times, the
#: earlier ones yesterday's rates around the window (so the net can compare today with
#: yesterday). Always the last column. It needs one day minus the horizon, plus 2 steps,
#: more history than the window.
YESTERDAY_FEATURE = "log_rate_relative_one_day_before_horizon_mean5"
#: Half the width of that mean. In benchmarks/accuracy.py (one run each; the 5-step run is
#: benchmarks/results/accuracy-same-time-yesterday.md) the LSTM alone had 28.5 % (raw
#: value), 28.9 % (5 steps) and 29.0 % (15 steps) of NASA's 15-minute forecasts within 10 %,
#: and 83.6 %, 85.4 % and 82.5 % of the World Cup tournament's: a day-old minute is mostly
#: counting noise, a quarter-hour mean blurs the bursts.
YESTERDAY_HALF_WIDTH = 2

#: The day of week is used only when the training span has at least this many weeks (unless
#: asked for explicitly). With fewer, each weekday is seen once or twice and the net memorises
#: those particular days: on the NASA trace, training on two weeks with it raised the WAPE on
#: the following two weeks from 0.29 to 0.32-0.35 (worse than a moving average), and more
#: epochs made it worse; without it the error stayed at 0.29 however long it trained.
MIN_WEEKS_FOR_DAY_OF_WEEK = 4
_KNOWN_FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    FEATURES, (RATE_FEATURE, *TIME_OF_DAY_FEATURES),
    (*FEATURES, YESTERDAY_FEATURE), (RATE_FEATURE, *TIME_OF_DAY_FEATURES, YESTERDAY_FEATURE))
#: The same-time-yesterday input is used (unless asked for explicitly) only when the training
#: span has at least this many days: the first day of a span only feeds the lag, so with
#: fewer the net sees each daily pattern once or twice.
MIN_DAYS_FOR_YESTERDAY = 3

#: The net predicts the offset from the mean of the last few (relative) inputs, so an
#: untrained net already behaves like a short moving average and training learns the shape
#: of the next minutes around it; this trains to a useful model in a handful of epochs.
ANCHOR_STEPS = 15

#: The rate enters as ``log((rate + b) / (level + b))`` with ``level`` the mean rate of the
#: last :data:`ANCHOR_STEPS` samples and ``b = LEVEL_OFFSET * level``: it depends only on
#: ``rate / level``, so the net sees the same numbers at 10 req/s and at 1,000 req/s, and
#: the small offset keeps zero-traffic minutes finite (as ``log1p`` did in format 1).
LEVEL_OFFSET = 0.2
#: Relative log values are clipped to this (a rate e^8 ~ 3,000 times the level, or a
#: burst after a silent quarter of an hour), so the input stays finite whatever comes in.
RELATIVE_CLIP = 8.0
#: Added to ``b`` so that an all-zero anchor (no traffic for the last quarter hour) divides
#: by a positive number.
_TINY = 1e-9

#: The baseline the model card quotes next to seasonal naive: the mean of the last 15 samples.
MOVING_AVERAGE_WINDOW = 15

#: Residual quantiles kept per horizon step; a level's interval interpolates between them.
#: The grid reaches 0.005/0.995, so levels above 0.99 are clamped to the 99 % interval.
QUANTILE_PROBABILITIES: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
    0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.995)

#: The largest seed torch takes (torch.manual_seed: an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1
#: Fewer training windows than this cannot fit anything meaningful.
MIN_TRAINING_WINDOWS = 64
#: Most input values (samples × window) one training may hold at once: the normalisation
#: scale and the validation are computed over every window together, ~16 bytes a value at
#: the peak (1.6 GB here). A year of one-minute samples with a 3-hour window fits; a
#: window of 100,000 on 200,000 samples asked numpy for 56 GB and died with a traceback.
MAX_WINDOW_VALUES = 100_000_000

_UNIX_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0).


@dataclass(frozen=True)
class LSTMConfig:
    """How an :class:`LSTMForecaster` is shaped and trained."""

    #: Samples of history the net sees (60 one-minute steps: the last hour).
    window: int = 60
    #: Steps forecast at once; longer forecasts need another artifact.
    horizon: int = 15
    hidden_size: int = 64
    #: Few: on two weeks of minute data the validation error rises again after 3-5 epochs.
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 3e-3
    #: The tail of the training history held out to measure error and calibrate intervals.
    validation_fraction: float = 0.15
    seed: int = 0
    #: torch intra-op threads while training; one leaves the other cores to the operator
    #: (restored afterwards). The same seed and thread count give the same weights.
    num_threads: int = 1
    #: Day-of-week input features: None decides from the training span (see
    #: :data:`MIN_WEEKS_FOR_DAY_OF_WEEK`), True/False force it.
    day_of_week: bool | None = None
    #: The same-time-yesterday input (:data:`YESTERDAY_FEATURE`): None decides from the
    #: training span (see :data:`MIN_DAYS_FOR_YESTERDAY`), True/False force it.
    same_time_yesterday: bool | None = False

    def features_for(self, history_seconds: float) -> tuple[str, ...]:
        """The input features a history spanning ``history_seconds`` is trained with."""
        dow = self.day_of_week
        if dow is None:
            dow = history_seconds >= MIN_WEEKS_FOR_DAY_OF_WEEK * 7 * DAY_SECONDS
        yesterday = self.same_time_yesterday
        if yesterday is None:
            yesterday = history_seconds >= MIN_DAYS_FOR_YESTERDAY * DAY_SECONDS
        base = FEATURES if dow else (RATE_FEATURE, *TIME_OF_DAY_FEATURES)
        return (*base, YESTERDAY_FEATURE) if yesterday else base

    def __post_init__(self) -> None:
        for name in ("window", "horizon", "hidden_size", "epochs", "batch_size", "num_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"lstm {name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) \
                or not 0 <= self.seed <= MAX_SEED:
            raise InvalidInputError(f"lstm seed must be an integer from 0 to {MAX_SEED}, "
                                    f"got {self.seed!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidInputError(f"lstm learning rate must be positive, "
                                    f"got {self.learning_rate!r}")
        if not (0 < self.validation_fraction < 1):
            raise InvalidInputError(f"lstm validation fraction must be in (0, 1), "
                                    f"got {self.validation_fraction!r}")


@dataclass(frozen=True)
class EpochProgress:
    """Passed to the progress callback after every epoch (losses: MSE, scaled relative log)."""

    epoch: int
    epochs: int
    train_loss: float
    validation_loss: float


ProgressCallback = Callable[[EpochProgress], None]


@dataclass(frozen=True)
class ValidationReport:
    """Errors on the held-out tail of the training history.

    Every origin whose full horizon lies in ``[start_seconds, end_seconds)`` is forecast by
    the model and both baselines from the history before it; WAPE is over all origins and
    steps, in req/s. ``None`` where a baseline could not be computed (seasonal naive needs a
    day of history before the first origin) or the actuals are all zero.
    """

    start_seconds: float
    end_seconds: float
    origins: int
    wape_lstm: float | None
    wape_seasonal_naive: float | None
    wape_moving_average: float | None


@dataclass(frozen=True)
class LSTMMetadata:
    """What ``metadata.json`` holds; see :meth:`to_json` for the file's layout."""

    window: int
    horizon: int
    step_seconds: float
    hidden_size: int
    features: tuple[str, ...]
    anchor_steps: int
    #: ``b / level`` in the relative log transform (see :data:`LEVEL_OFFSET`).
    level_offset: float
    #: The relative log values are divided by this (their std over the training span).
    scale: float
    training_start_seconds: float
    training_end_seconds: float
    training_points: int
    epochs: int
    batch_size: int
    learning_rate: float
    validation_fraction: float
    seed: int
    final_train_loss: float
    final_validation_loss: float
    validation: ValidationReport
    quantile_probabilities: tuple[float, ...]
    #: ``residual_quantiles[h][j]``: quantile ``quantile_probabilities[j]`` of the residual
    #: (actual - forecast, in the scaled relative log space) ``h + 1`` steps ahead.
    residual_quantiles: tuple[tuple[float, ...], ...]

    @property
    def uses_yesterday(self) -> bool:
        return YESTERDAY_FEATURE in self.features

    @property
    def day_steps(self) -> int:
        """Steps in one day (the lag of the same-time-yesterday input)."""
        return round(DAY_SECONDS / self.step_seconds)

    @property
    def lookback(self) -> int:
        """Samples a forecast reads: the window, plus one day minus the horizon (plus
        :data:`YESTERDAY_HALF_WIDTH`) with the same-time-yesterday input (its first value
        lies that far before the window)."""
        return lookback(self.window, self.horizon, self.step_seconds, self.uses_yesterday)

    def to_json(self) -> dict[str, Any]:
        v = self.validation
        return {
            "format_version": FORMAT_VERSION,
            "model": "lstm",
            "window": self.window,
            "horizon": self.horizon,
            "step_seconds": self.step_seconds,
            "features": list(self.features),
            "hidden_size": self.hidden_size,
            "anchor_steps": self.anchor_steps,
            "normalisation": {"transform": "log_relative", "anchor": "mean_rate",
                              "level_offset": self.level_offset, "scale": self.scale},
            "training": {
                "start": iso_utc(self.training_start_seconds),
                "end": iso_utc(self.training_end_seconds),
                "points": self.training_points,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
                "validation_fraction": self.validation_fraction,
                "seed": self.seed,
                "final_train_loss": self.final_train_loss,
                "final_validation_loss": self.final_validation_loss,
            },
            "validation": {
                "start": iso_utc(v.start_seconds),
                "end": iso_utc(v.end_seconds),
                "origins": v.origins,
                "wape": {"lstm": v.wape_lstm, "seasonal_naive": v.wape_seasonal_naive,
                         f"moving_average_{MOVING_AVERAGE_WINDOW}": v.wape_moving_average},
            },
            "residual_quantiles": {
                "space": "scaled log rate relative to the anchor level",
                "probabilities": list(self.quantile_probabilities),
                "per_step": [list(row) for row in self.residual_quantiles],
            },
        }

    @classmethod
    def from_json(cls, raw: object, *, source: str) -> LSTMMetadata:
        """Parse and check ``metadata.json``; anything off is ``ArtifactCorrupt``."""
        r = _Reader(raw, source)
        version = r.integer("format_version")
        if version == 1:
            # Version 1 standardised the absolute log rate with the training span's mean and
            # std; its weights mean nothing under the relative inputs of version 2.
            raise ArtifactError(f"{source}: format version 1 (inputs scaled by the training "
                                f"span's absolute traffic level) is no longer read; this "
                                f"forescale reads version {FORMAT_VERSION} (inputs relative "
                                f"to the recent level): retrain it with `forescale train`",
                                reason="ArtifactMismatch")
        if version != FORMAT_VERSION:
            raise ArtifactError(f"{source}: unknown format version {version} "
                                f"(this forescale reads {FORMAT_VERSION})",
                                reason="ArtifactCorrupt")
        if r.text("model") != "lstm":
            raise ArtifactError(f"{source}: not an lstm artifact", reason="ArtifactCorrupt")
        norm, training, validation = r.sub("normalisation"), r.sub("training"), r.sub("validation")
        quantiles, wapes = r.sub("residual_quantiles"), r.sub("validation").sub("wape")
        if (norm.text("transform"), norm.text("anchor")) != ("log_relative", "mean_rate"):
            raise ArtifactError(f"{source}: unknown normalisation {norm.text('transform')!r}",
                                reason="ArtifactCorrupt")
        meta = cls(
            window=r.integer("window"), horizon=r.integer("horizon"),
            step_seconds=r.number("step_seconds"), hidden_size=r.integer("hidden_size"),
            features=tuple(r.texts("features")), anchor_steps=r.integer("anchor_steps"),
            level_offset=norm.number("level_offset"), scale=norm.number("scale"),
            training_start_seconds=training.time("start"),
            training_end_seconds=training.time("end"), training_points=training.integer("points"),
            epochs=training.integer("epochs"), batch_size=training.integer("batch_size"),
            learning_rate=training.number("learning_rate"),
            validation_fraction=training.number("validation_fraction"),
            seed=training.integer("seed"), final_train_loss=training.number("final_train_loss"),
            final_validation_loss=training.number("final_validation_loss"),
            validation=ValidationReport(
                start_seconds=validation.time("start"), end_seconds=validation.time("end"),
                origins=validation.integer("origins"), wape_lstm=wapes.opt_number("lstm"),
                wape_seasonal_naive=wapes.opt_number("seasonal_naive"),
                wape_moving_average=wapes.opt_number(f"moving_average_{MOVING_AVERAGE_WINDOW}")),
            quantile_probabilities=tuple(quantiles.numbers("probabilities")),
            residual_quantiles=tuple(tuple(row) for row in quantiles.number_table("per_step")),
        )
        meta._check(source)
        return meta

    def _check(self, source: str) -> None:
        def bad(why: str) -> ArtifactError:
            return ArtifactError(f"{source}: inconsistent metadata: {why}",
                                 reason="ArtifactCorrupt")

        if min(self.window, self.horizon, self.hidden_size, self.anchor_steps) < 1:
            raise bad("window, horizon, hidden_size and anchor_steps must be positive")
        if self.anchor_steps > self.window:
            raise bad("anchor_steps exceeds the window")
        if not (self.step_seconds > 0 and self.scale > 0 and self.level_offset > 0):
            raise bad("step_seconds and the normalisation scale and level offset must be "
                      "positive")
        if self.uses_yesterday and not _whole_day(self.step_seconds, self.horizon):
            raise bad(f"the same-time-yesterday input needs a step that divides a day into "
                      f"more than the horizon, got {self.step_seconds:g}s and "
                      f"{self.horizon} steps")
        if self.features not in _KNOWN_FEATURE_SETS:
            raise bad(f"features {list(self.features)} are not a set this forescale "
                      f"computes ({' or '.join(str(list(f)) for f in _KNOWN_FEATURE_SETS)})")
        probs = np.asarray(self.quantile_probabilities)
        if probs.size < 2 or not (np.all(np.diff(probs) > 0) and probs[0] > 0
                                  and probs[-1] < 1):
            raise bad("residual quantile probabilities must increase within (0, 1)")
        table = np.asarray(self.residual_quantiles, dtype=np.float64)
        if table.shape != (self.horizon, probs.size):
            raise bad(f"residual quantiles have shape {table.shape}, expected "
                      f"({self.horizon}, {probs.size})")
        if not np.all(np.isfinite(table)) or np.any(np.diff(table, axis=1) < 0):
            raise bad("residual quantiles must be finite and non-decreasing")


class LSTMForecaster(Forecaster):
    """Applies a trained LSTM to the last ``window`` samples of any history at its step.

    Normalisation is relative to the window's own recent level: each rate enters as
    ``log((rate + b) / (level + b))``, ``level`` the mean rate of the last
    :data:`ANCHOR_STEPS` samples and ``b`` a small fraction of it (:data:`LEVEL_OFFSET`,
    which keeps zero-traffic minutes finite), divided by a scale from the training span.
    Traffic is multiplicative (a peak is a multiple of the night, and so is its noise), and
    this makes the input depend only on rate / level: format 1 standardised the absolute
    log rate with the training span's mean and std, so a model trained on quiet weeks saw
    inputs far outside its training range when traffic grew tenfold (the World Cup 1998
    tournament: 69 % of 5-minute means within 10 %, against 83 % with relative inputs).
    The net predicts in the same relative space and is trained with squared error there,
    so the point forecast is closer to the conditional median than the mean of the rate (a
    slight low bias on spikes, which the upper bound covers).

    Intervals come from validation residuals, not from a distributional assumption: for
    every horizon step the empirical quantiles of (actual - forecast) on the held-out tail
    are stored, in the scaled relative log space. That space is chosen because its residuals are
    close to homoscedastic: the same quantile means "x % above the forecast", so one table
    gives wide intervals at the peak and narrow ones at night, which a table in req/s could
    not. A level ``L`` takes the ``(1 - L) / 2`` and ``(1 + L) / 2`` quantiles (interpolated
    on the stored grid, clamped at its ends: 0.005 and 0.995), adds them to the forecast and
    transforms back; lower bounds are clipped at 0 and never exceed the mean.
    """

    name = "lstm"

    def __init__(self, config: LSTMConfig | None = None, *,
                 progress: ProgressCallback | None = None) -> None:
        super().__init__()
        self.config = config or LSTMConfig()
        self._progress = progress
        self._net: torch.nn.Module | None = None
        self._meta: LSTMMetadata | None = None
        self._quantiles: FloatArray = np.zeros((0, 0))
        self._probabilities: FloatArray = np.zeros(0)
        #: SHA-256 of the artifact's files when loaded from one (None: trained here): what
        #: the plan's records know the model by, so that a new artifact is judged on its
        #: own record after a restart too, and identical files re-synced are the same model.
        self.artifact_digest: str | None = None

    # -- the contract -----------------------------------------------------------------------

    @property
    def min_history(self) -> int:
        """The window, plus one day minus the horizon with the same-time-yesterday input.

        Before a model is trained or loaded the step is unknown, so this is the window."""
        return self._meta.lookback if self._meta is not None else self.config.window

    @property
    def metadata(self) -> LSTMMetadata:
        if self._meta is None:
            raise ArtifactError("lstm forecaster has no trained model yet; fit or load one",
                                reason="ArtifactMissing")
        return self._meta

    @property
    def window(self) -> int:
        """Samples of recent history the net sees (its sequence length)."""
        return self._meta.window if self._meta is not None else self.config.window

    @property
    def horizon(self) -> int:
        """The trained horizon: the longest forecast this model makes."""
        return self._meta.horizon if self._meta is not None else self.config.horizon

    def check_compatible(self, history: Series, horizon: int) -> None:
        """Raise ``ArtifactMismatch`` unless this model can forecast ``horizon`` steps
        after ``history``: the same step as trained, and no more steps than trained."""
        meta = self.metadata
        check_horizon(horizon)
        if not math.isclose(history.step_seconds, meta.step_seconds, rel_tol=1e-9):
            raise ArtifactError(
                f"lstm model was trained at a {meta.step_seconds:g}s step, the series has "
                f"{history.step_seconds:g}s", reason="ArtifactMismatch")
        if horizon > meta.horizon:
            raise ArtifactError(
                f"lstm model was trained for {meta.horizon} steps ahead, {horizon} requested",
                reason="ArtifactMismatch")

    def _check_history(self, history: Series) -> None:
        meta = self._meta
        if meta is not None and meta.uses_yesterday and len(history) < meta.lookback:
            raise InvalidInputError(
                f"lstm needs at least {meta.lookback} samples of history: its "
                f"{meta.window}-sample window plus one day ({meta.day_steps} steps) minus "
                f"the {meta.horizon}-step horizon plus {YESTERDAY_HALF_WIDTH}, for its "
                f"same-time-yesterday input; got {len(history)}")
        super()._check_history(history)

    def forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        # A mismatched artifact is an artifact problem (the chain falls back and the status
        # says "retrain"), not bad input, so it is checked before the base class's checks.
        if self._meta is not None:
            self.check_compatible(history, horizon)
        return super().forecast(history, horizon, level)

    def _fit(self, history: Series) -> None:
        # Installed only once trained: a refit that fails leaves the previous model serving.
        net, meta = _train(history, self.config, self._progress)
        self._install(net, meta)

    def _forecast(self, history: Series, horizon: int, level: float) -> Forecast:
        import torch

        meta, net = self.metadata, self._net
        assert net is not None  # set together with the metadata
        n = len(history)
        timestamps = history.start_seconds + history.step_seconds * np.arange(
            n - meta.window, n, dtype=np.float64)
        yesterday = (_yesterday_rates(history.values, np.arange(n - meta.window, n)[None],
                                      meta) if meta.uses_yesterday else None)
        x, anchor = _inputs(history.values[None, n - meta.window:],
                            _calendar(timestamps)[None], meta, yesterday=yesterday)
        with torch.inference_mode():
            z = net(torch.from_numpy(x)).numpy()[0, :horizon].astype(np.float64)
        q_lo, q_hi = self._interval_offsets(level)
        mean = _to_rate(z, anchor[0], meta)
        lower = np.minimum(_to_rate(z + q_lo[:horizon], anchor[0], meta), mean)
        upper = np.maximum(_to_rate(z + q_hi[:horizon], anchor[0], meta), mean)
        return Forecast(self.name, history.end_seconds, history.step_seconds, mean, lower,
                        upper, level)

    # -- artifact ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], *,
             documents: Mapping[str, str] | None = None) -> Path:
        """Write ``weights.pt`` and ``metadata.json`` into directory ``path`` (created),
        and ``documents`` (file name → text, such as the model card) beside them.

        A failed save leaves the artifact that was there as it was, never new weights
        beside old metadata (which, with the same shapes, would load and forecast with the
        wrong normalisation) or an old model card beside new weights: every file is written
        in full beside its final name first, and only then renamed into place, the old
        weights kept under another name until the new metadata is in. A reader between the
        renames may still see the pair half swapped; the second rename changes the files'
        fingerprint, so the chain loads the artifact again at its next forecast."""
        import torch

        meta, net = self.metadata, self._net
        assert net is not None
        text = json.dumps(meta.to_json(), indent=2, allow_nan=False) + "\n"
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        weights, metadata = directory / WEIGHTS_FILE, directory / METADATA_FILE
        tmp_weights = directory / f".{WEIGHTS_FILE}.tmp"
        tmp_meta = directory / f".{METADATA_FILE}.tmp"
        old_weights = directory / f".{WEIGHTS_FILE}.old"
        docs = {directory / name: text for name, text in (documents or {}).items()}
        if any(d.parent != directory or d.name in (WEIGHTS_FILE, METADATA_FILE)
               for d in docs):
            raise ValueError(f"documents must be other plain file names: {list(docs)}")
        tmp_docs = {d: d.with_name(f".{d.name}.tmp") for d in docs}
        # Serialised in memory, then written: torch.save reports a full disk as a
        # RuntimeError, a write as the OSError ("No space left on device") it is.
        serialised = io.BytesIO()
        torch.save(net.state_dict(), serialised)
        try:
            tmp_weights.write_bytes(serialised.getvalue())
            tmp_meta.write_text(text, encoding="utf-8")
            for doc, tmp in tmp_docs.items():
                tmp.write_text(docs[doc], encoding="utf-8")
            old_weights.unlink(missing_ok=True)
            kept = _link_if_exists(weights, old_weights)
            os.replace(tmp_weights, weights)
            try:
                os.replace(tmp_meta, metadata)
            except OSError:
                if kept:
                    os.replace(old_weights, weights)
                else:  # no old weights to put back: none rather than unmatched ones
                    weights.unlink(missing_ok=True)
                raise
            for doc, tmp in tmp_docs.items():
                os.replace(tmp, doc)
        finally:
            for leftover in (tmp_weights, tmp_meta, old_weights, *tmp_docs.values()):
                leftover.unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LSTMForecaster:
        """Load an artifact written by :meth:`save`; raises :class:`ArtifactError`."""
        directory = Path(path)
        if not directory.is_dir():
            raise ArtifactError(f"lstm artifact {directory}: no such directory",
                                reason="ArtifactMissing")
        for name in (METADATA_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise ArtifactError(f"lstm artifact {directory}: {name} is missing",
                                    reason="ArtifactMissing")
        source = f"lstm artifact {directory}"
        # Each file is read once: the model is built from these bytes and known by their
        # digest, so a retrain that lands meanwhile cannot lend the old model its digest
        # (and the new model the old one's track record).
        try:
            meta_bytes = (directory / METADATA_FILE).read_bytes()
            weights_bytes = (directory / WEIGHTS_FILE).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{source}: unreadable: {exc}",
                                reason="ArtifactCorrupt") from None
        try:
            raw = json.loads(meta_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"{source}: {METADATA_FILE} is unreadable: {exc}",
                                reason="ArtifactCorrupt") from None
        try:
            meta = LSTMMetadata.from_json(raw, source=source)
        except OverflowError as exc:  # an integer too large for a float (10**400)
            raise ArtifactError(f"{source}: {METADATA_FILE} holds a number out of range: "
                                f"{exc}", reason="ArtifactCorrupt") from None

        import torch

        try:
            state = torch.load(io.BytesIO(weights_bytes), map_location="cpu",
                               weights_only=True)
        # torch.load raises whatever its unpickler or zip reader hits (UnpicklingError,
        # RuntimeError, EOFError, BadZipFile...); every one of them means the file is bad.
        except Exception as exc:
            # Only the exception's type: torch's message advises loading with
            # weights_only=False, i.e. running whatever code the file holds. Never that.
            raise ArtifactError(f"{source}: {WEIGHTS_FILE} is unreadable "
                                f"({type(exc).__name__}: not a weights-only state_dict)",
                                reason="ArtifactCorrupt") from None
        if not isinstance(state, Mapping):
            raise ArtifactError(f"{source}: {WEIGHTS_FILE} does not hold a state_dict",
                                reason="ArtifactCorrupt")
        # Built on torch's meta device (no memory) and its shapes compared first: a
        # metadata.json claiming a hidden size of 10**6 must not have the operator allocate
        # terabytes to find out. Only then is memory given to it, for the weights to fill.
        try:
            with torch.device("meta"):
                net = _build_net(n_features=len(meta.features), hidden_size=meta.hidden_size,
                                 horizon=meta.horizon, anchor_steps=meta.anchor_steps)
        except (RuntimeError, ValueError, OverflowError) as exc:  # sizes past any tensor
            raise ArtifactError(f"{source}: {METADATA_FILE} describes no network torch can "
                                f"build: {' '.join(str(exc).split())[:200]}",
                                reason="ArtifactCorrupt") from None
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        found = {str(k): tuple(getattr(v, "shape", ())) for k, v in state.items()}
        if found != expected:
            wrong = sorted(k for k in {*expected, *found}
                           if expected.get(k) != found.get(k))
            raise ArtifactError(
                f"{source}: {WEIGHTS_FILE} does not match metadata.json: "
                + "; ".join(f"{k}: {found.get(k, 'missing')} where {expected.get(k, 'none')} "
                            f"is expected" for k in wrong[:3]), reason="ArtifactCorrupt")
        net = net.to_empty(device="cpu")
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()
            raise ArtifactError(f"{source}: {WEIGHTS_FILE} does not match metadata.json: "
                                f"{' '.join(line.strip() for line in first)}",
                                reason="ArtifactCorrupt") from None
        broken = [name for name, tensor in net.state_dict().items()
                  if not bool(torch.isfinite(tensor).all())]
        if broken:  # it would load and forecast NaN at every decision
            raise ArtifactError(f"{source}: {WEIGHTS_FILE} holds non-finite weights "
                                f"({', '.join(broken[:3])})", reason="ArtifactCorrupt")
        # The config it was trained with, so that fit() on newer data retrains alike.
        try:
            config = LSTMConfig(window=meta.window, horizon=meta.horizon,
                                hidden_size=meta.hidden_size, epochs=meta.epochs,
                                batch_size=meta.batch_size, learning_rate=meta.learning_rate,
                                validation_fraction=meta.validation_fraction, seed=meta.seed,
                                day_of_week=all(f in meta.features
                                                for f in DAY_OF_WEEK_FEATURES),
                                same_time_yesterday=meta.uses_yesterday)
        except InvalidInputError as exc:
            raise ArtifactError(f"{source}: inconsistent metadata: {exc}",
                                reason="ArtifactCorrupt") from None
        model = cls(config)
        model._install(net, meta)
        model.artifact_digest = _digest(meta_bytes, weights_bytes)
        return model

    # -- internals --------------------------------------------------------------------------

    def _install(self, net: torch.nn.Module, meta: LSTMMetadata) -> None:
        net.eval()
        self._net = net
        self._meta = meta
        self._probabilities = np.asarray(meta.quantile_probabilities, dtype=np.float64)
        self._quantiles = np.asarray(meta.residual_quantiles, dtype=np.float64)
        self._fitted = True
        self._step_seconds = meta.step_seconds

    def _interval_offsets(self, level: float) -> tuple[FloatArray, FloatArray]:
        """Residual quantiles (per step) for the central interval at ``level``."""
        level = check_level(level)
        return (_interpolate_columns(self._probabilities, self._quantiles, (1 - level) / 2),
                _interpolate_columns(self._probabilities, self._quantiles, (1 + level) / 2))


FileStamp = tuple[int, int, int, int] | None


def _link_if_exists(source: Path, link: Path) -> bool:
    """Hard-link ``source`` as ``link`` (a copy where the file system has no hard links);
    False when there is no ``source``."""
    try:
        os.link(source, link)
    except FileNotFoundError:
        return False
    except OSError:  # EPERM, EXDEV, ENOTSUP: vfat, some network and FUSE file systems
        shutil.copy2(source, link)
    return True


def _digest(meta_bytes: bytes, weights_bytes: bytes) -> str:
    """SHA-256 of metadata.json and weights.pt, as read to build the model."""
    h = hashlib.sha256()
    for content in (meta_bytes, weights_bytes):
        h.update(content)
    return h.hexdigest()[:16]


def artifact_fingerprint(path: str | os.PathLike[str]) -> tuple[FileStamp, ...]:
    """What the artifact's files are now: device, inode, size and modification time of
    each (following symlinks; None for a missing one). It changes whenever the artifact
    is retrained, replaced or mounted -- a ConfigMap update swaps the symlink its files
    point through, so they get new inodes -- and only then does the chain load it again.
    Two ``stat`` calls: cheap enough for every decision."""
    stamps: list[FileStamp] = []
    for name in (METADATA_FILE, WEIGHTS_FILE):
        try:
            st = os.stat(Path(path) / name)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def train_lstm(history: Series, *, epochs: int = LSTMConfig.epochs, seed: int = 0,
               window: int = 60, horizon: int = 15, hidden_size: int = 64,
               batch_size: int = LSTMConfig.batch_size,
               learning_rate: float = LSTMConfig.learning_rate,
               validation_fraction: float = LSTMConfig.validation_fraction,
               num_threads: int = 1, day_of_week: bool | None = None,
               same_time_yesterday: bool | None = LSTMConfig.same_time_yesterday,
               progress: ProgressCallback | None = None) -> LSTMForecaster:
    """Train an :class:`LSTMForecaster` on ``history`` (the last part held out)."""
    config = LSTMConfig(window=window, horizon=horizon, hidden_size=hidden_size, epochs=epochs,
                        batch_size=batch_size, learning_rate=learning_rate,
                        validation_fraction=validation_fraction, seed=seed,
                        num_threads=num_threads, day_of_week=day_of_week,
                        same_time_yesterday=same_time_yesterday)
    model = LSTMForecaster(config, progress=progress)
    model.fit(history)
    return model


def split_points(n: int, config: LSTMConfig) -> tuple[int, int]:
    """(training points, validation points) for a history of ``n`` samples.

    The validation tail holds at least one full horizon so that one origin can be scored.
    """
    n_val = max(round(n * config.validation_fraction), config.horizon)
    return n - n_val, n_val


def min_training_points(config: LSTMConfig, step_seconds: float = 60.0) -> int:
    """The shortest history :meth:`LSTMForecaster.fit` accepts with ``config`` at a step of
    ``step_seconds`` (which matters only with the same-time-yesterday input forced on: left
    to decide, a history too short for it is trained without it)."""
    return _min_points(config, lookback(config.window, config.horizon, step_seconds,
                                        config.same_time_yesterday is True))


def max_training_points(config: LSTMConfig) -> int:
    """The longest history :meth:`LSTMForecaster.fit` trains on with ``config``'s window
    (see :data:`MAX_WINDOW_VALUES`)."""
    return MAX_WINDOW_VALUES // config.window


def _min_points(config: LSTMConfig, first_origin: int) -> int:
    n = first_origin + config.horizon + MIN_TRAINING_WINDOWS
    while _training_windows(n, config, first_origin) < MIN_TRAINING_WINDOWS:
        n += 1
    return n


def lookback(window: int, horizon: int, step_seconds: float, yesterday: bool) -> int:
    """Samples one forecast reads (see :attr:`LSTMMetadata.lookback`)."""
    if not yesterday:
        return window
    return window + max(round(DAY_SECONDS / step_seconds) - horizon, 0) + YESTERDAY_HALF_WIDTH


def _training_windows(n: int, config: LSTMConfig, first_origin: int) -> int:
    n_train, _ = split_points(n, config)
    return n_train - first_origin - config.horizon + 1


def _whole_day(step_seconds: float, horizon: int) -> bool:
    """Whether a day is a whole number of steps, and longer than the horizon plus the half
    width of the mean (else "yesterday" at a forecast step would lie in the future)."""
    steps = DAY_SECONDS / step_seconds
    return (abs(steps - round(steps)) < 1e-9 * steps
            and round(steps) >= horizon + YESTERDAY_HALF_WIDTH + 1)


def _yesterday_rates(values: FloatArray, at: npt.NDArray[np.int_],
                     meta: LSTMMetadata) -> FloatArray:
    """For input steps at indices ``at``, the mean rate over the ``2 * YESTERDAY_HALF_WIDTH
    + 1`` steps centred one day before ``horizon`` steps after each."""
    centre = at + meta.horizon - meta.day_steps
    h = YESTERDAY_HALF_WIDTH
    if h == 0:
        return values[centre]
    csum = np.concatenate(([0.0], np.cumsum(values)))
    result: FloatArray = (csum[centre + h + 1] - csum[centre - h]) / (2 * h + 1)
    return result


# -- features and transforms -----------------------------------------------------------------


def _calendar(timestamps: FloatArray) -> FloatArray:
    """Time of day and day of week (UTC) as points on circles: midnight is next to 23:59.

    UTC rather than the service's local time: a time-zone offset is only a phase shift,
    which the net learns from the data it is trained on.
    """
    days = timestamps / DAY_SECONDS
    tod = 2.0 * np.pi * np.mod(days, 1.0)
    dow = 2.0 * np.pi * np.mod(days + _UNIX_EPOCH_WEEKDAY, 7.0) / 7.0
    return np.stack([np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)], axis=1)


def _anchor_level(windows: FloatArray, anchor_steps: int) -> FloatArray:
    """The anchor level of each window (rows): the mean rate of its last ``anchor_steps``."""
    result: FloatArray = windows[..., -anchor_steps:].mean(axis=-1)
    return result


def _relative(rates: FloatArray, anchor: FloatArray, level_offset: float) -> FloatArray:
    """``log((rate + b) / (anchor + b))`` per row, ``b = level_offset * anchor``, clipped."""
    b = (level_offset * anchor + _TINY)[..., None]
    result: FloatArray = np.clip(np.log((rates + b) / (anchor[..., None] + b)),
                                 -RELATIVE_CLIP, RELATIVE_CLIP)
    return result


def _inputs(windows: FloatArray, calendar: FloatArray, meta: LSTMMetadata, *,
            yesterday: FloatArray | None = None) -> tuple[npt.NDArray[np.float32], FloatArray]:
    """Net input ``(rows, window, features)`` and anchor levels ``(rows,)`` for windows of
    rates ``(rows, window)`` with their calendar columns ``(rows, window, >= calendar
    features)`` and, for a model with the same-time-yesterday input, the rates one day
    before ``horizon`` steps after each input step ``(rows, window)``."""
    anchor = _anchor_level(windows, meta.anchor_steps)
    n_calendar = len(meta.features) - 1 - int(meta.uses_yesterday)
    out = np.empty((*windows.shape, len(meta.features)), dtype=np.float32)
    out[..., 0] = _relative(windows, anchor, meta.level_offset) / meta.scale
    out[..., 1:1 + n_calendar] = calendar[..., :n_calendar]
    if meta.uses_yesterday:
        if yesterday is None or yesterday.shape != windows.shape:
            raise InvalidInputError("lstm same-time-yesterday input missing or misaligned "
                                    "with the window")
        # The same anchor and scale as the rate: yesterday's level relative to today's.
        out[..., -1] = _relative(yesterday, anchor, meta.level_offset) / meta.scale
    return out, anchor


def _to_rate(z: FloatArray, anchor: FloatArray | float, meta: LSTMMetadata) -> FloatArray:
    """Scaled relative log values back to rates (req/s) around ``anchor`` levels."""
    b = meta.level_offset * np.asarray(anchor) + _TINY
    result: FloatArray = np.maximum(np.exp(z * meta.scale) * (anchor + b) - b, 0.0)
    return result


def _interpolate_columns(probabilities: FloatArray, table: FloatArray, p: float) -> FloatArray:
    """Row-wise linear interpolation of ``table`` (rows: steps) at probability ``p``."""
    p = min(max(p, float(probabilities[0])), float(probabilities[-1]))
    j = int(np.clip(np.searchsorted(probabilities, p, side="right") - 1, 0,
                    probabilities.size - 2))
    w = (p - probabilities[j]) / (probabilities[j + 1] - probabilities[j])
    result: FloatArray = table[:, j] * (1.0 - w) + table[:, j + 1] * w
    return result


def iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# -- the net and its training ----------------------------------------------------------------


def _build_net(*, n_features: int, hidden_size: int, horizon: int,
               anchor_steps: int) -> torch.nn.Module:
    # Defined inside a function because it subclasses a torch class (lazy import).
    from torch import nn

    class LSTMNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(n_features, hidden_size, num_layers=1, batch_first=True)
            self.head = nn.Linear(hidden_size, horizon)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            anchor = x[:, -anchor_steps:, 0].mean(dim=1, keepdim=True)
            result: torch.Tensor = self.head(out[:, -1, :]) + anchor
            return result

    return LSTMNet()


@contextmanager
def _torch_training_scope(seed: int, num_threads: int) -> Iterator[None]:
    """Seeded and ``num_threads``-threaded; the caller's RNG and thread count restored.

    Training is deterministic without ``torch.use_deterministic_algorithms``: on the CPU,
    with the batches drawn from a seeded generator, every op used here (LSTM, linear, MSE,
    Adam, gathering windows by index) has one implementation whose result depends only on
    its inputs and the thread count, which is fixed here. That call is also avoided because
    it imports torch's compiler stack (torch._dynamo, ~5 s, 14 s on a loaded machine).
    """
    import torch

    threads = torch.get_num_threads()
    # fork_rng: seeding must not change the random stream of whoever else uses torch.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _train(history: Series, config: LSTMConfig,
           progress: ProgressCallback | None) -> tuple[torch.nn.Module, LSTMMetadata]:
    import torch

    n = len(history)
    if n > max_training_points(config):
        raise InvalidInputError(
            f"lstm training with window {config.window} on {n:,} samples would hold "
            f"{n * config.window:,} window values at once (at most {MAX_WINDOW_VALUES:,}); "
            f"use a shorter window or at most {max_training_points(config):,} samples")
    features = config.features_for(history.end_seconds - history.start_seconds)
    yesterday = YESTERDAY_FEATURE in features
    step = history.step_seconds
    first = lookback(config.window, config.horizon, step, yesterday)
    if yesterday and config.same_time_yesterday is None and not (
            _whole_day(step, config.horizon)
            and _training_windows(n, config, first) >= MIN_TRAINING_WINDOWS):
        # Left to decide: a span too short (or a step that does not divide a day) goes
        # without the lag rather than failing.
        features = features[:-1]
        yesterday, first = False, config.window
    if yesterday and not _whole_day(step, config.horizon):
        raise InvalidInputError(f"lstm same-time-yesterday input needs a step that divides "
                                f"a day into more than the horizon ({config.horizon} "
                                f"steps), the series has {step:g}s")
    if _training_windows(n, config, first) < MIN_TRAINING_WINDOWS:
        needed = _min_points(config, first)
        extra = (" plus one day minus the horizon for the same-time-yesterday input"
                 if yesterday else "")
        raise InvalidInputError(
            f"lstm needs at least {needed} samples to train with window "
            f"{config.window}{extra}, horizon {config.horizon} and "
            f"{config.validation_fraction:.0%} held out for validation, got {n}")
    n_train, _ = split_points(n, config)
    values = history.values
    anchor_steps = min(ANCHOR_STEPS, config.window)
    train_origins = np.arange(first, n_train - config.horizon + 1)
    val_origins = np.arange(n_train, n - config.horizon + 1)
    in_offsets = np.arange(-config.window, 0)
    out_offsets = np.arange(config.horizon)
    # The scale from the training span only: the validation score must not peek at it.
    windows = values[train_origins[:, None] + in_offsets]
    unscaled = _relative(windows, _anchor_level(windows, anchor_steps), LEVEL_OFFSET)
    scale = float(unscaled.std())
    del windows, unscaled
    if not scale > 1e-9:
        raise InvalidInputError("lstm cannot learn from a constant training series")
    if not np.nansum(values[n_train:]) > 0:
        # Its residuals there are all ~0: the artifact's 90 % interval came out ±2 %, and
        # served on real traffic covered 3 % of it (found by an audit).
        raise InvalidInputError(
            f"lstm validation range (the last {config.validation_fraction:.0%} of the "
            f"series, {n - n_train} samples) has no traffic: its intervals cannot be "
            f"calibrated there; train on a span whose end is not silent")
    # Losses, validation and intervals are filled in once trained.
    meta = LSTMMetadata(
        window=config.window, horizon=config.horizon, step_seconds=history.step_seconds,
        hidden_size=config.hidden_size,
        features=features,
        anchor_steps=anchor_steps, level_offset=LEVEL_OFFSET, scale=scale,
        training_start_seconds=history.start_seconds,
        training_end_seconds=history.end_seconds, training_points=n, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        validation_fraction=config.validation_fraction, seed=config.seed,
        final_train_loss=math.nan, final_validation_loss=math.nan,
        validation=ValidationReport(start_seconds=math.nan, end_seconds=math.nan, origins=0,
                                    wape_lstm=None, wape_seasonal_naive=None,
                                    wape_moving_average=None),
        quantile_probabilities=QUANTILE_PROBABILITIES, residual_quantiles=())
    calendar = _calendar(history.timestamps())

    def windows_at(origins: npt.NDArray[np.int_]) -> tuple[npt.NDArray[np.float32], FloatArray,
                                                            FloatArray]:
        """Net input, scaled relative targets and anchor levels for forecast origins."""
        at = origins[:, None] + in_offsets
        x, anchor = _inputs(values[at], calendar[at], meta,
                            yesterday=_yesterday_rates(values, at, meta) if yesterday else None)
        target = _relative(values[origins[:, None] + out_offsets], anchor,
                           meta.level_offset) / meta.scale
        return x, target, anchor

    with _torch_training_scope(config.seed, config.num_threads):

        def batch(origins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, target, _ = windows_at(origins.numpy())
            return torch.from_numpy(x), torch.from_numpy(target.astype(np.float32))

        net = _build_net(n_features=len(meta.features), hidden_size=config.hidden_size,
                         horizon=config.horizon, anchor_steps=anchor_steps)
        optimiser = _Adam(list(net.parameters()))
        total_steps = config.epochs * math.ceil(train_origins.size / config.batch_size)
        loss_fn = torch.nn.MSELoss()
        shuffler = torch.Generator().manual_seed(config.seed)
        train_t = torch.from_numpy(train_origins)
        val_t = torch.from_numpy(val_origins)
        train_loss = val_loss = float("nan")
        for epoch in range(1, config.epochs + 1):
            net.train()
            order = train_t[torch.randperm(train_t.numel(), generator=shuffler)]
            total = 0.0
            for start in range(0, order.numel(), config.batch_size):
                chunk = order[start:start + config.batch_size]
                x, y = batch(chunk)
                optimiser.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                # Cosine decay to a tenth: a fixed schedule (no early stopping on the
                # validation tail) keeps that tail an honest out-of-sample score.
                progress_share = optimiser.steps / total_steps
                optimiser.step(lr=config.learning_rate
                               * (0.1 + 0.45 * (1 + math.cos(math.pi * progress_share))))
                total += float(loss.item()) * chunk.numel()
            train_loss = total / train_t.numel()
            net.eval()
            z_val = _predict(net, batch, val_t)
            val_loss = float(np.mean((z_val - batch(val_t)[1].numpy()) ** 2))
            if progress is not None:
                progress(EpochProgress(epoch, config.epochs, train_loss, val_loss))
        z_pred = _predict(net, batch, val_t)
    if not (math.isfinite(train_loss) and np.all(np.isfinite(z_pred))):
        raise InvalidInputError("lstm training diverged (non-finite loss); try a lower "
                                "learning rate")

    _, z_actual, val_anchor = windows_at(val_origins)
    residuals = z_actual.astype(np.float32).astype(np.float64) - z_pred
    quantiles = np.quantile(residuals, QUANTILE_PROBABILITIES, axis=0).T  # (horizon, probs)
    report = validation_report(history, n_train=n_train, horizon=config.horizon,
                               lstm_predictions=_to_rate(z_pred, val_anchor[:, None], meta))
    return net, replace(
        meta, final_train_loss=train_loss, final_validation_loss=val_loss, validation=report,
        residual_quantiles=tuple(tuple(float(q) for q in row) for row in quantiles))


class _Adam:
    """Adam (Kingma and Ba) with the gradient norm clipped at ``max_norm``.

    torch.optim.Adam computes the same, but constructing any torch optimiser imports torch's
    compiler stack (torch._dynamo: ~4 s, over 10 s on a loaded machine) for nothing here:
    a CLI run, a backtest or a test that trains would pay it every time.
    """

    def __init__(self, params: list[torch.nn.Parameter], *, betas: tuple[float, float] = (
            0.9, 0.999), eps: float = 1e-8, max_norm: float = 1.0) -> None:
        import torch

        self.params = params
        self.betas, self.eps, self.max_norm = betas, eps, max_norm
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, *, lr: float) -> None:
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            # Clipping keeps a burst in the data from throwing the LSTM's gates off.
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
            scale = min(1.0, self.max_norm / (norm + 1e-6))
            self.steps += 1
            b1, b2 = self.betas
            c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
            for p, grad, m, v in zip(self.params, grads, self.m, self.v, strict=True):
                g = grad * scale
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


def _predict(net: torch.nn.Module,
             batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
             origins: torch.Tensor, chunk: int = 2048) -> FloatArray:
    import torch

    parts: list[npt.NDArray[np.float32]] = []
    with torch.inference_mode():
        for start in range(0, origins.numel(), chunk):
            parts.append(net(batch(origins[start:start + chunk])[0]).numpy())
    return np.concatenate(parts).astype(np.float64)


def validation_report(history: Series, *, n_train: int, horizon: int,
                      lstm_predictions: FloatArray | None) -> ValidationReport:
    """Score forecasts from every origin in ``[n_train, len(history) - horizon]``.

    ``lstm_predictions[i]`` is the forecast (req/s) from the ``i``-th origin. The baselines
    are computed here from ``history`` alone: seasonal naive through
    :class:`SeasonalNaive` (fitted on the training span), the moving average as the mean of
    the last :data:`MOVING_AVERAGE_WINDOW` samples held flat over the horizon.
    """
    values = history.values
    origins = np.arange(n_train, len(history) - horizon + 1)
    actual = values[origins[:, None] + np.arange(horizon)]
    csum = np.concatenate([[0.0], np.cumsum(values)])
    k = MOVING_AVERAGE_WINDOW
    ma = (csum[origins] - csum[origins - k]) / k
    seasonal = _seasonal_naive_predictions(history, n_train, origins, horizon)
    return ValidationReport(
        start_seconds=history.start_seconds + n_train * history.step_seconds,
        end_seconds=history.end_seconds,
        origins=int(origins.size),
        wape_lstm=(None if lstm_predictions is None
                   else _finite_or_none(wape(actual, lstm_predictions))),
        wape_seasonal_naive=(None if seasonal is None
                             else _finite_or_none(wape(actual, seasonal))),
        wape_moving_average=_finite_or_none(wape(actual, np.repeat(ma[:, None], horizon,
                                                                   axis=1))),
    )


def _seasonal_naive_predictions(history: Series, n_train: int, origins: npt.NDArray[np.int_],
                                horizon: int) -> FloatArray | None:
    season = round(DAY_SECONDS / history.step_seconds)
    if n_train < season + 1:
        return None
    model = SeasonalNaive().fit(history.head(n_train))
    return np.stack([model.forecast(history.head(int(o)), horizon, 0.5).mean for o in origins])


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- metadata parsing ------------------------------------------------------------------------


class _Reader:
    """Typed access to a JSON object; every problem is ``ArtifactCorrupt`` naming the key."""

    def __init__(self, raw: object, source: str, path: str = "") -> None:
        if not isinstance(raw, dict):
            raise ArtifactError(f"{source}: {path or 'metadata'} is not a JSON object",
                                reason="ArtifactCorrupt")
        self._raw: dict[str, object] = raw
        self._source = source
        self._path = path

    def _get(self, key: str) -> object:
        if key not in self._raw:
            raise self._bad(key, "is missing")
        return self._raw[key]

    def _bad(self, key: str, why: str) -> ArtifactError:
        return ArtifactError(f"{self._source}: {METADATA_FILE} key "
                             f"{self._path}{key!s} {why}", reason="ArtifactCorrupt")

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key), self._source, f"{self._path}{key}.")

    def integer(self, key: str) -> int:
        v = self._get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise self._bad(key, f"must be an integer, got {v!r}")
        return v

    def number(self, key: str) -> float:
        v = self._get(key)
        if not isinstance(v, int | float) or isinstance(v, bool) or not _finite(v):
            raise self._bad(key, f"must be a finite number, got {v!r}")
        return float(v)

    def opt_number(self, key: str) -> float | None:
        return None if self._get(key) is None else self.number(key)

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._bad(key, f"must be a string, got {v!r}")
        return v

    def time(self, key: str) -> float:
        text = self.text(key)
        try:
            return _parse_iso(text)
        except ValueError:
            raise self._bad(key, f"is not an ISO-8601 timestamp: {text!r}") from None

    def texts(self, key: str) -> list[str]:
        v = self._get(key)
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise self._bad(key, "must be a list of strings")
        return list(v)

    def numbers(self, key: str) -> list[float]:
        return _floats(self._get(key), lambda why: self._bad(key, why))

    def number_table(self, key: str) -> list[list[float]]:
        v = self._get(key)
        if not isinstance(v, list):
            raise self._bad(key, "must be a list of lists of numbers")
        return [_floats(row, lambda why: self._bad(key, why)) for row in v]


def _finite(v: float) -> bool:
    """Whether ``v`` is a finite float (an int too large for one, 10**400, is not)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _floats(v: object, bad: Callable[[str], ArtifactError]) -> list[float]:
    if not isinstance(v, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and
            (isinstance(x, float) or _finite(x)) for x in v):
        raise bad("must be a list of numbers")
    items: Sequence[float] = v
    return [float(x) for x in items]
