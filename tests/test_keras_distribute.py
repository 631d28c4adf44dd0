"""The Keras internals `keras_attreg/_keras/distribute.py` relies on.

A Keras release that renames or reshapes them fails here, in one process and
in seconds, before the multi-worker run of `tests/test_distributed.py` (which
checks the fix end to end) would fail or, worse, train through Keras's own
code. When one fails: read the new Keras code, adapt `MultiWorkerFitMixin`, or
set `FIXED_IN` if Keras fixed tensorflow/tensorflow#72388.
"""

import inspect

import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_trainer

import keras_attreg as kar
from keras_attreg._keras import distribute


def _parameters(function):
    return [
        (name, parameter.default)
        for name, parameter in inspect.signature(function).parameters.items()
    ]


def test_the_methods_we_override_exist_with_their_signatures():
    trainer = keras_trainer.TensorFlowTrainer
    assert _parameters(trainer._maybe_symbolic_build) == [
        ("self", inspect.Parameter.empty),
        ("iterator", None),
        ("data_batch", None),
    ]
    assert _parameters(trainer._make_function) == [
        ("self", inspect.Parameter.empty),
        ("step_function", inspect.Parameter.empty),
    ]
    # Ours come first in the method resolution order of our model.
    for name in ("_maybe_symbolic_build", "_make_function"):
        owner = next(
            cls
            for cls in kar.AttributionRegularizedModel.__mro__
            if name in cls.__dict__
        )
        assert owner is distribute.MultiWorkerFitMixin


def test_fit_and_evaluate_still_go_through_the_overridden_methods():
    trainer = keras_trainer.TensorFlowTrainer
    for method in (trainer.fit, trainer.evaluate):
        assert "self._maybe_symbolic_build(iterator=epoch_iterator)" in (
            inspect.getsource(method)
        )
    for method, step in (
        (trainer.make_train_function, "train_step"),
        (trainer.make_test_function, "test_step"),
    ):
        assert f"self._make_function(self.{step})" in inspect.getsource(method)


def test_step_logs_are_averaged_over_axis_0_on_several_workers():
    # The fix gives each log a leading replica axis of length 1, which this
    # mean reduces over the replicas. A Keras that reduces otherwise (e.g.
    # `axis=None`, the fix of #72388) would leave that axis in the logs.
    source = inspect.getsource(keras_trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in source
    assert "_collective_all_reduce_multi_worker(strategy)" in source
    make_function = inspect.getsource(keras_trainer.TensorFlowTrainer._make_function)
    assert 'reduction="auto"' in make_function


def test_one_process_is_not_multi_worker():
    for strategy in (
        tf.distribute.get_strategy(),
        tf.distribute.MirroredStrategy(["/cpu:0"]),
    ):
        assert not distribute.multi_worker(strategy)
        assert not distribute.needs_fix(strategy)
        # Nothing to agree on: the values come back unchanged, as float64.
        values = distribute.mean_over_workers(strategy, [0.25, 3])
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, [0.25, 3.0])
