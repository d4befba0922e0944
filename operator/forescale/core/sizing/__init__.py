"""Sizing: how many replicas an arrival rate needs, and how many more to survive failures.

Pure functions of the arrival rate, the per-replica service rate and the policy's SLO,
costs and chaos scenarios (M/M/c queueing, Erlang C); no clock, no I/O.
"""

from forescale.core.sizing.chaos import ChaosResult, chaos_buffer
from forescale.core.sizing.erlang import erlang_c, mean_wait_seconds, prob_wait_exceeds
from forescale.core.sizing.replicas import (
    DEFAULT_MAX_REPLICAS,
    CostBreakdown,
    SizingResult,
    min_replicas_protocol,
    replicas_for_cost,
    replicas_for_slo,
    size,
)

__all__ = [
    "DEFAULT_MAX_REPLICAS",
    "ChaosResult",
    "CostBreakdown",
    "SizingResult",
    "chaos_buffer",
    "erlang_c",
    "mean_wait_seconds",
    "min_replicas_protocol",
    "prob_wait_exceeds",
    "replicas_for_cost",
    "replicas_for_slo",
    "size",
]
