"""The kind checks every policy value object makes before its range checks.

A ``bool`` is an ``int`` to Python and ``None < 1`` is a ``TypeError``: without these, a
notebook's ``recurringDays=True`` was one day, and ``moving_average_window=None`` failed
inside a comparison rather than with a message naming the field.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, TypeGuard, TypeVar

from forescale.core.errors import InvalidInputError

T = TypeVar("T")

#: Unix seconds a timestamp may take: 1970-01-01 to the end of year 9999, the range every
#: datetime formatting (and a human) can handle. 1e300 or NaN is a typo, not a time.
MIN_TIMESTAMP = 0.0
MAX_TIMESTAMP = 253_402_300_799.0


def require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInputError(message)


def is_number(value: Any) -> TypeGuard[float]:
    """A real number — a Python or a numpy one, as a notebook computes it — that is not a
    bool and not NaN (infinities are for the range checks), nor an integer beyond a
    float's range (``math.isfinite(10**400)`` raises)."""
    if is_integer(value):
        return abs(value) <= sys.float_info.max
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and not math.isnan(value)


def is_integer(value: Any) -> TypeGuard[int]:
    """An integer (numpy's too: ``np.int64(15)`` is a window of 15), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def finite(value: Any) -> float:
    """``float(value)``, refused with a ValueError unless finite: a stored time or rate read
    back from a status (``"nan"``, ``"inf"`` parse as floats) that would fail every later
    decision instead of being set aside as a damaged state."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def is_text(value: Any) -> TypeGuard[str]:
    """A non-empty string."""
    return isinstance(value, str) and bool(value)


def items(name: str, value: Any, kind: type[T]) -> tuple[T, ...]:
    """``value`` as a tuple of ``kind`` (a list is accepted and converted)."""
    require(isinstance(value, tuple | list) and all(isinstance(v, kind) for v in value),
            f"{name} must be a list of {kind.__name__}, got {value!r}")
    return tuple(value)
