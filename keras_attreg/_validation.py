"""Argument checks shared by every public entry point (Keras style messages)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from keras_attreg import _guard


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


def labels_to_targets(y, name: str = "targets") -> tf.Tensor:
    """Converts sparse (B,), (B, 1) or one-hot (B, C) labels to int32 indices.

    Sparse float labels must hold whole numbers (never truncated): a
    `ValueError` naming `name` on eager values, a run-time assertion in graphs.
    """
    y = tf.convert_to_tensor(y)
    rank = y.shape.rank
    if rank == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        return tf.argmax(y, axis=-1, output_type=tf.int32)
    if rank == 2 and y.shape[-1] == 1:
        y = tf.squeeze(y, axis=-1)
    elif rank != 1:
        raise ValueError(
            "Labels must be class indices of shape (batch,) or (batch, 1), or "
            f"one-hot of shape (batch, classes). Received: {name} with shape "
            f"{y.shape}"
        )
    if y.dtype.is_floating:
        y = require(
            tf.equal(y, tf.round(y)),
            f"Invalid value for argument {name}: expected whole-number class "
            "indices (a fractional label is never truncated).",
            name,
            y,
            lambda values: f"fractional values {values[:8]}",
        )
    return tf.cast(y, tf.int32)


def require(good, message: str, name: str, values: tf.Tensor, offending) -> tf.Tensor:
    """`values`, once the elementwise condition `good` holds everywhere.

    Checked now on eager values (`ValueError` ending with
    `offending(failing values)`, a numpy function). In graphs, inside a
    training or test step (an active `keras_attreg._guard.StepGuard`), the
    failure is counted and the host raises the same `ValueError` after the
    step; elsewhere by a run-time assertion (`tf.errors.InvalidArgumentError`
    with the same message and the first values received).
    """
    good = tf.convert_to_tensor(good)
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(good)):
            failing = values.numpy()[np.logical_not(good.numpy())]
            raise ValueError(f"{message} Received: {name} with {offending(failing)}")
        return values
    guard = _guard.current()
    if guard is not None:
        guard.record(
            good,
            values,
            kind=ValueError,
            message=message,
            name=name,
            offending=offending,
        )
        return values
    received = tf.strings.format(
        f"{message} Received: {name}={{}}", values, summarize=8
    )
    with tf.control_dependencies(
        [tf.debugging.Assert(tf.reduce_all(good), [received])]
    ):
        return tf.identity(values)


def check_targets(targets: tf.Tensor, num_classes: int, name: str = "targets"):
    """Checks class indices lie in [0, num_classes).

    Raises `ValueError` on eager values; adds a run-time assertion in graphs
    (where it raises `tf.errors.InvalidArgumentError` with the same message).
    """
    in_range = tf.logical_and(targets >= 0, targets < num_classes)
    return require(
        in_range,
        f"Invalid value for argument {name}: expected class indices in "
        f"[0, {num_classes}).",
        name,
        targets,
        lambda values: f"out-of-range values {np.unique(values)[:8]}",
    )


def renamed_argument(old: str, old_value, new: str, new_value, default):
    """`new_value`, or the value of the deprecated argument `old` when one is
    given (with a `DeprecationWarning`); `old` beside a `new` other than its
    `default` is a `ValueError`."""
    if old_value is None:
        return new_value
    if new_value != default:
        raise ValueError(
            f"Argument {old} is the deprecated name of {new}: give only {new}. "
            f"Received: {old}={old_value!r}, {new}={new_value!r}"
        )
    warnings.warn(
        f"Argument `{old}` is deprecated and will be removed in the next release: "
        f"use `{new}`. Received: {old}={old_value!r}",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
