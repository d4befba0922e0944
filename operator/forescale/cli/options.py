"""Option types shared by the subcommands.

Every duration on the command line takes a unit (``900s``, ``15m``, ``2h``, ``1d``,
``50ms``): a bare number is refused with a message that says so, because the same ``15``
used to mean fifteen steps in one command and fifteen seconds in another.
"""

from __future__ import annotations

import math
import re

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``50ms``, ``90s``, ``15m``, ``2h`` or ``1d`` to seconds; a bare number is an error."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use a number and a unit: ms, s, m, h "
                         "or d, e.g. 900s or 15m)")
    if m.group(2) is None:
        raise ValueError(f"{text.strip()!r} has no unit: durations take one (ms, s, m, h or "
                         f"d), e.g. {m.group(1)}s or {m.group(1)}m")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling :func:`parse_duration` reads back (``900`` -> ``15m``)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if float(seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


class Duration(click.ParamType[float]):
    """A duration with a unit, in seconds; ``ge``/``gt``/``le`` bound it (in seconds)."""

    name = "duration"

    def __init__(self, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None) -> None:
        self.ge, self.gt, self.le = ge, gt, le

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):  # already converted (a default given in seconds)
            return value
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not math.isfinite(seconds):  # 400 nines overflow float() to infinity
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if self.gt is not None and not seconds > self.gt:
            self.fail(f"must be longer than {format_duration(self.gt)}, got {value}",
                      param, ctx)
        if self.ge is not None and not seconds >= self.ge:
            self.fail(f"must be at least {format_duration(self.ge)}, got {value}", param, ctx)
        if self.le is not None and not seconds <= self.le:
            self.fail(f"must be at most {format_duration(self.le)}, got {value}", param, ctx)
        return seconds


class FiniteFloat(click.ParamType[float]):
    """A float that is finite and, optionally, above/below bounds (exclusive). Every float
    flag uses it (or :class:`Duration`): click's FLOAT and FloatRange let NaN and infinity
    through, as a test over every subcommand checks."""

    name = "number"

    def __init__(self, *, gt: float | None = None, lt: float | None = None,
                 ge: float | None = None, le: float | None = None) -> None:
        self.gt, self.lt, self.ge, self.le = gt, lt, ge, le

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
        if self.le is not None and not x <= self.le:
            self.fail(f"must be at most {self.le:g}, got {x:g}", param, ctx)
        return x


#: The API server's names (k8s.io/apimachinery validation): an object's name is a
#: DNS-1123 subdomain (at most 253 characters), a namespace a DNS-1123 label (at most 63).
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*")


def is_namespace_name(text: object) -> bool:
    """Whether ``text`` is a namespace name the API server accepts (a DNS-1123 label)."""
    return isinstance(text, str) and len(text) <= 63 \
        and re.fullmatch(DNS1123_LABEL, text) is not None


def is_object_name(text: object) -> bool:
    """Whether ``text`` is an object name the API server accepts (a DNS-1123 subdomain)."""
    return isinstance(text, str) and len(text) <= 253 \
        and _DNS1123_SUBDOMAIN.fullmatch(text) is not None
