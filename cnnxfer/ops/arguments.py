"""Checks of scalar arguments shared by every layer: an integer (bools refused, NumPy and 0-d
tensor integers accepted through __index__) and a finite real, each with an error that names
the argument, the value given and what was expected."""
from __future__ import annotations

import math
import numbers
import operator


def integer(name: str, value, *, what: str = "an integer", minimum: int | None = None,
            maximum: int | None = None) -> int:
    """value as an int in [minimum, maximum] (either bound optional); `what` completes the
    message "{name} must be {what}, got {value!r}"."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r} of type "
                        f"{type(value).__name__}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def real(name: str, value) -> float:
    """value as a finite float (bools and non-numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type "
                        f"{type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number
