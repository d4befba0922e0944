"""Option types shared by the subcommands."""

from __future__ import annotations

import math
import re

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``15m``, ``90s``, ``2h``, ``1d`` or plain seconds, to seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class Duration(click.ParamType[float]):
    name = "duration"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class FiniteFloat(click.ParamType[float]):
    """A float that is finite and, optionally, above/below bounds (exclusive)."""

    name = "number"

    def __init__(self, *, gt: float | None = None, lt: float | None = None,
                 ge: float | None = None) -> None:
        self.gt, self.lt, self.ge = gt, lt, ge

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.gt is not None and not x > self.gt:
            self.fail(f"must be greater than {self.gt:g}, got {x:g}", param, ctx)
        if self.ge is not None and not x >= self.ge:
            self.fail(f"must be at least {self.ge:g}, got {x:g}", param, ctx)
        if self.lt is not None and not x < self.lt:
            self.fail(f"must be less than {self.lt:g}, got {x:g}", param, ctx)
        return x
