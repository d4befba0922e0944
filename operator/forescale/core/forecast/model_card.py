"""The model card written next to an LSTM artifact: what it learnt from, and how good it is.

Everything on the card comes from the artifact's metadata (which :func:`train` measured on
the held-out tail), so a card can be regenerated from the artifact alone and a test can
check its numbers against the trace. Nothing on it depends on the clock or the machine, so
retraining with the same data and seed rewrites the same card.
"""

from __future__ import annotations

import os
from pathlib import Path

from forescale.core.forecast.lstm import (
    DAY_OF_WEEK_FEATURES,
    MIN_WEEKS_FOR_DAY_OF_WEEK,
    MOVING_AVERAGE_WINDOW,
    YESTERDAY_FEATURE,
    YESTERDAY_HALF_WIDTH,
    LSTMForecaster,
    LSTMMetadata,
    iso_utc,
)

MODEL_CARD_FILE = "MODEL_CARD.md"

#: A relative WAPE difference below this is reported as a tie: a few thousand overlapping
#: forecasts of a noisy minute series do not resolve a 1 % difference.
_ON_PAR = 0.01


def render_model_card(model: LSTMForecaster, *, name: str, trace_name: str, trace_path: str,
                      command: str | None = None) -> str:
    """The Markdown text of the card for a fitted or loaded ``model``.

    ``name`` is the artifact's name (its directory), ``trace_name``/``trace_path`` say where
    the training data came from, ``command`` (optional) how to reproduce the artifact.
    """
    m = model.metadata
    v = m.validation
    step = m.step_seconds
    days = (m.training_end_seconds - m.training_start_seconds) / 86400.0
    val_points = round((v.end_seconds - v.start_seconds) / step)
    dow = all(f in m.features for f in DAY_OF_WEEK_FEATURES)
    lines = [
        f"# Model card: `{name}` (forescale LSTM forecaster)",
        "",
        "## Data",
        "",
        f"- Trace: `{trace_name}` (`{trace_path}`), request counts per interval turned "
        "into arrival rates (req/s).",
        f"- Trained on **{iso_utc(m.training_start_seconds)} to {iso_utc(m.training_end_seconds)} "
        f"only**: {m.training_points:,} points at a {step:g} s step ({days:.1f} days). "
        "Nothing after the end of that range was seen in training or validation.",
        f"- Validation: the last {m.validation_fraction:.0%} of that range, "
        f"{iso_utc(v.start_seconds)} to {iso_utc(v.end_seconds)} ({val_points:,} points, "
        f"{v.origins:,} forecast origins), held out from training; the input scale comes "
        "from the training part alone.",
        "",
        "## Model",
        "",
        f"- Input: the last {m.window} samples ({_duration(m.window * step)}), each with "
        f"these features: {', '.join(f'`{f}`' for f in m.features)}. The rate is taken "
        f"relative to the window's recent level (the mean rate of its last {m.anchor_steps} "
        f"samples): `log((rate + b) / (level + b))` with `b = {m.level_offset:g} * level`, "
        f"divided by {m.scale:.6g} (its std on the training part). It depends only on "
        "rate / level, so the model applies unchanged at any traffic volume. The calendar "
        "features are sine/cosine of the UTC time stamps.",
        f"- Output: the next {m.horizon} steps ({_duration(m.horizon * step)}) at once, "
        "in the same relative space, as offsets from the mean of the last "
        f"{m.anchor_steps} inputs.",
        f"- Net: one LSTM layer with {m.hidden_size} hidden units and a linear head, "
        f"{_parameter_count(m):,} parameters.",
        "- Prediction interval: empirical quantiles of the validation residuals for each "
        "step ahead, in the same relative log space (so they scale with the level), "
        "interpolated to the requested level (levels above 0.99 get the 99 % interval); "
        "lower bounds are clipped at 0.",
    ]
    if YESTERDAY_FEATURE in m.features:
        lines.append(
            f"- `{YESTERDAY_FEATURE}` is the rate one day before the time {m.horizon} steps "
            f"after each input step (the mean of the {2 * YESTERDAY_HALF_WIDTH + 1} steps "
            f"centred there), relative to the same level and scale as the rate: the "
            f"last {m.horizon} input steps carry yesterday's rates at the forecast's own "
            f"target times. A forecast therefore reads {m.lookback:,} samples "
            f"({_duration(m.lookback * step)}): the window plus one day minus the horizon "
            f"plus {YESTERDAY_HALF_WIDTH}; a shorter history is refused.")
    if not dow:
        lines.append(
            f"- The day of week is not an input: the training range is shorter than "
            f"{MIN_WEEKS_FOR_DAY_OF_WEEK} weeks, too few for each weekday to be learnt "
            "rather than memorised.")
    lines += [
        "",
        "## Training",
        "",
        f"- {m.epochs} epochs, batch size {m.batch_size}, Adam with learning rate "
        f"{m.learning_rate:g} decayed (cosine) to a tenth, gradient norm clipped at 1, "
        "squared error in the scaled relative log space.",
        f"- Seed {m.seed}: retraining with the same data, settings, seed and torch thread "
        "count gives the same weights.",
        f"- Final loss (MSE in the scaled relative log space): training {m.final_train_loss:.4f}, "
        f"validation {m.final_validation_loss:.4f}.",
    ]
    if command:
        lines.append(f"- Reproduce with: `{command}`")
    lines += [
        "",
        "## Validation error",
        "",
        f"WAPE (sum of absolute errors / sum of actuals, lower is better) over every "
        f"{m.horizon}-step forecast from the {v.origins:,} origins in the validation range:",
        "",
        "| model | WAPE |",
        "|---|---|",
        f"| this LSTM | {_fmt(v.wape_lstm)} |",
        f"| seasonal naive (the value one day earlier) | {_fmt(v.wape_seasonal_naive)} |",
        f"| moving average of the last {MOVING_AVERAGE_WINDOW} samples | "
        f"{_fmt(v.wape_moving_average)} |",
        "",
        _verdict(v.wape_lstm, v.wape_seasonal_naive, "seasonal naive"),
        _verdict(v.wape_lstm, v.wape_moving_average,
                 f"the {MOVING_AVERAGE_WINDOW}-sample moving average"),
        "",
        "## Intended use",
        "",
        f"Forecasting the next {_duration(m.horizon * step)} or less of the arrival rate of "
        f"the service this trace comes from (or one with the same daily pattern, at any "
        f"volume), at a {step:g} s step, as the first stage of forescale's forecast chain; "
        "the plan provisions for the upper bound of its interval until enough of its "
        "forecasts are scored, then for a bound calibrated on their errors.",
        "",
        "## Limits",
        "",
        f"- Only for a {step:g} s step and at most {m.horizon} steps ahead: anything else "
        "is refused (`ArtifactMismatch`) and the chain falls back to the next model.",
        "- It has seen one trace over the range above. Growth alone does not need "
        "retraining (the input is relative to the recent level), but traffic that has moved "
        "in time or changed shape since then does; the chain's error gate hands over to "
        "the next model when its recent error is too high.",
        "- Events that are not in the last window (a launch, a sale, an outage) are not "
        "foreseen; the model follows a surge only once it shows in the input.",
        "- The validation range is the end of the training range, not later data, and the "
        "interval quantiles are calibrated on it alone; coverage on other periods may "
        "differ.",
        "",
    ]
    return "\n".join(lines)


