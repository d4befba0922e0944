"""The history-window rule: one place, the same samples for the operator, backtest and CLI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forescale.core.errors import InvalidInputError
from forescale.core.window import history_steps, history_window


def test_whole_steps_on_the_grid() -> None:
    assert history_steps(7 * 86400, 60) == 10_080
    assert history_window(1_000_030.0, 3600, 60) == (1_000_020.0 - 3600, 1_000_020.0)


def test_a_partial_step_is_rounded_down_never_up() -> None:
    # floor in the worker and round in the backtest once disagreed on exactly this.
    assert history_steps(3630, 60) == 60
    assert history_steps(3659.9, 60) == 60
    assert history_steps(0.3, 0.1) == 3  # float noise does not lose a step


@pytest.mark.parametrize(("history", "step"), [(0, 60), (3600, 0), (float("nan"), 60),
                                               (3600, float("inf"))])
def test_bad_input_is_one_line(history: float, step: float) -> None:
    with pytest.raises(InvalidInputError):
        history_steps(history, step)


@given(now=st.floats(0, 4e9), history=st.floats(1, 1e7), step=st.floats(0.5, 3600))
def test_window_invariants(now: float, history: float, step: float) -> None:
    start, end = history_window(now, history, step)
    assert end <= now + 1e-6 * step
    assert end > now - step - 1e-6 * step
    assert round((end - start) / step) == history_steps(history, step)
    assert end - start <= max(history, step) + 1e-6 * step
