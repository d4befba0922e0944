"""Tenant isolation: every vector selector of a policy's query gets its namespace's label
matcher (as prom-label-proxy injects one), whatever the query's shape; a query that names
another tenant is refused. The outputs here were checked to parse on Prometheus 2.42."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forescale.adapters.promql import PromQLError, scope_query
from forescale.core.errors import InvalidInputError


@pytest.mark.parametrize(("query", "scoped"), [
    ('sum(rate(http_requests_total{job="web"}[2m]))',
     'sum ( rate ( http_requests_total{namespace="shop",job="web"} [ 2m ] ) )'),
    ("sum by (job) (rate(http_requests_total[5m]))",
     'sum by ( job ) ( rate ( http_requests_total{namespace="shop"} [ 5m ] ) )'),
    ("sum(rate(x[5m])) by (job) / on(job) group_left(instance) up",
     'sum ( rate ( x{namespace="shop"} [ 5m ] ) ) by ( job ) / on ( job ) group_left '
     '( instance ) up{namespace="shop"}'),
    ("rate(x[1h:1m] offset 5m)", 'rate ( x{namespace="shop"} [ 1h :1m ] offset 5m )'),
    ("a and b or c unless d", 'a{namespace="shop"} and b{namespace="shop"} or '
                              'c{namespace="shop"} unless d{namespace="shop"}'),
    ('{__name__="x", job="a"}', '{namespace="shop",__name__="x",job="a"}'),
    ('x{namespace="shop"}', 'x{namespace="shop"}'),
    ("job:rate5m", 'job:rate5m{namespace="shop"}'),
    ('count_values("v", x)', 'count_values ( "v" , x{namespace="shop"} )'),
    ('x{job="by (a)"}', 'x{namespace="shop",job="by (a)"}'),  # a string is not syntax
    # Keywords PromQL takes as metric names where an operand stands (they were left
    # unscoped: another tenant's series named "offset" was read).
    ("rate(offset[5m] offset 1m)", 'rate ( offset{namespace="shop"} [ 5m ] offset 1m )'),
    ("sum(by) by (job)", 'sum ( by{namespace="shop"} ) by ( job )'),
    ("x and and", 'x{namespace="shop"} and and{namespace="shop"}'),
    ("or or unless", 'or{namespace="shop"} or unless{namespace="shop"}'),
    ("x * on(a) group_left without", 'x{namespace="shop"} * on ( a ) group_left '
                                     'without{namespace="shop"}'),
    ("x > bool unless", 'x{namespace="shop"} > bool unless{namespace="shop"}'),
    # atan2 is a binary operator like the others: an operand follows it.
    ("x atan2 by", 'x{namespace="shop"} atan2 by{namespace="shop"}'),
    ("x atan2 offset", 'x{namespace="shop"} atan2 offset{namespace="shop"}'),
    # PromQL's lexer looks keywords up lower-cased: BY, ON, OFFSET are keywords too (they
    # were taken as metric names and scoped into a query Prometheus refuses).
    ("sum(rate(x[5m])) BY (job)", 'sum ( rate ( x{namespace="shop"} [ 5m ] ) ) BY ( job )'),
    ("x / ON(job) GROUP_LEFT y", 'x{namespace="shop"} / ON ( job ) GROUP_LEFT y{namespace="shop"}'),
    ("rate(x[5m] OFFSET 1m)", 'rate ( x{namespace="shop"} [ 5m ] OFFSET 1m )'),
    ("SUM BY (job) (x) AND Or", 'SUM BY ( job ) ( x{namespace="shop"} ) AND Or{namespace="shop"}'),
])
def test_every_selector_is_scoped(query: str, scoped: str) -> None:
    assert scope_query(query, "namespace", "shop") == scoped


@pytest.mark.parametrize(("query", "message"), [
    ('x{namespace="payroll"}', 'may only select namespace="shop"'),
    ('x{namespace=~".*"}', 'may only select namespace="shop"'),
    ('x{namespace!="shop"}', 'may only select namespace="shop"'),
    ("1 + 2", "selects no series"),
    ("sum(x", "unbalanced"),
    ('x{job="a"', "unclosed"),
    ("x{job}", "a label matcher must be"),
    ("x $ y", "unexpected character"),
])
def test_other_tenants_and_broken_queries_are_refused(query: str, message: str) -> None:
    with pytest.raises(PromQLError, match=message.replace("(", r"\(")):
        scope_query(query, "namespace", "shop")


def test_the_value_is_escaped() -> None:
    assert scope_query("x", "namespace", 'a"b') == 'x{namespace="a\\"b"}'


@settings(max_examples=300, deadline=1000, derandomize=True)
@given(query=st.lists(st.sampled_from([*'xyz_:(){}[],="\'!~=<>+-*/^ 5m@',
                                       "sum", "rate", "by", "on", "offset", " "]),
                     max_size=40).map("".join))
def test_any_text_is_scoped_or_refused_in_one_line(query: str) -> None:
    try:
        out = scope_query(query, "namespace", "shop")
    except InvalidInputError as exc:
        assert "\n" not in str(exc)
    else:
        assert 'namespace="shop"' in out
