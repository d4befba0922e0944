"""Presenting a backtest: one set of rows for the terminal table, the HTML page and the
benchmark's markdown, so the three can never disagree."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from forescale.backtest.runner import BacktestResult


@dataclass(frozen=True)
class Row:
    policy: str
    cost_pod_hours: float
    violation_rate: float
    cost_ratio_to_oracle: float
    scaling_actions: int
    wall_seconds: float
    #: forescale's equal-SLO figure, or a mark on the HPA target it was compared with.
    equal_slo: str


def rows(result: BacktestResult) -> list[Row]:
    comparison = result.equal_slo
    oracle_cost = result.oracle.cost_pod_hours
    out = []
    for name, target, run in result.runs():
        label = name if target is None else f"hpa {target:.2f}"
        note = ""
        if comparison is not None:
            if name == "forescale":
                note = (f"{comparison.cost_ratio:.3f} x hpa {comparison.hpa_target:.2f}"
                        if comparison.matched else "HPA cannot match")
            elif name == "hpa" and target == comparison.hpa_target:
                note = ("equal-SLO match" if comparison.matched
                        else "lowest HPA violation rate")
        out.append(Row(label, run.cost_pod_hours, run.violation_rate,
                       run.cost_pod_hours / oracle_cost, run.scaling_actions,
                       run.wall_seconds, note))
    return out


def headline(result: BacktestResult) -> list[str]:
    """The protocol's two headline comparisons, as sentences."""
    lines = []
    comparison = result.equal_slo
    if comparison is not None:
        lines.append(f"Equal-SLO cost: {comparison.describe()}")
    if result.forescale is not None and result.distance_to_limit is not None:
        lines.append(f"Distance to the limit: {result.distance_to_limit:.3f} x oracle at "
                     f"{result.forescale.violation_rate:.2%} violations")
    return lines


def describe_world(result: BacktestResult) -> str:
    w = result.world
    first = datetime.fromtimestamp(w.time_of(w.warmup_steps), tz=UTC)
    last = datetime.fromtimestamp(w.time_of(len(w)), tz=UTC)
    scale = ("rates as in the trace" if w.params.p999_multiple is None else
             f"rates x {w.scale_factor:.4g} (p99.9 = {w.params.p999_multiple:g} pods' worth)")
    adapted = f"; {w.protocol()}" if w.deviations() else ""
    return (f"{result.trace_name}: {w.scored_steps:,} scored steps of {w.step_seconds:g}s "
            f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC) after a "
            f"{w.warmup_steps * w.step_seconds / 86400:g}-day warm-up; {scale}{adapted}")


def summary_table(result: BacktestResult) -> Table:
    table = Table(title=f"Scaling benchmark, {result.world.protocol()}: "
                        f"{result.trace_name}",
                  caption="\n".join(headline(result)) or None, caption_justify="left")
    table.add_column("policy", no_wrap=True)
    for header in ("pod-hours", "violating", "x oracle", "actions", "wall s"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("equal-SLO cost vs HPA")
    for row in rows(result):
        style = "bold" if row.policy in ("forescale", "oracle") else None
        table.add_row(row.policy, f"{row.cost_pod_hours:,.1f}", f"{row.violation_rate:.3%}",
                      f"{row.cost_ratio_to_oracle:.3f}", f"{row.scaling_actions:,}",
                      f"{row.wall_seconds:.1f}", row.equal_slo, style=style)
    return table


def markdown_table(result: BacktestResult) -> str:
    lines = ["| policy | cost (pod-h) | violation rate | cost / oracle | scaling actions "
             "| wall (s) | equal-SLO |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows(result):
        lines.append(f"| {r.policy} | {r.cost_pod_hours:,.1f} | {r.violation_rate:.3%} | "
                     f"{r.cost_ratio_to_oracle:.3f} | {r.scaling_actions:,} | "
                     f"{r.wall_seconds:.1f} | {r.equal_slo} |")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.key td { font-weight: 600; }
img { max-width: 100%; }
details pre { background: #f6f6f6; padding: 1rem; overflow-x: auto; }
"""


def html_report(result: BacktestResult, *, png: bytes | None = None) -> str:
    """A self-contained page: the table, the headline, the plot inlined, the parameters."""
    e = html.escape
    body = [f"<h1>forescale backtest: {e(result.trace_name)}</h1>",
            f"<p>{e(describe_world(result))}</p>",
            "<table><thead><tr><th>policy</th><th>cost (pod-h)</th><th>violation rate</th>"
            "<th>cost / oracle</th><th>scaling actions</th><th>wall (s)</th>"
            "<th>equal-SLO cost vs HPA</th></tr></thead><tbody>"]
    for r in rows(result):
        cls = ' class="key"' if r.policy in ("forescale", "oracle") else ""
        body.append(
            f"<tr{cls}><td>{e(r.policy)}</td><td class=num>{r.cost_pod_hours:,.1f}</td>"
            f"<td class=num>{r.violation_rate:.3%}</td>"
            f"<td class=num>{r.cost_ratio_to_oracle:.3f}</td>"
            f"<td class=num>{r.scaling_actions:,}</td><td class=num>{r.wall_seconds:.1f}</td>"
            f"<td>{e(r.equal_slo)}</td></tr>")
    body.append("</tbody></table>")
    body += [f"<p>{e(line)}</p>" for line in headline(result)]
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<img alt="arrival rate and replicas" src="data:image/png;base64,{data}">')
    params: dict[str, Any] = result.to_dict()["parameters"]
    body.append("<details><summary>Protocol parameters</summary><pre>"
                f"{e(json.dumps(params, indent=2))}</pre></details>")
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>forescale backtest: {e(result.trace_name)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
