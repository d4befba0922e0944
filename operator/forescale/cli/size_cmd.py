"""``forescale size``: how many replicas an arrival rate needs, and the queueing behind it.

The same function the operator's plan calls (:func:`forescale.core.sizing.size`), so what
this prints is what the operator would ask for before stabilisation, rate limits and
bounds. Bad input is rejected by the option types (one line, exit code 2, via
:func:`forescale.cli.main`).
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from forescale.cli.options import Duration, FiniteFloat, format_duration
from forescale.core.sizing import DEFAULT_MAX_REPLICAS, SizingResult, size
from forescale.core.spec import SLO, Costs

_DEFAULT_SLO = SLO()


@click.command(name="size")
@click.option("--arrival-rate", type=FiniteFloat(ge=0.0), required=True,
              help="Arrival rate to size for, in requests per second.")
@click.option("--service-rate", type=FiniteFloat(gt=0.0), required=True,
              help="Requests per second one replica serves (μ; 1 / mean service time).")
@click.option("--slo-wait", "slo_wait_seconds", type=Duration(ge=0.0),
              default=format_duration(_DEFAULT_SLO.wait_seconds), show_default=True,
              help="SLO: the longest a request may wait in the queue, e.g. 50ms or 1s.")
@click.option("--slo-percentile", type=FiniteFloat(gt=0.0, lt=1.0),
              default=_DEFAULT_SLO.percentile, show_default=True,
              help="SLO: the share of requests that must wait at most --slo-wait.")
@click.option("--max-utilisation", type=FiniteFloat(gt=0.0),
              default=_DEFAULT_SLO.max_utilisation, show_default=True,
              help="Never size above this utilisation λ/(cμ), in (0, 1].")
@click.option("--cost-per-replica-hour", type=FiniteFloat(ge=0.0), default=None,
              help="Cost mode: what one replica costs per hour (with --cost-per-violation).")
@click.option("--cost-per-violation", type=FiniteFloat(ge=0.0), default=None,
              help="Cost mode: what one request waiting past the SLO costs.")
@click.option("--max-replicas", type=click.IntRange(min=1), default=DEFAULT_MAX_REPLICAS,
              show_default=True, help="Never answer more replicas than this.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(arrival_rate: float, service_rate: float, slo_wait_seconds: float,
            slo_percentile: float, max_utilisation: float,
            cost_per_replica_hour: float | None, cost_per_violation: float | None,
            max_replicas: int, as_json: bool) -> None:
    """Size replicas for an SLO (M/M/c, Erlang C), or for the lowest cost with costs given."""
    if max_utilisation > 1.0:
        raise click.BadParameter(f"must be in (0, 1], got {max_utilisation:g}",
                                 param_hint="'--max-utilisation'")
    if (cost_per_replica_hour is None) != (cost_per_violation is None):
        given = ("--cost-per-replica-hour" if cost_per_violation is None
                 else "--cost-per-violation")
        raise click.UsageError("--cost-per-replica-hour and --cost-per-violation go "
                               f"together (cost mode); only {given} was given")
    slo = SLO(wait_seconds=slo_wait_seconds, percentile=slo_percentile,
              max_utilisation=max_utilisation)
    costs = None
    if cost_per_replica_hour is not None and cost_per_violation is not None:
        costs = Costs(per_replica_hour=cost_per_replica_hour,
                      per_violation=cost_per_violation)
    result = size(arrival_rate, service_rate, slo, costs, max_replicas=max_replicas)
    if as_json:
        click.echo(json.dumps(_json_document(result, arrival_rate=arrival_rate,
                                             service_rate=service_rate, slo=slo,
                                             costs=costs, max_replicas=max_replicas),
                              allow_nan=False))
    else:
        Console(highlight=False).print(_table(result, arrival_rate=arrival_rate,
                                              service_rate=service_rate, slo=slo))


def _json_document(result: SizingResult, *, arrival_rate: float, service_rate: float,
                   slo: SLO, costs: Costs | None, max_replicas: int) -> dict[str, object]:
    """The result's fields at the top level (``jq .replicas``) and the input beside them."""
    return {
        **result.to_dict(),
        "input": {
            "arrival_rate": arrival_rate,
            "service_rate": service_rate,
            "slo": {"wait_seconds": slo.wait_seconds, "percentile": slo.percentile,
                    "max_utilisation": slo.max_utilisation},
            "costs": None if costs is None else {"per_replica_hour": costs.per_replica_hour,
                                                 "per_violation": costs.per_violation},
            "max_replicas": max_replicas,
        },
    }


def _share(p: float) -> str:
    """A probability as a percentage, or in scientific notation when it is tiny."""
    return f"{p * 100:.2f} %" if p >= 1e-4 or p == 0.0 else f"{p:.2e}"


def _seconds(s: float) -> str:
    if s == float("inf"):
        return "unbounded (unstable queue)"
    return f"{s * 1000:.3g} ms" if s < 1.0 else f"{s:.3g} s"


def _table(result: SizingResult, *, arrival_rate: float, service_rate: float,
           slo: SLO) -> Table:
    table = Table(title=f"{result.replicas} replicas ({result.reason})", show_header=False,
                  title_justify="left", box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    tail = 1.0 - slo.percentile
    rows = [
        ("arrival rate", f"{arrival_rate:g} req/s"),
        ("service rate", f"{service_rate:g} req/s per replica"),
        ("utilisation", f"{result.utilisation * 100:.1f} %"),
        ("P(wait)", _share(result.prob_wait)),
        (f"P(wait > {_seconds(slo.wait_seconds)})",
         f"{_share(result.prob_wait_exceeds)}"
         + ("" if result.mode == "cost" else f" (SLO: ≤ {_share(tail)})")),
        ("mean wait", _seconds(result.mean_wait_seconds)),
    ]
    if result.cost is not None:
        rows += [
            ("replica cost", f"{result.cost.replica_cost_per_hour:.4g} /h"),
            ("violation cost", f"{result.cost.violation_cost_per_hour:.4g} /h"),
            ("total cost", f"{result.cost.total_cost_per_hour:.4g} /h"),
        ]
    for name, value in rows:
        table.add_row(name, value)
    return table
