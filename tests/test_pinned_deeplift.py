"""DeepLIFT-Rescale values against multipliers computed by hand in NumPy.

Oracle: Shrikumar et al. (2017), Rescale rule. For an elementwise
nonlinearity y = f(z) the multiplier is m = (f(z) - f(z0)) / (z - z0), z0 the
unit's input on the baseline (f'(z) where z == z0); linear maps pass
multipliers by the chain rule (their transposed weights); the attribution is
(x - x0) * (multiplier of the target logit to the input). Everything of the
expected value is NumPy on the layers' weights; `keras_attreg` is only the
code under test. Summation to delta (sum R = S_c(x) - S_c(x0)) is asserted
of the hand computation itself, as a check of the oracle.
"""

import keras
import numpy as np

from keras_attreg.attributions import deeplift_rescale

L = keras.layers
F64 = "float64"


def _slope(z, z0):
    """Rescale multiplier of tanh: (tanh z - tanh z0) / (z - z0)."""
    near = np.abs(z - z0) < 1e-5
    derivative = 1 - np.tanh(z) ** 2
    return np.where(near, derivative, (np.tanh(z) - np.tanh(z0)) / (z - z0 + near))


def _random_biases(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.Dense):
            layer.bias.assign(0.5 * rng.normal(size=layer.bias.shape))


def _tanh_mlp():
    """Dense(tanh) -> Dense -> Activation(tanh) -> Dense -> Softmax: both ways
    of writing the nonlinearity (a layer's activation, a layer of its own)."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype=F64),
            L.Dense(4, activation="tanh", dtype=F64),
            L.Dense(3, dtype=F64),
            L.Activation("tanh", dtype=F64),
            L.Dense(3, dtype=F64),
            L.Softmax(dtype=F64),
        ]
    )
    _random_biases(model, 12)
    return model


def _mlp_by_hand(model, x, x0, targets, slope=_slope):
    """(attributions, S_c(x), S_c(x0)) of `_tanh_mlp` by the Rescale rule."""
    w1, b1, w2, b2, w3, b3 = (w.numpy() for w in model.weights)

    def forward(inputs):
        z1 = inputs @ w1 + b1
        a1 = np.tanh(z1)
        z2 = a1 @ w2 + b2
        a2 = np.tanh(z2)
        return z1, z2, a2 @ w3 + b3

    z1, z2, logits = forward(x)
    z1_0, z2_0, logits_0 = forward(np.broadcast_to(x0, x.shape))
    m_a2 = w3[:, targets].T  # dS_c / da2, linear
    m_z2 = m_a2 * slope(z2, z2_0)
    m_a1 = m_z2 @ w2.T
    m_z1 = m_a1 * slope(z1, z1_0)
    m_x = m_z1 @ w1.T
    rows = np.arange(len(x))
    return (x - x0) * m_x, logits[rows, targets], logits_0[rows, targets]


def _residual():
    """x -> Dense -> tanh = t; s = t + x (skip); Dense(tanh) on s, then
    Dense(s + that) -> logits: two skip connections around nonlinearities."""
    keras.utils.set_random_seed(13)
    inputs = keras.Input((4,), dtype=F64)
    t = L.Activation("tanh", dtype=F64)(L.Dense(4, dtype=F64)(inputs))
    s = L.Add(dtype=F64)([t, inputs])
    u = L.Dense(4, activation="tanh", dtype=F64)(s)
    v = L.Add(dtype=F64)([s, u])
    logits = L.Dense(3, dtype=F64)(v)
    model = keras.Model(inputs, logits)
    _random_biases(model, 14)
    return model


def _residual_by_hand(model, x, x0, targets, slope=_slope):
    w1, b1, w2, b2, w3, b3 = (w.numpy() for w in model.weights)

    def forward(inputs):
        z1 = inputs @ w1 + b1
        s = np.tanh(z1) + inputs
        z2 = s @ w2 + b2
        v = s + np.tanh(z2)
        return z1, z2, v @ w3 + b3

    z1, z2, logits = forward(x)
    z1_0, z2_0, logits_0 = forward(np.broadcast_to(x0, x.shape))
    m_v = w3[:, targets].T
    # v = s + tanh(z2): the skip passes m_v, the branch Rescale-then-linear.
    m_s = m_v + (m_v * slope(z2, z2_0)) @ w2.T
    m_x = m_s + (m_s * slope(z1, z1_0)) @ w1.T
    rows = np.arange(len(x))
    return (x - x0) * m_x, logits[rows, targets], logits_0[rows, targets]


def _check(model, by_hand, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, *shape))
    x0 = rng.normal(size=shape)  # a non-zero baseline, one sample's shape
    targets = np.array([0, 1, 2, 1])
    expected, score, score_0 = by_hand(model, x, x0, targets)
    # Sanity of the oracle: summation to delta, and the forward pass is the
    # model's (pre-softmax logit).
    np.testing.assert_allclose(expected.sum(axis=1), score - score_0, rtol=1e-12)
    ours = deeplift_rescale(model, x, targets, baseline=x0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-13)
    # Power: with the gradient tanh'(z) in place of the Rescale slope (the
    # "gradient x (x - x0)" map) the values differ far beyond the tolerance.
    gradient_map = by_hand(model, x, x0, targets, lambda z, z0: 1 - np.tanh(z) ** 2)[0]
    assert np.abs(gradient_map - expected).max() > 1e-2 * np.abs(expected).max()


def test_deeplift_rescale_matches_hand_multipliers_on_a_tanh_mlp():
    """Oracle: `_mlp_by_hand`, the Rescale multipliers of a Dense-tanh-Dense-
    tanh-Dense network with biases, chained by hand in NumPy, times (x - x0)
    for a random non-zero baseline array x0; the model ends in a Softmax, so
    the score is the pre-softmax logit. The hand computation sums to
    S_c(x) - S_c(x0) (checked)."""
    model = _tanh_mlp()
    logits_model = keras.Model(model.inputs[0], model.layers[-2].output)
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(2, 5))
    w1, b1, w2, b2, w3, b3 = (w.numpy() for w in model.weights)
    hand = np.tanh(np.tanh(probe @ w1 + b1) @ w2 + b2) @ w3 + b3
    np.testing.assert_allclose(logits_model(probe).numpy(), hand, rtol=1e-12)
    _check(model, _mlp_by_hand, (5,), seed=15)


def test_deeplift_rescale_matches_hand_multipliers_on_a_residual_graph():
    """Oracle: `_residual_by_hand`, the Rescale multipliers of a functional
    graph with two skip connections (Add) around tanh units, chained by hand
    in NumPy (a skip passes its multiplier unchanged and adds it to the
    branch's), times (x - x0) for a random non-zero baseline array x0. The
    hand computation sums to S_c(x) - S_c(x0) (checked)."""
    model = _residual()
    rng = np.random.default_rng(1)
    probe = rng.normal(size=(2, 4))
    w1, b1, w2, b2, w3, b3 = (w.numpy() for w in model.weights)
    s = np.tanh(probe @ w1 + b1) + probe
    hand = (s + np.tanh(s @ w2 + b2)) @ w3 + b3
    np.testing.assert_allclose(model(probe).numpy(), hand, rtol=1e-12)
    _check(model, _residual_by_hand, (4,), seed=16)
