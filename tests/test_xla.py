"""The wrapper's train and test steps compiled with XLA (`jit_compile=True`).

Oracle: the same model, weights and batches trained without XLA (the step
itself is pinned against finite differences in test_second_order.py,
test_pinned_fbi_step.py and test_masks.py): one epoch must give the same
weights within float tolerance, and the run-time checks must raise the same
errors, with no update applied by the failing step.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.trainers.trainer import model_supports_jit

import keras_attreg as kar

L = keras.layers


def _cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(4, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(3),
        ]
    )


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 2)).astype("float32")
    y = rng.integers(0, 3, n)
    masks = (rng.random((n, 8, 8)) < 0.3).astype("float32")
    return x, y, masks


REGULARIZERS = {
    "l1": lambda: kar.L1GradientPenalty(0.05),
    "fbi": lambda: kar.FBILoss(0.3),
    "rrr": lambda: kar.RRRPenalty(2.0),
}


def _model(name, weights, jit_compile, every=1, nonfinite="raise"):
    base = _cnn()
    base.set_weights(weights)
    model = kar.AttributionRegularizedModel(
        base, REGULARIZERS[name](), every=every, nonfinite=nonfinite
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.slow  # XLA compiles each step: tens of seconds on 2 cores
@pytest.mark.parametrize("name, every", [("l1", 1), ("fbi", 1), ("l1", 2), ("rrr", 1)])
def test_one_epoch_with_xla_equals_one_without(name, every):
    """L1, FBI, lazy (every=2) and masked (RRR) steps: weights after one epoch
    of four batches and the epoch's logs, XLA against no XLA."""
    keras.utils.set_random_seed(0)
    weights = _cnn().get_weights()
    x, y, masks = _data(16)
    results = []
    for jit in (False, True):
        model = _model(name, weights, jit, every=every)
        assert model.jit_compile is jit
        mask = {"annotation_mask": masks} if name == "rrr" else {}
        logs = model.fit(x, y, batch_size=4, shuffle=False, verbose=0, **mask)
        evaluated = model.evaluate(x, y, verbose=0, return_dict=True, **mask)
        results.append((model.base_model.get_weights(), logs.history, evaluated))
    (plain_w, plain_logs, plain_eval), (xla_w, xla_logs, xla_eval) = results
    assert any(not np.array_equal(a, b) for a, b in zip(weights, plain_w, strict=True))
    for a, b in zip(plain_w, xla_w, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for key, value in plain_logs.items():
        np.testing.assert_allclose(xla_logs[key], value, rtol=1e-4, atol=1e-6)
    for key, value in plain_eval.items():
        np.testing.assert_allclose(xla_eval[key], value, rtol=1e-4, atol=1e-6)


def test_the_wrapper_supports_xla_as_its_base_model_does():
    """`jit_compile="auto"` resolves from `model_supports_jit` (True on a GPU
    machine when every layer supports XLA): the wrapper answers as its base
    model, and "auto" on this CPU-only machine resolves to False for both, as
    Keras does for a plain model."""
    base = _cnn()
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(0.1))
    assert model_supports_jit(model) and model_supports_jit(base)
    model.compile(optimizer="sgd", loss="mse")
    base.compile(optimizer="sgd", loss="mse")
    assert model.jit_compile == base.jit_compile


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_checks_raise_the_same_errors_under_xla(jit_compile):
    """Labels out of range in a dataset, a fractional label, and a NaN input:
    the error of the eager checks, and the failing step applies no update
    (weights equal to those before the failing batch)."""
    keras.utils.set_random_seed(0)
    weights = _cnn().get_weights()
    x, y, _ = _data(8)
    model = _model("l1", weights, jit_compile)
    bad_labels = np.array([0, 1, 2, 9, 0, 1, 2, 0])
    data = tf.data.Dataset.from_tensor_slices((x, bad_labels)).batch(8)
    with pytest.raises(
        ValueError,
        match=r"argument y: expected class indices in \[0, 3\)\. "
        r"Received: y with out-of-range values \[9\]$",
    ):
        model.fit(data, verbose=0)
    for before, after in zip(weights, model.base_model.get_weights(), strict=True):
        np.testing.assert_array_equal(after, before)
    fractional = tf.data.Dataset.from_tensor_slices((x, y + 0.5)).batch(8)
    with pytest.raises(ValueError, match=r"fractional values \[0\.5 2\.5\]"):
        model.evaluate(fractional, verbose=0)
    broken = x.copy()
    broken[3, 2, 2, 1] = np.nan
    with pytest.raises(
        FloatingPointError, match=r"training step 0: inputs \(x\) contain NaN"
    ):
        model.fit(broken, y, batch_size=8, verbose=0)
    for before, after in zip(weights, model.base_model.get_weights(), strict=True):
        np.testing.assert_array_equal(after, before)
    # The guard was cleared: clean data trains again.
    model.fit(x, y, batch_size=8, verbose=0)
    assert not np.array_equal(model.base_model.get_weights()[0], weights[0])


