"""FBILoss through `fit`: one `train_on_batch` step against finite differences.

The oracle of every test here is the test's own FBI loss, written out in
NumPy (forward pass with training-mode BatchNormalization statistics, the
epsilon-LRP pass of Eq. 2, Eq. 3 and Eq. 4), differentiated by central finite
differences in float64. `keras_attreg` computes nothing of the expected
value: only the model's initial weights are read from it. With
`SGD(learning_rate=1.0)` the weight change of one step is minus the gradient
of `(1 - lambda) * task + lambda * FBI`.

BatchNormalization: the loss uses the batch mean and (biased) variance, as the
training step does; the moving statistics are updated by the step but are no
trainable weights, so they are not compared.
"""

import keras
import numpy as np
import pytest

import keras_attreg as kar

L = keras.layers
F64 = "float64"
LAM = 0.4
EPS = 0.05
BN_EPSILON = 1e-3  # Keras's default


def _stab(z):
    """z + eps * sign(z), sign(0) = +1."""
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def _cross_entropy(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(y)), y].mean()


def _l1(forward, backward):
    """Eq. 3's L1: mean |a+ - a-| over the units, per sample."""
    n = len(forward)
    return np.abs(forward.reshape(n, -1) - backward.reshape(n, -1)).mean(axis=1)


def _dense_relevance(a, w, z, relevance):
    """Eq. 2 for a Dense layer: a * W^T (R / (z + eps sign z))."""
    return a * ((relevance / _stab(z)) @ w.T)


def _start(logits, y):
    """R_logits = S_c * onehot(c)."""
    r = np.zeros_like(logits)
    rows = np.arange(len(y))
    r[rows, y] = logits[rows, y]
    return r


# -- BatchNorm CNN: Conv2D(3x3, valid) -> BN -> ReLU -> MaxPool(2) -> Flatten
# -- -> Dense.


def _bn_cnn():
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2), dtype=F64),
            L.Conv2D(3, 3, dtype=F64),
            L.BatchNormalization(dtype=F64),
            L.ReLU(dtype=F64),
            L.MaxPooling2D(2, dtype=F64),
            L.Flatten(dtype=F64),
            L.Dense(3, dtype=F64),
        ]
    )
    # Non-trivial BatchNorm scale/shift and biases, so that each enters.
    rng = np.random.default_rng(5)
    conv, bn, dense = model.layers[0], model.layers[1], model.layers[-1]
    conv.bias.assign(rng.normal(size=3) * 0.3)
    bn.gamma.assign(1.0 + 0.5 * rng.normal(size=3))
    bn.beta.assign(0.3 * rng.normal(size=3))
    dense.bias.assign(0.3 * rng.normal(size=3))
    return model


def _bn_cnn_loss(params, x, y, lam=LAM):
    """(1 - lam) * cross-entropy + lam * FBI of the BatchNorm CNN, in NumPy."""
    w, b, gamma, beta, wd, bd = params
    n = len(x)
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
    # patches[n, i, j, c, di, dj] = x[n, i + di, j + dj, c]
    conv = np.einsum("nijcab,abco->nijo", patches, w) + b
    mean = conv.mean(axis=(0, 1, 2))
    variance = conv.var(axis=(0, 1, 2))  # biased, as in training
    scale = gamma / np.sqrt(variance + BN_EPSILON)
    z1 = scale * (conv - mean) + beta
    h = np.maximum(z1, 0.0)
    windows = h.reshape(n, 2, 2, 2, 2, 3)  # (n, I, di, J, dj, channel)
    pooled = windows.max(axis=(2, 4))
    flat = pooled.reshape(n, -1)
    logits = flat @ wd + bd
    task = _cross_entropy(logits, y)

    r_flat = _dense_relevance(flat, wd, logits, _start(logits, y))
    r_pooled = r_flat.reshape(pooled.shape)
    # Max pooling: winner takes all (ties only where the pooled value is 0,
    # whose relevance is 0 as well).
    winner = windows == pooled[:, :, None, :, None, :]
    r_h = (winner * r_pooled[:, :, None, :, None, :]).reshape(h.shape)
    # ReLU passes relevance on; the BatchNorm is folded into the convolution:
    # W' = W * scale, z = the BatchNorm output.
    ratio = r_h / _stab(z1) * scale
    back = np.zeros_like(x)
    for di in range(3):
        for dj in range(3):
            back[:, di : di + 4, dj : dj + 4, :] += np.einsum(
                "nijo,co->nijc", ratio, w[di, dj]
            )
    r_x = x * back
    fbi = (_l1(x, r_x) + _l1(flat, r_flat)) / 2
    return (1 - lam) * task + lam * fbi.mean()


# -- Residual graph: x -> Dense(relu) = a -> Dense(relu) = b; s = a + b;
# -- logits = Dense(s). The tensor a has two consumers.


