"""Every policy value object refuses a wrong value with InvalidInputError naming the field.

The CRD's schema and the policy file's JSON schema catch wrong types before they reach the
core, but notebooks and scripts build ``PolicySpec`` & co. directly: there, ``None`` for a
window, ``True`` for a day count or a string for a rate must be the same one-line error
(the module docstring of :mod:`forescale.core.spec` promises it), never a ``TypeError``
from inside a comparison, and never accepted.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import numpy as np
import pytest

from forescale.core.errors import InvalidInputError
from forescale.core.guardrail import Guardrail
from forescale.core.schedules import Schedule
from forescale.core.spec import (
    SLO,
    Behavior,
    Chaos,
    ChaosScenario,
    Costs,
    ForecastSettings,
    PolicySpec,
    RateLimit,
)

#: A valid instance's arguments, per class; each field is then replaced in turn.
VALID: dict[type, dict[str, Any]] = {
    SLO: {},
    Costs: {"per_replica_hour": 1.0, "per_violation": 0.01},
    ChaosScenario: {"name": "zone", "probability": 0.1, "capacity_fraction_lost": 1 / 3},
    Chaos: {},
    RateLimit: {"type": "Pods", "value": 4, "period_seconds": 15},
    Behavior: {},
    ForecastSettings: {},
    PolicySpec: {"service_rate_per_replica": 10.0},
    Schedule: {"name": "launch", "cron": "0 9 * * 1", "duration_seconds": 3600.0,
               "min_replicas": 3},
    Guardrail: {"name": "cpu", "query": "avg(cpu)", "target": 0.8},
}

HOSTILE: list[Any] = [None, "3", True, False, math.nan, math.inf, -math.inf, -1, 0, 1e300,
                      10**400, [], {}, (), (object(),), object()]


def _cases() -> list[tuple[type, str, Any]]:
    cases = []
    for cls in VALID:
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_"):
                cases += [(cls, f.name, value) for value in HOSTILE]
    return cases


def _admits(hint: Any, value: Any) -> bool:
    """Whether ``value``'s kind is one the annotation names at all (its range aside)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_admits(arm, value) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if value is None or isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    if hint is int:
        return isinstance(value, int)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_admits(args[0], v) for v in value)
        return len(value) == len(args) and all(map(_admits, args, value))
    return isinstance(value, hint) if isinstance(hint, type) else True


@pytest.mark.parametrize(("cls", "name", "value"), _cases(),
                         ids=lambda x: x.__name__ if isinstance(x, type) else repr(x)[:12])
def test_a_wrong_value_is_one_clear_error(cls: type, name: str, value: Any) -> None:
    arguments = {**VALID[cls], name: value}
    try:
        built = cls(**arguments)
    except InvalidInputError as exc:
        message = str(exc)
        assert "\n" not in message and message
        # Named as the policy file names it (behavior.scaleDown.tolerance for
        # scale_down_tolerance) or as the Python argument: every word of it is there.
        assert all(word in message.lower() for word in name.split("_")), \
            f"{cls.__name__}({name}={value!r}): {message!r} does not name the field"
        return
    # No number field takes a non-finite value, and no float field one no float can hold.
    hint = typing.get_type_hints(cls)[name]
    assert not (isinstance(value, float) and not math.isfinite(value)), \
        f"{cls.__name__}({name}={value!r}) was accepted"
    assert not (value == 10**400 and _admits(hint, 0.5)), \
        f"{cls.__name__}({name}={value!r}) was accepted"
    # Accepted: then what it holds is of the annotated kind (a list may become a tuple).
    held = getattr(built, name)
    assert _admits(hint, held), f"{cls.__name__}({name}={value!r}) was accepted: {built!r}"


def test_the_valid_arguments_are_valid() -> None:
    for cls, arguments in VALID.items():
        cls(**arguments)


def test_numpy_numbers_are_numbers_and_its_bools_are_not() -> None:
    """A notebook computes its settings with numpy: np.int64(15) is a window of 15."""
    settings = ForecastSettings(moving_average_window=np.int64(15),  # type: ignore[arg-type]
                                confidence=np.float32(0.8))  # type: ignore[arg-type]
    assert settings.moving_average_window == 15
    assert PolicySpec(service_rate_per_replica=np.float64(10.0), min_replicas=np.int64(2),
                      max_replicas=np.uint16(20)).max_replicas == 20  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="recurringDays"):
        ForecastSettings(recurring_days=np.bool_(True))  # type: ignore[arg-type]
