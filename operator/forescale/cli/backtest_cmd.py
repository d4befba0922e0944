"""``forescale backtest``: replay a trace through forescale, the HPA sweep and the oracle.

Protocol v1 of BENCHMARK.md is the default scenario; the world's parameters can be changed
for what-if runs (and any figure from such a run must say so).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import TracebackType

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from forescale.backtest.report import describe_world, html_report, summary_table
from forescale.backtest.runner import BacktestOptions, run_backtest, world_from_trace
from forescale.backtest.world import ExcludedInterval, ProtocolParameters
from forescale.cli.options import FiniteFloat
from forescale.core.errors import InvalidInputError
from forescale.trace import parse_timestamp

POLICY_CHOICES = ("all", "forescale", "hpa", "oracle")


class _Bar:
    """The runner's progress sink drawn as a rich bar on stderr, one task per phase."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True)
        self._task: TaskID | None = None

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def phase(self, description: str, total: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, steps: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, steps)


def _interval(text: str) -> ExcludedInterval:
    start, sep, end = text.partition("/")
    if not sep:
        raise InvalidInputError(f"--exclude takes START/END (ISO-8601), got {text!r}")
    return ExcludedInterval(parse_timestamp(start), parse_timestamp(end),
                            note="--exclude")


def _write(path: Path, data: bytes | str) -> None:
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None


@click.command("backtest")
@click.option("--trace", "trace_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Trace CSV (timestamp,requests) at 60 s steps or finer.")
@click.option("--policy", type=click.Choice(POLICY_CHOICES), default="all", show_default=True,
              help="Which policies to replay; the oracle always runs (ratios are to it).")
@click.option("--policy-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A ScalingPolicy manifest for forescale instead of the one matching "
                   "the world.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results as JSON here ('-': stdout, no table).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of traffic, forecast and replicas here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report here.")
@click.option("--service-rate", type=FiniteFloat(gt=0), default=10.0, show_default=True,
              help="μ: requests per second one pod serves.")
@click.option("--slo-wait-seconds", type=FiniteFloat(ge=0), default=0.05, show_default=True)
@click.option("--slo-percentile", type=FiniteFloat(gt=0, lt=1), default=0.95,
              show_default=True)
@click.option("--startup-seconds", type=FiniteFloat(ge=0), default=120.0, show_default=True,
              help="From the decision that asks for a pod until it is ready.")
@click.option("--p999-multiple", type=FiniteFloat(gt=0), default=100.0, show_default=True,
              help="Rescale so that p99.9 of the scored arrival rate is this many pods' "
                   "worth of service.")
@click.option("--exclude", "exclude", multiple=True, metavar="START/END",
              help="Leave an interval out of scoring (repeatable); the shared traces' "
                   "known missing minutes are left out anyway.")
@click.option("--lstm-epochs", type=click.IntRange(min=0), default=3, show_default=True,
              help="Epochs for the LSTM trained on the warm-up (0: no LSTM stage).")
@click.option("--no-progress", is_flag=True, help="No progress bar (also off without a TTY).")
def command(*, trace_path: Path, policy: str, policy_file: Path | None, json_path: Path | None,
            plot_path: Path | None, report_path: Path | None, service_rate: float,
            slo_wait_seconds: float, slo_percentile: float, startup_seconds: float,
            p999_multiple: float, exclude: tuple[str, ...], lstm_epochs: int,
            no_progress: bool) -> None:
    """Replay real traffic through forescale, the HPA and the oracle (protocol v1).

    Prints cost (pod-hours), violation rate, cost ratio to the oracle, scaling actions and
    the equal-SLO comparison with the HPA's target sweep.
    """
    params = ProtocolParameters(service_rate=service_rate, slo_wait_seconds=slo_wait_seconds,
                                slo_percentile=slo_percentile, startup_seconds=startup_seconds,
                                p999_multiple=p999_multiple)
    spec = None
    if policy_file is not None:
        from forescale.policy import load_policy_file

        spec = load_policy_file(policy_file)
    policies = ("oracle", "hpa", "forescale") if policy == "all" else ("oracle", policy)
    options = BacktestOptions(policies=tuple(dict.fromkeys(policies)), policy_spec=spec,
                              lstm_epochs=lstm_epochs)
    world = world_from_trace(trace_path, params,
                             excluded=tuple(_interval(x) for x in exclude))

    show_progress = not no_progress and sys.stderr.isatty()
    if show_progress:
        with _Bar() as bar:
            result = run_backtest(world, options, trace_name=trace_path.name, progress=bar)
    else:
        result = run_backtest(world, options, trace_name=trace_path.name)

    document = result.to_dict()
    if json_path is not None and str(json_path) == "-":
        click.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        console.print(describe_world(result), highlight=False)
        console.print(summary_table(result))
        if json_path is not None:
            _write(json_path, json.dumps(document, indent=2) + "\n")
    png = None
    if plot_path is not None or report_path is not None:
        from forescale.backtest.plot import render_png

        png = render_png(result)
    if plot_path is not None and png is not None:
        _write(plot_path, png)
    if report_path is not None:
        _write(report_path, html_report(result, png=png))