def _residual():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((5,), dtype=F64)
    a = L.Dense(4, activation="relu", bias_initializer="ones", dtype=F64)(inputs)
    b = L.Dense(4, activation="relu", dtype=F64)(a)
    s = L.Add(dtype=F64)([a, b])
    logits = L.Dense(3, dtype=F64)(s)
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, L.Dense):
            layer.bias.assign(0.3 * rng.normal(size=layer.bias.shape))
    return model


def _residual_loss(params, x, y, lam=LAM):
    """(1 - lam) * cross-entropy + lam * FBI of the residual graph, in NumPy.

    K = 3: Dense 1 reads x, Dense 2 reads a, Dense 3 reads s. The relevance of
    a is the sum of what Add and Dense 2 send back to it; Add gives each
    operand a_k * R_s / (s + eps sign s)."""
    w1, b1, w2, b2, w3, b3 = params
    z1 = x @ w1 + b1
    a = np.maximum(z1, 0.0)
    z2 = a @ w2 + b2
    b = np.maximum(z2, 0.0)
    s = a + b
    logits = s @ w3 + b3
    task = _cross_entropy(logits, y)

    r_s = _dense_relevance(s, w3, logits, _start(logits, y))
    r_a_skip = a * r_s / _stab(s)
    r_b = b * r_s / _stab(s)
    r_a = r_a_skip + _dense_relevance(a, w2, z2, r_b)
    r_x = _dense_relevance(x, w1, z1, r_a)
    fbi = (_l1(x, r_x) + _l1(a, r_a) + _l1(s, r_s)) / 3
    return (1 - lam) * task + lam * fbi.mean()


def _finite_differences(loss, params, x, y, picks, h=1e-6, **kwargs):
    """Central differences of `loss` at the sampled entries of each weight."""
    result = {}
    for v, indices in picks.items():
        values = []
        for index in indices:
            terms = []
            for sign in (1, -1):
                shifted = [p.copy() for p in params]
                shifted[v][index] += sign * h
                terms.append(loss(shifted, x, y, **kwargs))
            values.append((terms[0] - terms[1]) / (2 * h))
        result[v] = np.array(values)
    return result


def _picks(params, count, seed):
    rng = np.random.default_rng(seed)
    picks = {}
    for v, p in enumerate(params):
        flat = rng.choice(p.size, size=min(count, p.size), replace=False)
        picks[v] = [np.unravel_index(i, p.shape) for i in flat]
    return picks


CASES = {
    "batchnorm_cnn": (
        _bn_cnn,
        _bn_cnn_loss,
        lambda rng: rng.normal(size=(5, 6, 6, 2)),
    ),
    "residual_graph": (
        _residual,
        _residual_loss,
        lambda rng: rng.normal(size=(6, 5)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fbi_train_on_batch_step_is_minus_the_finite_difference_gradient(case):
    """Oracle: central finite differences (h = 1e-6, float64) of the test's
    own NumPy loss (1 - lambda) * task + lambda * FBI (`_bn_cnn_loss`,
    `_residual_loss`): the forward pass, the epsilon-LRP pass (BatchNorm
    folded into the convolution with batch statistics, max pooling winner
    takes all, Add splitting R_s in proportion to its operands, the relevance
    of a tensor summed over its consumers) and Eq. 3-4 by hand. The step of
    `train_on_batch` with SGD(1.0) must be minus that gradient, at three
    sampled entries of every trainable variable."""
    build, loss, draw = CASES[case]
    model = build()
    rng = np.random.default_rng(8)
    x = draw(rng)
    y = rng.integers(0, 3, len(x))
    params = [v.numpy().copy() for v in model.trainable_variables]
    picks = _picks(params, 3, seed=9)

    # The oracle's own forward value against the model's (training mode).
    logits = model(x, training=True).numpy()
    expected_task = _cross_entropy(logits, y)
    np.testing.assert_allclose(loss(params, x, y, lam=0.0), expected_task, rtol=1e-12)

    expected = _finite_differences(loss, params, x, y, picks)
    # The FBI term matters at the sampled entries: without it the gradient
    # differs by far more than the tolerance.
    task_only = _finite_differences(loss, params, x, y, picks, lam=0.0)
    shift = max(np.abs(expected[v] - (1 - LAM) * task_only[v]).max() for v in expected)
    assert shift > 1e-3

    wrapped = kar.AttributionRegularizedModel(model, kar.FBILoss(lam=LAM, epsilon=EPS))
    wrapped.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=F64),
    )
    wrapped.train_on_batch(x, y)
    for v, variable in enumerate(model.trainable_variables):
        step = params[v] - variable.numpy()
        actual = np.array([step[index] for index in picks[v]])
        np.testing.assert_allclose(
            actual,
            expected[v],
            rtol=1e-6,
            atol=1e-9,
            err_msg=f"{case}: {variable.path} at {picks[v]}",
        )
