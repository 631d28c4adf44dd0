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


class LabelsOnlyBuildMixin:
    """Builds the compiled loss and metrics from the labels alone.

    Under a distribution strategy Keras builds a model's compiled loss and
    metrics before the first step, from one data batch, through the private
    `Trainer._symbolic_build`; a batch whose `y` carries more than the labels
    (annotation masks) would build them for that structure. The model lists
    this mixin before `keras.Model` and defines `_labels_only(data)`, which
    returns the batch with its `y` reduced to the labels.
    """

    def _symbolic_build(self, iterator=None, data_batch=None):
        if data_batch is not None:
            data_batch = self._labels_only(data_batch)
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)
