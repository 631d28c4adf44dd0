"""What `fit` and `evaluate` need under `MultiWorkerMirroredStrategy`.

Keras's TensorFlow trainer fails under `tf.distribute.MultiWorkerMirroredStrategy`
with two or more workers, for any model (tensorflow/tensorflow#72388, still so
on Keras's main branch, 3.16.0.dev, 2026-08-22), in two places:

1. `TensorFlowTrainer._maybe_symbolic_build` passes the first batch, a nested
   structure (x, y) of per-replica values, to one `strategy.reduce` call; it
   only needs the batch's shapes and dtypes.
2. `reduce_per_replica(logs, strategy, "auto")`, run on the logs of each
   train/test step, reduces every value with
   `strategy.reduce("MEAN", v, axis=0)`, which has no axis 0 for the scalar
   logs of every metric.

`MultiWorkerFitMixin`, a base of `AttributionRegularizedModel`, works around
both for our model only (nothing is patched): the first batch's shapes are read
from the local replica's values, and each step returns its logs with a leading
axis of length 1, which the `axis=0` mean then averages over the replicas (the
mean of the replicas' metric results, as Keras computes it for one worker).
Both step aside for Keras releases from `FIXED_IN` on, and outside multi-worker
runs. `tests/test_keras_distribute.py` checks the internals relied on here.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_trainer

# The first Keras release with tensorflow/tensorflow#72388 fixed (None: none yet).
FIXED_IN: tuple[int, int] | None = None

KERAS_VERSION = tuple(int(part) for part in keras.version().split(".")[:2])


def multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under `MultiWorkerMirroredStrategy` with two or more workers."""
    return keras_trainer._collective_all_reduce_multi_worker(strategy)


def needs_fix(strategy: tf.distribute.Strategy) -> bool:
    """True when Keras's `fit` would fail: several workers, an unfixed Keras."""
    unfixed = FIXED_IN is None or KERAS_VERSION < FIXED_IN
    return unfixed and multi_worker(strategy)


def mean_over_workers(strategy: tf.distribute.Strategy, values) -> np.ndarray:
    """The mean over the workers of each worker's `values` (float64 array).

    One all-reduce, so every worker receives the same numbers; every worker
    must call it at the same point. Outside multi-worker runs: `values`.
    """
    values = np.asarray(values, "float64")
    if not multi_worker(strategy):
        return values

    @tf.function
    def mean(value):
        def replica_mean(value):
            # `identity` places the value on the replica's device: a traced
            # input has none, and the all-reduce needs one.
            value = tf.identity(value)
            return tf.distribute.get_replica_context().all_reduce("MEAN", value)

        return strategy.run(replica_mean, args=(value,))

    result = mean(tf.constant(values))
    return strategy.experimental_local_results(result)[0].numpy()


def _local(strategy, value):
    """The first local replica's part of a distributed value (else the value)."""
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


class MultiWorkerFitMixin:
    """Makes `fit`/`evaluate` of a `keras.Model` subclass work on several workers.

    Overrides two methods of Keras's `TensorFlowTrainer` (see the module
    docstring); a model gets it by listing the mixin before `keras.Model`.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None and needs_fix(strategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: _local(strategy, value), next(batches)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _make_function(self, step_function):
        if not needs_fix(self.distribute_strategy):
            return super()._make_function(step_function)

        def step_with_replica_axis(data):
            logs = step_function(data)
            return tf.nest.map_structure(lambda value: tf.expand_dims(value, 0), logs)

        return super()._make_function(step_with_replica_axis)
