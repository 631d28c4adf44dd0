"""The relevance pass: Eq. 2 against numpy, conservation, BatchNorm folding, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg._logits import split_logits
from keras_attreg.relevance import (
    batch_norm_fold,
    relevance_map,
    relevance_pass,
)

L = keras.layers


def _set_random_weights(model, seed, bias_scale=0.5):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, shape))
        elif "bias" in variable.path:
            variable.assign(bias_scale * rng.normal(size=shape))
        else:
            variable.assign(rng.normal(size=shape))


def _tiny_net(bias_scale=0.5, dtype="float32"):
    """Conv2D(2, 2x2, relu) -> MaxPool(2) -> Flatten -> Dense(3, relu) -> Dense(2)."""
    model = keras.Sequential(
        [
            keras.Input((5, 5, 1), dtype=dtype),
            L.Conv2D(2, 2, activation="relu", name="conv", dtype=dtype),
            L.MaxPooling2D(2, name="pool", dtype=dtype),
            L.Flatten(name="flatten", dtype=dtype),
            L.Dense(3, activation="relu", name="hidden", dtype=dtype),
            L.Dense(2, name="logits", dtype=dtype),
        ]
    )
    _set_random_weights(model, seed=1, bias_scale=bias_scale)
    return model


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _numpy_relevance(model, x, targets, eps):
    """Eq. 2 with explicit loops: [(a+_{i-1}, a-_i)] of conv, hidden, logits."""
    kc, bc = (w.numpy().astype(np.float64) for w in model.get_layer("conv").weights)
    kh, bh = (w.numpy().astype(np.float64) for w in model.get_layer("hidden").weights)
    ko, bo = (w.numpy().astype(np.float64) for w in model.get_layer("logits").weights)
    pairs = []
    for a0, c in zip(x.astype(np.float64), targets, strict=True):
        zc = np.zeros((4, 4, 2))
        for i in range(4):
            for j in range(4):
                for f in range(2):
                    zc[i, j, f] = (
                        np.sum(a0[i : i + 2, j : j + 2, :] * kc[..., f]) + bc[f]
                    )
        a1 = np.maximum(zc, 0)
        pooled = a1.reshape(2, 2, 2, 2, 2).max(axis=(1, 3))
        a2 = pooled.reshape(-1)
        zh = a2 @ kh + bh
        a3 = np.maximum(zh, 0)
        zo = a3 @ ko + bo
        r_out = np.zeros(2)
        r_out[c] = zo[c]
        # Dense logits: R_j = sum_k a_j w_jk R_k / (z_k + eps sign z_k)
        r3 = np.array(
            [
                sum(a3[j] * ko[j, k] * r_out[k] / _stab(zo[k], eps) for k in range(2))
                for j in range(3)
            ]
        )
        r2 = np.array(
            [
                sum(a2[j] * kh[j, k] * r3[k] / _stab(zh[k], eps) for k in range(3))
                for j in range(8)
            ]
        )
        # MaxPooling: winner takes all.
        r_pool = r2.reshape(2, 2, 2)
        r1 = np.zeros((4, 4, 2))
        for i in range(2):
            for j in range(2):
                for f in range(2):
                    window = a1[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, f]
                    u, v = np.unravel_index(np.argmax(window), (2, 2))
                    r1[2 * i + u, 2 * j + v, f] = r_pool[i, j, f]
        # Conv2D: R_{p} = sum over outputs (i, j, f) whose window holds p.
        r0 = np.zeros((5, 5, 1))
        for i in range(4):
            for j in range(4):
                for f in range(2):
                    share = r1[i, j, f] / _stab(zc[i, j, f], eps)
                    r0[i : i + 2, j : j + 2, :] += (
                        a0[i : i + 2, j : j + 2, :] * kc[..., f] * share
                    )
        pairs.append([(a0, r0), (a2, r2), (a3, r3)])
    return [
        tuple(np.stack(m) for m in zip(*layer, strict=True))
        for layer in zip(*pairs, strict=True)
    ]


def test_relevance_maps_match_numpy_epsilon_rule():
    model = _tiny_net()
    x = np.random.default_rng(2).normal(size=(3, 5, 5, 1)).astype("float32")
    targets = np.array([0, 1, 1])
    eps = 0.1
    result = relevance_pass(
        split_logits(model), tf.constant(x), tf.constant(targets), eps
    )
    expected = _numpy_relevance(model, x, targets, eps)

    assert [layer.name for layer in result.layers] == ["conv", "hidden", "logits"]
    for forward, backward, (a, r) in zip(
        result.forward_inputs, result.backward_maps, expected, strict=True
    ):
        np.testing.assert_allclose(forward.numpy(), a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(backward.numpy(), r, rtol=1e-4, atol=1e-5)
        assert np.abs(r).max() > 1e-2  # the maps are not trivially zero
    np.testing.assert_allclose(
        relevance_map(model, x, targets, epsilon=eps).numpy(),
        expected[0][1],
        rtol=1e-4,
        atol=1e-5,
    )


def test_relevance_is_conserved_layer_to_layer_without_bias():
    # With zero biases and eps -> 0 the z rule conserves relevance exactly
    # (max pooling and flatten always do): every map sums to S_c.
    model = _tiny_net(bias_scale=0.0, dtype="float64")
    x = np.random.default_rng(4).normal(size=(4, 5, 5, 1))
    targets = np.array([0, 1, 0, 1])
    result = relevance_pass(
        split_logits(model), tf.constant(x), tf.constant(targets), 1e-12
    )
    scores = result.logits.numpy()[np.arange(4), targets]
    assert np.abs(scores).min() > 1e-3
    for backward in result.backward_maps:
        sums = backward.numpy().reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose(sums, scores, rtol=1e-8)


def test_bias_and_eps_absorb_relevance_as_the_rule_states():
    # sum(R_{i-1}) = sum_k R_k (z_k - b_k) / (z_k + eps sign z_k) for the last Dense.
    model = _tiny_net()
    x = np.random.default_rng(4).normal(size=(2, 5, 5, 1)).astype("float32")
    targets = np.array([1, 0])
    eps = 0.2
    result = relevance_pass(
        split_logits(model), tf.constant(x), tf.constant(targets), eps
    )
    z = result.logits.numpy()
    bias = model.get_layer("logits").bias.numpy()
    r_out = np.zeros_like(z)
    r_out[np.arange(2), targets] = z[np.arange(2), targets]
    expected = np.sum(r_out * (z - bias) / _stab(z, eps), axis=1)
    np.testing.assert_allclose(
        result.backward_maps[-1].numpy().sum(axis=1), expected, rtol=1e-5
    )


def test_average_pooling_layers_conserve_relevance():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1), dtype="float64"),
            L.Conv2D(3, 1, use_bias=False, activation="relu", dtype="float64"),
            L.AveragePooling2D(2, dtype="float64"),
            L.GlobalAveragePooling2D(dtype="float64"),
            L.Dense(2, use_bias=False, dtype="float64"),
        ]
    )
    _set_random_weights(model, seed=5)
    x = np.abs(np.random.default_rng(6).normal(size=(3, 4, 4, 1)))
    targets = np.array([0, 1, 1])
    relevance = relevance_map(model, x, targets, epsilon=1e-12).numpy()
    scores = model(x).numpy()[np.arange(3), targets]
    np.testing.assert_allclose(relevance.reshape(3, -1).sum(axis=1), scores, rtol=1e-8)


@pytest.mark.parametrize(
    "ending",
    ["dense_softmax", "softmax_layer", "dense_log_softmax", "log_softmax_layer"],
)
def test_softmax_ending_starts_from_the_logit(ending):
    """The logit split (shared with every attribution) stops at the input of
    a softmax or log-softmax ending: its logits and relevance equal those of
    the same network without the ending (the test's own logits model)."""
    logits_model = _tiny_net()
    activation = "log_softmax" if "log" in ending else "softmax"
    if ending.startswith("dense"):
        head = L.Dense(2, activation=activation)
        layers = logits_model.layers[:-1] + [head]
    elif ending == "softmax_layer":
        layers = logits_model.layers + [L.Softmax()]
    else:
        layers = logits_model.layers + [L.Activation("log_softmax")]
    softmax_model = keras.Sequential([keras.Input((5, 5, 1))] + layers)
    if ending.startswith("dense"):
        head.set_weights(logits_model.layers[-1].get_weights())
    x = np.random.default_rng(7).normal(size=(2, 5, 5, 1)).astype("float32")
    targets = np.array([0, 1])
    result = relevance_pass(
        split_logits(softmax_model), tf.constant(x), tf.constant(targets)
    )
    np.testing.assert_allclose(
        result.outputs.numpy(), softmax_model(x).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        result.logits.numpy(), logits_model(x).numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(
        result.input_relevance.numpy(),
        relevance_map(logits_model, x, targets).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def _bn_net():
    """Conv2D -> BN -> ReLU -> Flatten -> Dense -> BN -> ReLU -> Dense."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            L.Conv2D(3, 2, name="conv"),
            L.BatchNormalization(name="bn_conv"),
            L.ReLU(),
            L.Flatten(),
            L.Dense(4, name="dense"),
            L.BatchNormalization(name="bn_dense"),
            L.ReLU(),
            L.Dense(3, name="logits"),
        ]
    )
    _set_random_weights(model, seed=8)
    return model


def _folded_twin(model, x, training):
    """A model without BatchNormalization, weights W' = W*scale, b' = b*scale+shift."""
    twin = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            L.Conv2D(3, 2),
            L.ReLU(),
            L.Flatten(),
            L.Dense(4),
            L.ReLU(),
            L.Dense(3),
        ]
    )
    layers = model.layers
    # (affine layer, its BatchNormalization, the twin's layer)
    pairs = [
        (layers[0], layers[1], twin.layers[0]),
        (layers[4], layers[5], twin.layers[3]),
    ]
    h = tf.constant(x)
    for layer in layers:
        if isinstance(layer, L.BatchNormalization):
            conv_or_dense, _, target = next(p for p in pairs if p[1] is layer)
            scale, shift = batch_norm_fold(layer, h, training)
            kernel, bias = conv_or_dense.get_weights()
            flat_scale = scale.numpy().reshape(-1)
            target.set_weights(
                [kernel * flat_scale, bias * flat_scale + shift.numpy().reshape(-1)]
            )
        h = (
            layer(h, training=training)
            if isinstance(layer, L.BatchNormalization)
            else layer(h)
        )
    twin.layers[-1].set_weights(model.layers[-1].get_weights())
    return twin


def test_batch_norm_fold_gives_the_same_logits_in_inference():
    model = _bn_net()
    x = np.random.default_rng(9).normal(size=(5, 4, 4, 2)).astype("float32")
    twin = _folded_twin(model, x, training=False)
    np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), atol=1e-5, rtol=1e-5)
    # The relevance pass sees the folded affine maps: same map as the twin.
    targets = np.array([0, 1, 2, 0, 1])
    np.testing.assert_allclose(
        relevance_map(model, x, targets).numpy(),
        relevance_map(twin, x, targets).numpy(),
        atol=1e-5,
        rtol=1e-4,
    )


def test_batch_norm_fold_uses_batch_statistics_in_training():
    model = _bn_net()
    x = np.random.default_rng(10).normal(size=(6, 4, 4, 2)).astype("float32")
    twin = _folded_twin(model, x, training=True)
    expected = model(x, training=True).numpy()
    np.testing.assert_allclose(twin(x).numpy(), expected, atol=1e-4, rtol=1e-4)
    # ... which differ from the moving statistics.
    assert np.abs(model(x, training=False).numpy() - expected).max() > 1e-2
    targets = tf.constant([0, 1, 2, 0, 1, 2])
    moving_mean = model.get_layer("bn_conv").moving_mean.numpy()
    result = relevance_pass(split_logits(model), tf.constant(x), targets, training=True)
    np.testing.assert_allclose(result.outputs.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(
        result.input_relevance.numpy(),
        relevance_map(twin, x, targets).numpy(),
        atol=1e-4,
        rtol=1e-3,
    )
    # The forward pass is the model's own: moving statistics were updated.
    assert (
        np.abs(model.get_layer("bn_conv").moving_mean.numpy() - moving_mean).max() > 0
    )


def test_relevance_pass_is_differentiable_and_runs_in_tf_function():
    model = _bn_net()
    x = tf.constant(np.random.default_rng(11).normal(size=(3, 4, 4, 2)), tf.float32)
    targets = tf.constant([2, 0, 1])
    eager = relevance_map(model, x, targets)
    graph = tf.function(lambda x, t: relevance_map(model, x, t))(x, targets)
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.abs(relevance_map(model, x, targets)))
    gradients = tape.gradient(loss, model.trainable_variables)
    for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
        assert gradient is not None, variable.path
        if "kernel" in variable.path or "gamma" in variable.path:
            assert np.abs(gradient.numpy()).max() > 0, variable.path


def test_unknown_layer_raises_naming_layer_type_and_how_to_add_a_rule():
    class Cube(L.Layer):
        def call(self, x):
            return x**3

    model = keras.Sequential([keras.Input((4,)), Cube(name="cube"), L.Dense(2)])
    with pytest.raises(ValueError, match="'cube' of type Cube.*register_rule"):
        relevance_map(model, np.ones((1, 4)), [0])


def test_batch_norm_that_cannot_be_folded_is_its_own_epsilon_layer():
    # Dense(relu) -> BN -> Dense: the BN cannot fold (an activation sits
    # between); it is z = scale * a + shift, R_a = a * scale * R_z / z_eps.
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            L.Dense(3, activation="relu", name="d", dtype="float64"),
            L.BatchNormalization(name="bn", dtype="float64"),
            L.Dense(2, name="out", dtype="float64"),
        ]
    )
    _set_random_weights(model, seed=3)
    x = np.random.default_rng(3).normal(size=(2, 4))
    targets = np.array([1, 0])
    eps = 0.05
    result = relevance_pass(
        split_logits(model), tf.constant(x), tf.constant(targets), eps
    )
    kd, bd = (w.numpy() for w in model.get_layer("d").weights[:2])
    bn = model.get_layer("bn")
    gamma, beta, mean, var = (w.numpy() for w in bn.weights)
    ko, bo = (w.numpy() for w in model.get_layer("out").weights)
    for b in range(2):
        zd = x[b] @ kd + bd
        a = np.maximum(zd, 0)
        scale = gamma / np.sqrt(var + bn.epsilon)
        zb = scale * (a - mean) + beta
        zo = zb @ ko + bo
        r_out = np.zeros(2)
        r_out[targets[b]] = zo[targets[b]]
        r_bn = zb * (ko @ (r_out / _stab(zo, eps)))
        r_a = a * scale * r_bn / _stab(zb, eps)
        r_x = x[b] * (kd @ (r_a / _stab(zd, eps)))
        np.testing.assert_allclose(result.backward_maps[1][b].numpy(), r_bn, rtol=1e-9)
        np.testing.assert_allclose(result.backward_maps[0][b].numpy(), r_x, rtol=1e-9)


def test_subclassed_models_with_raw_tensorflow_operations_raise():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(tf.nn.relu(x))

    subclassed = Subclassed()
    subclassed(np.ones((1, 4)))
    with pytest.raises(ValueError, match="'sub' of type Subclassed.*symbolic inputs"):
        relevance_map(subclassed, np.ones((1, 4)), [0])


def test_bad_eps_and_targets_raise():
    model = _tiny_net()
    x = np.ones((2, 5, 5, 1), "float32")
    with pytest.raises(ValueError, match="eps.*Received: epsilon=-0.1"):
        relevance_map(model, x, [0, 1], epsilon=-0.1)
    with pytest.raises(ValueError, match="targets.*\\[0, 2\\)"):
        relevance_map(model, x, [0, 2])