def save_with_card(model: LSTMForecaster, directory: str | os.PathLike[str],
                   card: str) -> Path:
    """Save ``model``'s artifact into ``directory`` with ``card`` as its ``MODEL_CARD.md``,
    all or nothing (see :meth:`LSTMForecaster.save`): a failed save never leaves the old
    card beside new weights."""
    return model.save(directory, documents={MODEL_CARD_FILE: card})


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _verdict(model: float | None, baseline: float | None, baseline_name: str) -> str:
    if model is None or baseline is None:
        return f"- No comparison with {baseline_name}: it could not be scored on this range."
    if baseline == 0:  # a trace that repeats exactly: the baseline is perfect
        if model == 0:
            return f"- The LSTM is **on par with** {baseline_name}: both forecast perfectly."
        return (f"- The LSTM does **not** beat {baseline_name}, which forecasts this range "
                f"perfectly (WAPE 0; the LSTM's {model:.4f}).")
    change = model / baseline - 1
    direction = "lower" if change < 0 else "higher"
    if abs(change) < _ON_PAR:
        return (f"- The LSTM is **on par with** {baseline_name}: {abs(change):.1%} {direction} "
                "WAPE, too small a difference to call either better on this range.")
    if change < 0:
        return f"- The LSTM **beats** {baseline_name}: {-change:.1%} lower WAPE."
    return f"- The LSTM does **not** beat {baseline_name}: {change:.1%} higher WAPE."


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _parameter_count(m: LSTMMetadata) -> int:
    f, h = len(m.features), m.hidden_size
    lstm = 4 * h * (f + h) + 2 * 4 * h  # input and recurrent weights, two bias vectors
    return lstm + h * m.horizon + m.horizon
