"""Tenant scoping judged by Prometheus itself (``promtool test rules``, the real query
engine): a scoped query reads its own namespace's series and never another's, also when
the metric is named like a PromQL keyword (``offset``, ``by``...), which PromQL takes as a
metric name where an operand is expected and the scoping once took as the keyword."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from forescale.adapters.promql import scope_query
from tests.support.prometheus import prometheus_binaries


@pytest.mark.parametrize("query", [
    "sum(rate({m}[5m]))",
    "sum(rate({m}[5m])) + 0 * sum(up)",
    "sum(rate(up[5m])) * 0 + sum(rate({m}[5m]))",
    "sum(up * on(namespace) group_left rate({m}[5m]))",
    "sum(rate({m}[5m] offset 1m))",
    "sum(rate({m}[5m]) + 0 * ({m} atan2 {m}))",
    # Keywords in capitals are keywords (PromQL's lexer lower-cases them).
    "SUM(sum BY (namespace) (rate({m}[5m] OFFSET 1m)) * ON(namespace) GROUP_LEFT "
    "sum BY (namespace) (up))",
])
@pytest.mark.parametrize("metric", ["offset", "by", "without", "and", "or", "unless",
                                    "http_requests_total"])
def test_a_scoped_query_reads_only_its_own_namespace(tmp_path: Path, query: str,
                                                     metric: str) -> None:
    _, promtool = prometheus_binaries()
    expr = scope_query(query.format(m=metric), "namespace", "shop")
    # shop's counter rises by 2/s, the victim's by 1/s: only 2 may be seen.
    rules = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'{metric}{{namespace="victim"}}', "values": "0+60x20"},
            {"series": f'{metric}{{namespace="shop"}}', "values": "0+120x20"},
            {"series": 'up{namespace="shop"}', "values": "1x20"},
            {"series": 'up{namespace="victim"}', "values": "1x20"}],
        "promql_expr_test": [{"expr": expr, "eval_time": "10m",
                              "exp_samples": [{"labels": "{}", "value": 2}]}]}]}
    path = tmp_path / "scoping.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{expr}\n{done.stdout}{done.stderr}"
