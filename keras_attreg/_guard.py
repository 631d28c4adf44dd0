"""The run-time checks of `AttributionRegularizedModel`'s steps, as flags.

A compiled step cannot raise a Python error, and the string operations that
format an assertion's message cannot be compiled by XLA. So the steps do not
assert: each check of a batch (labels in range, whole-number labels, binary
annotation masks, finite inputs, losses and gradients) counts its failures in a
variable, the step applies no update once any check failed, and the host reads
the counts after each call of the compiled function (`raise_if_tripped`) and
raises the Python error, `ValueError` for bad data and `FloatingPointError`
for a non-finite step, with the message the eager checks give.

The checks of `keras_attreg._validation.require` report here while a guard is `active`
(the trace of a step); elsewhere they assert as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

NONFINITE = "keras_attreg: non-finite value"
"""The start of every non-finite step's message."""

INPUTS = "inputs (x)"
"""The name of the inputs' finiteness check (its own message)."""

_SLOTS = 16
_CURRENT: contextvars.ContextVar[StepGuard | None] = contextvars.ContextVar(
    "keras_attreg_step_guard", default=None
)


@dataclasses.dataclass(frozen=True)
class _Check:
    """What the host needs to word a failed check's error."""

    kind: type
    message: str
    name: str
    offending: Callable | None
    dtype: np.dtype


def current() -> StepGuard | None:
    """The guard of the step being traced, or None."""
    return _CURRENT.get()


class StepGuard:
    """Failure counts of a model's step checks, in (distributed) variables.

    Created with the model (inside its distribution strategy's scope), never
    tracked by Keras: not saved, not in `model.variables`.
    """

    def __init__(self):
        # Summed over replicas; the offending range and the step are those
        # the first replica saw (enough to word the message).
        self._counts = keras.Variable(
            np.zeros(_SLOTS, "float32"), trainable=False, aggregation="sum"
        )
        self._low = keras.Variable(
            np.zeros(_SLOTS, "float32"),
            trainable=False,
            aggregation="only_first_replica",
        )
        self._high = keras.Variable(
            np.zeros(_SLOTS, "float32"),
            trainable=False,
            aggregation="only_first_replica",
        )
        self._step = keras.Variable(
            0, dtype="int64", trainable=False, aggregation="only_first_replica"
        )
        self._checks: dict[str, int] = {}
        self._details: list[_Check] = []

    @contextlib.contextmanager
    def active(self):
        """Within: `_validation.require` records its graph checks here."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def _slot(self, key: str, check: _Check) -> int:
        if key not in self._checks:
            if len(self._checks) == _SLOTS:
                raise RuntimeError(f"StepGuard holds at most {_SLOTS} checks.")
            self._checks[key] = len(self._details)
            self._details.append(check)
        else:
            self._details[self._checks[key]] = check  # the latest trace's words
        return self._checks[key]

    def tripped(self) -> tf.Tensor:
        """True once a check has failed and not been raised yet."""
        return tf.reduce_any(self._counts.value > 0)

    def record(
        self,
        good,
        values,
        *,
        kind: type,
        message: str,
        name: str,
        offending: Callable | None = None,
        step=None,
    ) -> tf.Tensor:
        """Counts a failure of the elementwise condition `good` on `values`.

        Args:
            good: boolean tensor, the condition per element of `values`.
            values: the checked tensor (its failing elements' range is kept).
            kind: the Python error the host raises.
            message: the error's words (`Received: ...` is added by the host).
            name: the checked argument.
            offending: `offending(array) -> str` words the failing values
                (the eager check's function); None for non-finite terms.
            step: the optimizer step, for the non-finite message.

        Returns:
            The scalar `all(good)`.
        """
        values = tf.convert_to_tensor(values)
        check = _Check(kind, message, name, offending, values.dtype.as_numpy_dtype)
        slot = self._slot(f"{kind.__name__}:{name}:{message}", check)
        good = tf.convert_to_tensor(good)
        ok = tf.reduce_all(good)
        values = tf.cast(tf.reshape(values, [-1]), "float32")
        bad = tf.logical_not(tf.broadcast_to(tf.reshape(good, [-1]), tf.shape(values)))
        inf = tf.constant(np.inf, "float32")
        low = tf.reduce_min(tf.where(bad, values, inf))
        high = tf.reduce_max(tf.where(bad, values, -inf))
        first = tf.logical_and(tf.logical_not(ok), tf.logical_not(self.tripped()))
        update = tf.logical_and(tf.equal(tf.range(_SLOTS), slot), tf.logical_not(ok))
        self._counts.assign_add(tf.cast(update, "float32"))
        self._low.assign(tf.where(update, low, self._low.value))
        self._high.assign(tf.where(update, high, self._high.value))
        if step is not None:
            self._step.assign(tf.where(first, tf.cast(step, "int64"), self._step.value))
        return ok

    def raise_if_tripped(self) -> None:
        """Raises the error of the first failed check (data errors before
        non-finite steps) and clears the counts; nothing when none failed."""
        counts = np.asarray(keras.ops.convert_to_numpy(self._counts.value))
        if not counts.any():
            return
        low = keras.ops.convert_to_numpy(self._low.value)
        high = keras.ops.convert_to_numpy(self._high.value)
        step = int(keras.ops.convert_to_numpy(self._step.value))
        self.clear()
        failed = [i for i in range(len(self._details)) if counts[i] > 0]
        for i in failed:
            check = self._details[i]
            if check.kind is not FloatingPointError:
                values = np.array([low[i], high[i]]).astype(check.dtype)
                raise check.kind(
                    f"{check.message} Received: {check.name} with "
                    f"{check.offending(values)}"
                )
        terms = [self._details[i].name for i in failed]
        if INPUTS in terms:
            raise FloatingPointError(
                f"{NONFINITE} in training step {step}: {INPUTS} contain NaN or Inf."
            )
        raise FloatingPointError(
            f"{NONFINITE} in training step {step}: {', '.join(terms)} went NaN or "
            "Inf. Lower the learning rate or the regulariser weight, check the "
            "data, or pass nonfinite='skip' to skip such batches."
        )

    def clear(self) -> None:
        self._counts.assign(np.zeros(_SLOTS, "float32"))
