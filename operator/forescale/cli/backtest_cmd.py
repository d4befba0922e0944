"""``forescale backtest``: replay a trace through forescale, the HPA sweep and the oracle.

Protocol v1 of BENCHMARK.md is the default scenario; the world's parameters can be changed
for what-if runs (and any figure from such a run must say so).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from types import TracebackType

import click
import numpy as np
from click.core import ParameterSource
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

from forescale.adapters import MAX_TIMEOUT_SECONDS
from forescale.backtest.report import describe_world, html_report, summary_table
from forescale.backtest.runner import BacktestOptions, run_backtest, world_from_trace
from forescale.backtest.world import ExcludedInterval, ProtocolParameters, World, build_world
from forescale.cli.files import check_output, write_atomically
from forescale.cli.options import Duration, FiniteFloat, format_duration
from forescale.core.errors import InvalidInputError
from forescale.core.series import Series
from forescale.trace import format_timestamp, parse_timestamp

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
        write_atomically(path, data)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None


@click.command("backtest")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Trace CSV (timestamp,requests) at 60 s steps or finer.")
@click.option("--prometheus-url",
              help="Read the history from this Prometheus instead of a trace (with "
                   "--query and --since).")
@click.option("--query", "query",
              help="PromQL returning one series, the arrival rate in req/s (as the "
                   "policy's spec.metrics.query).")
@click.option("--since", "since", type=Duration(gt=0.0),
              help="How much history to read from Prometheus, e.g. 14d.")
@click.option("--until", "until",
              help="End of the Prometheus history (ISO-8601 UTC or Unix seconds) "
                   "[default: now].")
@click.option("--step", "step_seconds", type=Duration(gt=0.0), default="1m",
              show_default=True, help="Step of the history read from Prometheus.")
@click.option("--prometheus-bearer-token-file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send this file's token as 'Authorization: Bearer' to Prometheus.")
@click.option("--prometheus-timeout", type=Duration(gt=0.0, le=MAX_TIMEOUT_SECONDS),
              default="30s",
              show_default=True, help="Give up on one Prometheus request after this long.")
@click.option("--policy", type=click.Choice(POLICY_CHOICES), default="all", show_default=True,
              help="Which policies to replay; the oracle always runs (ratios are to it).")
@click.option("--policy-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A ScalingPolicy manifest for forescale instead of the one matching "
                   "the world.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as one JSON object on stdout (no table).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results as JSON to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of traffic, forecast and replicas to this file.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML report to this file.")
@click.option("--service-rate", type=FiniteFloat(gt=0), default=10.0, show_default=True,
              help="μ: requests per second one pod serves.")
@click.option("--slo-wait", "slo_wait_seconds", type=Duration(ge=0.0), default="50ms",
              show_default=True, help="SLO: the longest a request may wait, e.g. 50ms.")
@click.option("--slo-percentile", type=FiniteFloat(gt=0, lt=1), default=0.95,
              show_default=True)
@click.option("--startup", "startup_seconds", type=Duration(ge=0.0), default="2m",
              show_default=True,
              help="From the decision that asks for a pod until it is ready.")
@click.option("--p999-multiple", type=FiniteFloat(gt=0), default=100.0, show_default=True,
              help="Rescale so that p99.9 of the scored arrival rate is this many pods' "
                   "worth of service.")
@click.option("--no-rescale", is_flag=True,
              help="Keep the traffic's own rates (your service rate, your traffic) instead "
                   "of protocol v1's --p999-multiple rescaling.")
@click.option("--exclude", "exclude", multiple=True, metavar="START/END",
              help="Leave an interval out of scoring (repeatable); the shared traces' "
                   "known missing minutes are left out anyway.")
@click.option("--lstm-epochs", type=click.IntRange(min=0), default=3, show_default=True,
              help="Epochs for the LSTM trained on the warm-up (0: no LSTM stage).")
@click.option("--no-progress", is_flag=True, help="No progress bar (also off without a TTY).")
def command(*, trace_path: Path | None, prometheus_url: str | None, query: str | None,
            since: float | None, until: str | None, step_seconds: float,
            prometheus_bearer_token_file: Path | None, prometheus_timeout: float,
            policy: str, policy_file: Path | None, as_json: bool, out_path: Path | None,
            plot_path: Path | None, report_path: Path | None, service_rate: float,
            slo_wait_seconds: float, slo_percentile: float, startup_seconds: float,
            p999_multiple: float, no_rescale: bool, exclude: tuple[str, ...],
            lstm_epochs: int, no_progress: bool) -> None:
    """Replay real traffic through forescale, the HPA and the oracle (protocol v1).

    The traffic comes from a trace CSV (--trace) or straight from Prometheus
    (--prometheus-url, --query, --since): "would forescale beat my HPA on my traffic?" in
    one command. Prints cost (pod-hours), violation rate, cost ratio to the oracle, scaling
    actions and the equal-SLO comparison with the HPA's target sweep.
    """
    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    # Every flag is checked before the replay: none is silently ignored, and an output
    # that cannot be written fails now, not after minutes.
    if trace_path is not None:
        if prometheus_url is not None or query is not None or since is not None:
            raise click.UsageError("give either --trace or --prometheus-url/--query/--since, "
                                   "not both")
        ignored = [flag for name, flag in (("until", "--until"), ("step_seconds", "--step"),
                                           ("prometheus_timeout", "--prometheus-timeout"),
                                           ("prometheus_bearer_token_file",
                                            "--prometheus-bearer-token-file"))
                   if given(name)]
        if ignored:
            verb = "is" if len(ignored) == 1 else "are"
            raise click.UsageError(f"{', '.join(ignored)} {verb} only for a Prometheus "
                                   "history (--prometheus-url), not for --trace")
    elif prometheus_url is None or query is None or since is None:
        raise click.UsageError("give --trace CSV, or --prometheus-url URL with --query "
                               "PROMQL and --since DURATION")
    if no_rescale and given("p999_multiple"):
        raise click.UsageError("--p999-multiple rescales the traffic: it cannot be given "
                               "with --no-rescale")
    outputs = [(flag, path) for flag, path in (("--out", out_path), ("--plot", plot_path),
                                               ("--report", report_path)) if path is not None]
    for i, (flag, path) in enumerate(outputs):
        check_output(path, flag, inputs=[("--trace", trace_path),
                                         ("--policy-file", policy_file),
                                         ("--prometheus-bearer-token-file",
                                          prometheus_bearer_token_file), *outputs[:i]])
    spec = None
    if policy_file is not None:
        from forescale.policy import load_policy_file

        spec = load_policy_file(policy_file)
        # The simulated pods are the ones the policy plans for: its μ and SLO, unless a
        # flag says otherwise, and then they must agree (a policy sized for 40 req/s per
        # pod on pods that serve 10 violated the SLO at every step, unannounced).
        for name, flag, value, own in (
                ("service_rate", "--service-rate", service_rate,
                 spec.service_rate_per_replica),
                ("slo_wait_seconds", "--slo-wait", slo_wait_seconds, spec.slo.wait_seconds),
                ("slo_percentile", "--slo-percentile", slo_percentile, spec.slo.percentile)):
            if given(name) and not math.isclose(value, own):
                raise InvalidInputError(f"{flag} {value:g} differs from the --policy-file's "
                                        f"{own:g}: the replay would judge the policy on a "
                                        f"service it does not plan for; leave {flag} out "
                                        f"to use the policy's")
        service_rate, slo_wait_seconds, slo_percentile = (
            spec.service_rate_per_replica, spec.slo.wait_seconds, spec.slo.percentile)
    params = ProtocolParameters(service_rate=service_rate, slo_wait_seconds=slo_wait_seconds,
                                slo_percentile=slo_percentile, startup_seconds=startup_seconds,
                                p999_multiple=None if no_rescale else p999_multiple)
    policies = ("oracle", "hpa", "forescale") if policy == "all" else ("oracle", policy)
    options = BacktestOptions(policies=tuple(dict.fromkeys(policies)), policy_spec=spec,
                              lstm_epochs=lstm_epochs)
    excluded = tuple(_interval(x) for x in exclude)
    if trace_path is not None:
        world = world_from_trace(trace_path, params, excluded=excluded)
        trace_name = trace_path.name
    else:
        assert prometheus_url is not None and query is not None and since is not None
        # The CLI is the boundary where the wall clock may be read; --until pins it.
        end = parse_timestamp(until) if until is not None else time.time()
        if since > end:
            raise InvalidInputError(f"--since {format_duration(since)} reaches back before "
                                    f"1970 from --until ({format_timestamp(end)})")
        world, trace_name = _world_from_prometheus(
            prometheus_url, query, since=since, end=end, step_seconds=step_seconds,
            params=params, excluded=excluded, token_file=prometheus_bearer_token_file,
            timeout_seconds=prometheus_timeout)

    show_progress = not no_progress and not as_json and sys.stderr.isatty()
    if show_progress:
        with _Bar() as bar:
            result = run_backtest(world, options, trace_name=trace_name, progress=bar)
    else:
        result = run_backtest(world, options, trace_name=trace_name)

    document = result.to_dict()
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        console.print(describe_world(result), highlight=False)
        console.print(summary_table(result))
    if out_path is not None:
        _write(out_path, json.dumps(document, indent=2) + "\n")
    png = None
    if plot_path is not None or report_path is not None:
        from forescale.backtest.plot import render_png

        png = render_png(result)
    if plot_path is not None and png is not None:
        _write(plot_path, png)
    if report_path is not None:
        _write(report_path, html_report(result, png=png))


def _world_from_prometheus(url: str, query: str, *, since: float, end: float,
                           step_seconds: float, params: ProtocolParameters,
                           excluded: tuple[ExcludedInterval, ...], token_file: Path | None,
                           timeout_seconds: float) -> tuple[World, str]:
    """The world of ``since`` of ``query``'s history up to ``end``, read on the step grid.

    Steps Prometheus has no value for (a scrape gap, a restart) are replayed as no traffic
    and left out of the scoring, as the shared traces' missing minutes are.
    """
    from forescale.adapters.prometheus import MetricsError, PrometheusSource

    end = math.floor(end / step_seconds) * step_seconds
    start = end - math.floor(since / step_seconds) * step_seconds
    try:
        with PrometheusSource(url, bearer_token_file=token_file,
                              timeout_seconds=timeout_seconds) as source:
            rates = source.read_rate(query, start=start, end=end, step_seconds=step_seconds)
    except MetricsError as exc:
        raise InvalidInputError(f"--prometheus-url: {exc}") from None
    missing = np.isnan(rates.values)
    gaps = list(excluded)
    if missing.any():
        starts = rates.timestamps()
        for i in np.flatnonzero(missing):
            gaps.append(ExcludedInterval(float(starts[i]), float(starts[i]) + step_seconds,
                                         note="no sample in Prometheus"))
        rates = Series(rates.start_seconds, rates.step_seconds,
                       np.where(missing, 0.0, rates.values))
    name = f"Prometheus {query}"
    return build_world(rates, params, excluded=tuple(gaps), name=name), name
