"""``forescale forecast``: what the forecast chain would answer at a moment of a trace.

The history is the trace up to ``--at`` (never after it: no look-ahead) and at most
``historySeconds`` long, as the operator would read it from Prometheus; the chain is the
operator's own (:class:`forescale.core.forecast.chain.ForecastChain`). Where the trace goes
on past ``--at`` the table shows what actually happened beside the forecast, so a user can
see whether the forecast would have been any good.

Exit codes: 0 with a forecast, 1 when no stage could serve (the table or JSON still says
why), 2 for bad input.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Literal

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from forescale.cli.options import Duration, FiniteFloat
from forescale.core.errors import ForescaleError, InvalidInputError
from forescale.core.series import FloatArray, Series
from forescale.core.spec import MODEL_NAMES, ForecastSettings, ModelName
from forescale.core.window import history_steps
from forescale.trace import Trace, format_timestamp, load_trace, parse_timestamp

if TYPE_CHECKING:
    from forescale.core.forecast.chain import ChainResult

_DEFAULTS = ForecastSettings()
#: The most steps one forecast prints: a week of one-minute steps. A wrong unit letter
#: (15d for 15m) asked the moving average for 154 GiB at 10000d.
MAX_HORIZON_STEPS = 7 * 24 * 60


@click.command(name="forecast")
@click.option("--trace", "trace_path", required=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Trace CSV (timestamp,requests), e.g. traces/nasa_ksc_jul1995_1min.csv.")
@click.option("--at", "at", required=True,
              help="Forecast from this moment (ISO-8601 UTC or Unix seconds); the history "
                   "ends here.")
@click.option("--horizon", type=Duration(gt=0.0), required=True,
              help="How far ahead, e.g. 15m (rounded up to whole trace steps).")
@click.option("--model", type=click.Choice([*MODEL_NAMES, "chain"]), default="chain",
              show_default=True,
              help="One model alone, or the whole fallback chain (lstm → arima → ma).")
@click.option("--lstm-model", type=click.Path(exists=True, path_type=str), default=None,
              help="Directory of a trained LSTM artifact (forescale train).")
@click.option("--confidence", type=FiniteFloat(gt=0.0, lt=1.0),
              default=_DEFAULTS.confidence, show_default=True,
              help="Central prediction interval, in (0, 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the chain result as one JSON "
                                                      "object.")
def command(trace_path: str, at: str, horizon: float,
            model: Literal["lstm", "arima", "ma", "chain"], lstm_model: str | None,
            confidence: float, as_json: bool) -> None:
    """Forecast a trace's arrival rate after --at with the operator's model chain."""
    if model == "lstm" and lstm_model is None:
        raise click.UsageError("--model lstm needs --lstm-model PATH (a trained artifact; "
                               "see forescale train)")
    if model in ("arima", "ma") and lstm_model is not None:
        raise click.UsageError(f"--lstm-model is used only by --model lstm or chain, not "
                               f"--model {model}")
    # Imported here: statsmodels takes over a second to import, and --help or a usage
    # error should not wait for it.
    from forescale.core.forecast.chain import ForecastChain

    trace = load_trace(trace_path)
    at_seconds = parse_timestamp(at)
    history = _history(trace, at_seconds)
    steps = _horizon_steps(horizon, trace.step_seconds)
    models: tuple[ModelName, ...] = MODEL_NAMES if model == "chain" else (model,)
    settings = ForecastSettings(models=models, confidence=confidence, lstm_model=lstm_model)
    # No clock: the CLI shows what the models answer, with no wall-clock budget to race.
    result = ForecastChain(settings).forecast(history.tail(_window(settings, trace)), steps,
                                              now=at_seconds)
    if as_json:
        click.echo(json.dumps(result.to_dict(), allow_nan=False))
    else:
        Console(highlight=False).print(_table(result, trace))
        _print_stages(result)
    if result.forecast is None:
        # After the report: exit code 1 through the group, with the reason on stderr.
        raise ForescaleError(result.message)


def _history(trace: Trace, at_seconds: float) -> Series:
    rates = trace.rates
    first_end = rates.start_seconds + rates.step_seconds
    if not (first_end <= at_seconds <= rates.end_seconds):
        raise InvalidInputError(
            f"--at {format_timestamp(at_seconds)} is outside the trace: it must be between "
            f"{format_timestamp(first_end)} and {format_timestamp(rates.end_seconds)}")
    return rates.until(at_seconds)


def _horizon_steps(horizon_seconds: float, step_seconds: float) -> int:
    if not horizon_seconds > 0:
        raise InvalidInputError(f"--horizon must be positive, got {horizon_seconds:g}s")
    # The small slack keeps 15m at a 60 s step at 15 steps despite float rounding.
    steps = max(1, math.ceil(horizon_seconds / step_seconds - 1e-9))
    if steps > MAX_HORIZON_STEPS:
        raise click.BadParameter(f"{horizon_seconds:g}s is {steps:,} steps of this "
                                 f"{step_seconds:g}s trace; at most {MAX_HORIZON_STEPS:,}",
                                 param_hint="--horizon")
    return steps


def _window(settings: ForecastSettings, trace: Trace) -> int:
    return history_steps(settings.history_seconds, trace.step_seconds)


def _table(result: ChainResult, trace: Trace) -> Table:
    fc = result.forecast
    if fc is None:
        return Table(title=f"no forecast ({result.reason})", title_justify="left")
    table = Table(title=f"forecast by {result.served_by}, {fc.level:.0%} interval (req/s)",
                  title_justify="left")
    for name in ("time (UTC)", "mean", "lower", "upper"):
        table.add_column(name, justify="left" if name.startswith("time") else "right")
    actual = _actual(trace, fc.start_seconds, fc.horizon)
    if actual is not None:
        table.add_column("actual", justify="right", style="dim")
    for i, t in enumerate(fc.timestamps()):
        row = [format_timestamp(float(t)), f"{fc.mean[i]:.3f}", f"{fc.lower[i]:.3f}",
               f"{fc.upper[i]:.3f}"]
        if actual is not None:
            row.append("" if math.isnan(actual[i]) else f"{actual[i]:.3f}")
        table.add_row(*row)
    return table


def _actual(trace: Trace, start_seconds: float, horizon: int) -> FloatArray | None:
    """What the trace says happened during the forecast (NaN past its end), if anything."""
    rates = trace.rates
    first = round((start_seconds - rates.start_seconds) / rates.step_seconds)
    if first >= len(rates):
        return None
    values = np.full(horizon, np.nan)
    shown = rates.values[first: first + horizon]
    values[: len(shown)] = shown
    return values


def _print_stages(result: ChainResult) -> None:
    click.echo(result.message)
    for stage in result.stages:
        click.echo(f"  {stage.model:<6} {stage.reason:<18} {stage.message}")
