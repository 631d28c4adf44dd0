"""Compiled train functions built the way Keras builds its own.

`AttributionRegularizedModel` keeps two train functions, a plain one and a
regularised one, and picks one per call. Each must be what Keras itself makes
of a step function (`tf.function`, `jit_compile`, `steps_per_execution`, the
distribution strategy's `run` and reduction), and Keras has no public way to
compile a step other than `train_step`: the TensorFlow trainer's private
`_make_function` does it.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def compiled_step(model: keras.Model, step: Callable) -> Callable:
    """`step(data)` compiled as Keras compiles `train_step` for `fit`.

    Returns:
        A function of the iterator (or list of batches) that `fit` and
        `train_on_batch` pass to `model.train_function`.
    """
    return model._make_function(step)
