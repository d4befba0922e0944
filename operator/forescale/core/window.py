"""The one rule for which history a decision sees, shared by the operator, the backtest and
the CLI so that all three see the same samples for the same spec.

A decision at ``now`` sees the last ``history_steps`` whole steps that have ended by ``now``,
on the step grid (so consecutive reads continue each other and a fitted model is updated
rather than refitted). ``history_seconds`` that is not a whole number of steps is rounded
down: a read never reaches further back than the policy asked for.
"""

from __future__ import annotations

import math

from forescale.core.errors import InvalidInputError

#: Float noise in history_seconds / step (e.g. 0.1-second steps) must not drop a step.
_SLACK = 1e-9


def history_steps(history_seconds: float, step_seconds: float) -> int:
    """How many steps of history a decision sees (at least one)."""
    if not (math.isfinite(step_seconds) and step_seconds > 0):
        raise InvalidInputError(f"step must be a positive number of seconds, "
                                f"got {step_seconds!r}")
    if not (math.isfinite(history_seconds) and history_seconds > 0):
        raise InvalidInputError(f"history must be a positive number of seconds, "
                                f"got {history_seconds!r}")
    return max(1, math.floor(history_seconds / step_seconds + _SLACK))


def history_window(now: float, history_seconds: float,
                   step_seconds: float) -> tuple[float, float]:
    """``(start, end)`` of the history a decision at ``now`` reads: ``end`` is the last step
    boundary at or before ``now``, ``start`` :func:`history_steps` steps before it."""
    if not math.isfinite(now):
        raise InvalidInputError(f"now must be a finite time, got {now!r}")
    steps = history_steps(history_seconds, step_seconds)
    end = math.floor(now / step_seconds + _SLACK) * step_seconds
    return end - steps * step_seconds, end
