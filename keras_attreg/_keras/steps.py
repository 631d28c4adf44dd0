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
import tensorflow as tf


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


def apply_if(
    ok: tf.Tensor,
    apply: Callable[..., None],
    skip: Callable[..., None],
    args: tuple = (),
) -> tf.Tensor:
    """`apply(*args)` when `ok` holds on every replica, else `skip(*args)`, in a
    step's replica context.

    `tf.cond` in a replica context cannot hold the optimizer's update where the
    strategy needs a merge call for it (`MirroredStrategy`, multi-worker): the
    branch is then chosen in the cross-replica context, as Keras's
    `LossScaleOptimizer` does, with `ok` reduced over the replicas first (a
    batch shard that fails on one replica skips the step on all). Per-replica
    tensors the branches use (gradients, saved state) must come through `args`,
    so that each replica gets its own.

    Returns:
        1.0 when the step was skipped, 0.0 when it was applied (float32).
    """
    if not tf.distribute.has_strategy() or (
        tf.__internal__.distribute.strategy_supports_no_merge_call()
    ):
        tf.cond(ok, lambda: apply(*args), lambda: skip(*args))
        return 1.0 - tf.cast(ok, "float32")
    context = tf.distribute.get_replica_context()
    failed = context.all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(ok, "float32")
    )

    def choose(distribution, failed, args):
        everywhere = distribution.experimental_local_results(failed)[0] == 0.0
        tf.cond(
            everywhere,
            lambda: distribution.extended.call_for_each_replica(apply, args=args),
            lambda: distribution.extended.call_for_each_replica(skip, args=args),
        )

    context.merge_call(choose, args=(failed, args))
    return tf.cast(failed > 0.0, "float32")
