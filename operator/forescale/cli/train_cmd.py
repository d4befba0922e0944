"""``forescale train``: train an LSTM artifact on a trace and write its model card.

The artifact directory gets ``weights.pt``, ``metadata.json`` and ``MODEL_CARD.md``. An
existing, non-empty ``--out`` is refused unless ``--force``: a trained model is never
replaced by accident. ``--out`` is checked before training (it or its nearest existing
parent must be a writable directory). Exit codes: 0 trained, 2 bad input (unreadable
trace, too short, ``--out`` taken or not writable).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from forescale.cli.files import check_output_directory
from forescale.cli.options import parse_duration
from forescale.core.errors import InvalidInputError, os_reason
from forescale.core.forecast.lstm import (  # torch-free until training runs
    MIN_DAYS_FOR_YESTERDAY,
    LSTMConfig,
)
from forescale.trace import format_timestamp, load_trace, parse_timestamp


def _yesterday_default() -> str:
    default = LSTMConfig.same_time_yesterday
    if default is None:
        return f"only with {MIN_DAYS_FOR_YESTERDAY} days of data or more"
    return "on" if default else "off"


@click.command(name="train")
@click.option("--trace", "trace_path", required=True,
              type=click.Path(dir_okay=False, path_type=str),
              help="Trace CSV (timestamp,requests), e.g. traces/nasa_ksc_jul1995_1min.csv.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Artifact directory to write, e.g. models/nasa-jul1995.")
# Upper bounds: a window of 10^12 samples once hung building training windows, and 10^8
# hidden units asked torch for 160 PB; the bounds are far above any useful model.
@click.option("--epochs", type=click.IntRange(min=1, max=10_000), default=LSTMConfig.epochs,
              show_default=True, help="Passes over the training windows.")
@click.option("--window", type=click.IntRange(min=1, max=100_000), default=60,
              show_default=True,
              help="Samples of history the model sees.")
@click.option("--horizon", default="15m", show_default=True,
              help="How far one forecast reaches, e.g. 15m: a whole number of trace steps.")
@click.option("--hidden", type=click.IntRange(min=1, max=4096), default=64,
              show_default=True,
              help="LSTM hidden units.")
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=0,
              show_default=True,
              help="Random seed; the same data, settings and seed give the same model.")
@click.option("--until", "until", default=None,
              help="Train only on the trace before this moment (ISO-8601 UTC or Unix "
                   "seconds); later data stays unseen, for evaluation.")
@click.option("--day-of-week/--no-day-of-week", "day_of_week", default=None,
              help="Day-of-week input features [default: only with 4 weeks of data or more].")
@click.option("--same-time-yesterday/--no-same-time-yesterday", "same_time_yesterday",
              default=None,
              help="The rate one day before each forecast step as an input (the model then "
                   "needs one day more history than its window) [default: "
                   + _yesterday_default() + "].")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1,
              show_default=True,
              help="torch threads while training.")
@click.option("--force", is_flag=True, help="Replace the files of an existing artifact.")
def command(trace_path: str, out: Path, epochs: int, window: int, horizon: str, hidden: int,
            seed: int, until: str | None, day_of_week: bool | None,
            same_time_yesterday: bool | None, threads: int, force: bool) -> None:
    """Train an LSTM forecaster on a trace and write it, with its model card, to --out."""
    check_output_directory(out, "--out")  # now, not after the training
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InvalidInputError(f"--out {out} already holds files; pass --force to replace "
                                "the model in it")
    trace = load_trace(trace_path)
    history = trace.rates
    if until is not None:
        history = history.until(parse_timestamp(until))
    steps = _horizon_steps(horizon, trace.step_seconds)

    # Imported here to keep --help light; torch itself is imported when training starts.
    from forescale.core.forecast.lstm import (
        EpochProgress,
        LSTMForecaster,
        max_training_points,
        min_training_points,
    )
    from forescale.core.forecast.model_card import render_model_card, save_with_card

    config = LSTMConfig(window=window, horizon=steps, hidden_size=hidden, epochs=epochs,
                        seed=seed, num_threads=threads, day_of_week=day_of_week,
                        same_time_yesterday=(LSTMConfig.same_time_yesterday
                                             if same_time_yesterday is None
                                             else same_time_yesterday))
    # Checked before the progress bar starts, so that the error is the only line printed.
    needed = min_training_points(config, trace.step_seconds)
    if len(history) < needed:
        before = f" before {until}" if until is not None else ""
        raise InvalidInputError(
            f"trace {trace_path} has {len(history)} samples{before}; training with window "
            f"{window} and horizon {steps} needs at least {needed}")
    if len(history) > max_training_points(config):
        raise InvalidInputError(
            f"trace {trace_path} has {len(history):,} samples; training with window {window} "
            f"holds every window in memory at once and takes at most "
            f"{max_training_points(config):,}: use a shorter --window or a shorter trace")
    stderr = Console(stderr=True)
    started = time.monotonic()
    with Progress(TextColumn("training lstm"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("epochs  loss {task.fields[loss]}"), TimeElapsedColumn(),
                  console=stderr, transient=False) as bar:
        task = bar.add_task("train", total=epochs, loss="-")

        def on_epoch(p: EpochProgress) -> None:
            bar.update(task, completed=p.epoch,
                       loss=f"train {p.train_loss:.4f} validation {p.validation_loss:.4f}")

        model = LSTMForecaster(config, progress=on_epoch)
        model.fit(history)
    elapsed = time.monotonic() - started

    card = render_model_card(model, name=out.name, trace_name=Path(trace_path).stem,
                             trace_path=trace_path,
                             command=_reproduce(trace_path, out, epochs, window, horizon,
                                                hidden, seed, until, day_of_week,
                                                same_time_yesterday, threads))
    try:  # a save that fails leaves the artifact that was there, card and all
        save_with_card(model, out, card)
    except OSError as exc:
        raise InvalidInputError(f"cannot write --out {out}: "
                                f"{os_reason(exc)}") from None
    m = model.metadata
    v = m.validation
    click.echo(f"trained lstm on {m.training_points:,} points "
               f"({format_timestamp(m.training_start_seconds)} to "
               f"{format_timestamp(m.training_end_seconds)}) "
               f"in {elapsed:.0f} s")
    click.echo(f"validation WAPE over {v.origins:,} origins: lstm {_fmt(v.wape_lstm)}, "
               f"seasonal naive {_fmt(v.wape_seasonal_naive)}, "
               f"moving average {_fmt(v.wape_moving_average)}")
    click.echo(f"wrote {out}/ (weights.pt, metadata.json, MODEL_CARD.md)")


def _horizon_steps(text: str, step_seconds: float) -> int:
    """``15m`` is as many steps as fit in 15 minutes, exactly; a bare number is refused
    (it once meant steps here and seconds in ``forecast``)."""
    text = text.strip()
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--horizon") from None
    steps = round(seconds / step_seconds)
    if abs(steps * step_seconds - seconds) > 1e-6 * step_seconds:
        raise click.BadParameter(f"{text} is not a whole number of {step_seconds:g}s "
                                 "steps", param_hint="--horizon")
    if steps < 1:
        raise click.BadParameter("must be at least one step", param_hint="--horizon")
    return steps


def _reproduce(trace_path: str, out: Path, epochs: int, window: int, horizon: str,
               hidden: int, seed: int, until: str | None, day_of_week: bool | None,
               same_time_yesterday: bool | None, threads: int = 1) -> str:
    args = ["forescale", "train", "--trace", trace_path, "--out", str(out),
            "--epochs", str(epochs), "--window", str(window), "--horizon", horizon,
            "--hidden", str(hidden), "--seed", str(seed)]
    if until is not None:
        args += ["--until", until]
    if day_of_week is not None:
        args.append("--day-of-week" if day_of_week else "--no-day-of-week")
    if same_time_yesterday is not None:
        args.append("--same-time-yesterday" if same_time_yesterday
                    else "--no-same-time-yesterday")
    if threads != 1:  # the weights depend on it (the card says so)
        args += ["--threads", str(threads)]
    return shlex.join(args)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
