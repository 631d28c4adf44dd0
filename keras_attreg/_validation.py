"""Argument checks shared by every public entry point (Keras style messages)."""

from __future__ import annotations

import math
from typing import Any


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Returns `value` as a float after checking it is finite and in range.

    Only numbers are accepted: a string such as `"0.1"` is refused, as Keras
    refuses it.

    Raises:
        ValueError: naming the argument and the value received.
    """
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low}")
    if high is not None:
        bounds.append(f"{'<=' if high_inclusive else '<'} {high}")
    expected = "a finite float" + (f" {' and '.join(bounds)}" if bounds else "")
    message = (
        f"Invalid value for argument {name}: expected {expected}. "
        f"Received: {name}={value!r}"
    )
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(message)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not math.isfinite(number):
        raise ValueError(message)
    if low is not None and (number < low or (not low_inclusive and number == low)):
        raise ValueError(message)
    if high is not None and (number > high or (not high_inclusive and number == high)):
        raise ValueError(message)
    return number


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """Returns `value` as an int after checking it is an integer `>= low`.

    Raises:
        ValueError: naming the argument and the value received.
    """
    expected = "an integer" + (f" >= {low}" if low is not None else "")
    message = (
        f"Invalid value for argument {name}: expected {expected}. "
        f"Received: {name}={value!r}"
    )
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(message)
    number = int(value)
    if low is not None and number < low:
        raise ValueError(message)
    return number


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    """Returns `value` after checking it is one of `choices`.

    Raises:
        ValueError: naming the argument and the value received.
    """
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument {name}: expected one of {choices}. "
            f"Received: {name}={value!r}"
        )
    return value