@pytest.mark.slow  # XLA compiles each step: tens of seconds on 2 cores
def test_skip_mode_under_xla_skips_the_bad_batch_only():
    """nonfinite="skip": a NaN batch is skipped (weights and BatchNorm
    statistics as before it), the clean batch trains as without XLA."""
    keras.utils.set_random_seed(0)
    weights = _cnn().get_weights()
    x, y, _ = _data(8)
    broken = x.copy()
    broken[5, 0, 0, 0] = np.inf
    results = []
    for jit in (False, True):
        model = _model("l1", weights, jit, nonfinite="skip")
        logs = model.fit(broken, y, batch_size=4, shuffle=False, verbose=0)
        assert logs.history["skipped_batches"] == [1.0]
        results.append(model.base_model.get_weights())
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


class _Subclassed(keras.Model):
    """A subclassed classifier whose call only chains layers."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.logits = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.logits(self.pool(self.conv(x)))


def _augmented():
    image = keras.Input((8, 8, 2))
    x = keras.layers.RandomFlip("horizontal", seed=1)(image)
    x = keras.layers.RandomContrast(0.3, seed=2)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, keras.layers.Dense(3)(x))


def _fbi(base, jit_compile):
    model = kar.AttributionRegularizedModel(base, kar.FBILoss(lam=0.5))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


@pytest.mark.slow  # XLA compiles each step: tens of seconds on 2 cores
def test_fbi_on_subclassed_and_augmented_models_under_xla():
    """Oracle: the same model without XLA. A subclassed model (entered by
    tracing its call): one epoch's weights and logs equal. A model starting
    with RandomFlip and RandomContrast: FBI's inference-mode loss (the layers
    are identity there) equals; in training mode the epoch runs under XLA with
    finite logs and moves every weight (XLA draws its own random flips and
    contrasts, so the numbers are not compared)."""
    x, y, _ = _data(16)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        base = _Subclassed()
        base(x[:1])
        model = _fbi(base, jit)
        logs = model.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
        results.append((base.get_weights(), logs))
    (plain_w, plain_logs), (xla_w, xla_logs) = results
    for a, b in zip(plain_w, xla_w, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(xla_logs["fbi_loss"], plain_logs["fbi_loss"], rtol=1e-4)

    keras.utils.set_random_seed(0)
    weights = _augmented().get_weights()
    evaluated = []
    for jit in (False, True):
        base = _augmented()
        base.set_weights(weights)
        model = _fbi(base, jit)
        evaluated.append(model.evaluate(x, y, verbose=0, return_dict=True))
        logs = model.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
        assert all(np.isfinite(v).all() for v in logs.values())
        moved = [
            not np.array_equal(a, b)
            for a, b in zip(weights, base.get_weights(), strict=True)
        ]
        assert all(moved)
    np.testing.assert_allclose(
        evaluated[1]["fbi_loss"], evaluated[0]["fbi_loss"], rtol=1e-4
    )
    assert evaluated[0]["fbi_loss"] > 0
