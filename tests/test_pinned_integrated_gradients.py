"""Integrated gradients with a non-zero baseline array, from the test's own tape.

Oracle: the midpoint rule the docstring states,

    R = (x - b) / m * sum_{k=0}^{m-1} dS_c(b + a_k (x - b))/dx,  a_k = (k + 1/2)/m,

with every gradient taken by the test's own `tf.GradientTape` on the
pre-softmax logit S_c of a hand-built logit model (the library's `saliency`
and its logit finding are not used), and completeness
sum R = S_c(x) - S_c(b) at a high step count.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_attreg.attributions import integrated_gradients

L = keras.layers
F64 = "float64"


def _cnn():
    """Conv2D(tanh) -> AveragePooling -> Conv2D(softplus) -> Flatten -> Dense(tanh)
    -> Dense -> Softmax; returns (model, logit model)."""
    keras.utils.set_random_seed(21)
    inputs = keras.Input((6, 6, 2), dtype=F64)
    h = L.Conv2D(4, 3, padding="same", activation="tanh", dtype=F64)(inputs)
    h = L.AveragePooling2D(2, dtype=F64)(h)
    h = L.Conv2D(3, 2, activation="softplus", dtype=F64)(h)
    h = L.Flatten(dtype=F64)(h)
    h = L.Dense(5, activation="tanh", bias_initializer="ones", dtype=F64)(h)
    logits = L.Dense(3, dtype=F64)(h)
    outputs = L.Softmax(dtype=F64)(logits)
    return keras.Model(inputs, outputs), keras.Model(inputs, logits)


def _data():
    rng = np.random.default_rng(22)
    x = rng.normal(size=(3, 6, 6, 2))
    baseline = rng.normal(size=(6, 6, 2))  # a random non-zero array
    return x, baseline, np.array([2, 0, 1])


def _logit_gradient(logits, points, targets):
    points = tf.constant(points)
    with tf.GradientTape() as tape:
        tape.watch(points)
        score = tf.gather(logits(points), targets, axis=1, batch_dims=1)
    return tape.gradient(score, points).numpy()


def _score(logits, x, targets):
    return logits(x).numpy()[np.arange(len(targets)), targets]


def test_integrated_gradients_is_the_midpoint_sum_of_own_tape_gradients():
    """Oracle: the midpoint Riemann sum (a_k = (k + 1/2)/m, m = `steps`) of
    dS_c/dx from the test's own GradientTape on the hand-built pre-softmax
    logit model, times (x - b)/m, for a random non-zero baseline array b; a
    steps count that does not divide the chunk (batch_size=4) and an odd m.
    The left or right Riemann sum differs by far more than the tolerance."""
    model, logits = _cnn()
    x, baseline, targets = _data()
    steps = 7
    delta = x - baseline

    def riemann(offset):
        total = np.zeros_like(x)
        for k in range(steps):
            alpha = (k + offset) / steps
            total += _logit_gradient(logits, baseline + alpha * delta, targets)
        return delta * total / steps

    expected = riemann(0.5)
    ours = integrated_gradients(
        model, x, targets, baseline=baseline, steps=steps, batch_size=4
    ).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-13)
    for other in (0.0, 1.0):
        assert np.abs(riemann(other) - expected).max() > 1e-3 * np.abs(expected).max()


def test_integrated_gradients_is_complete_at_many_steps():
    """Oracle: completeness, sum_i R_i = S_c(x) - S_c(b) (Sundararajan et al.
    2017), with both scores from the hand-built logit model, for a random
    non-zero baseline array b. The model is smooth (tanh, softplus, average
    pooling), so the midpoint rule's error is O(1/m^2): about 2e-6 of the
    score difference at m = 256 (5e-4 at m = 16)."""
    model, logits = _cnn()
    x, baseline, targets = _data()
    maps = integrated_gradients(model, x, targets, baseline=baseline, steps=256)
    totals = maps.numpy().reshape(len(x), -1).sum(axis=1)
    difference = _score(logits, x, targets) - _score(
        logits, np.broadcast_to(baseline, x.shape), targets
    )
    assert np.abs(difference).min() > 0.03  # a baseline that changes the score
    np.testing.assert_allclose(totals, difference, rtol=1e-5)
