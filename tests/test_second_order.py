"""Second derivatives through BatchNormalization in training mode.

The L1 gradient penalty's weight gradient differentiates the input gradient
once more. Through a BatchNormalization layer in training mode, Keras's batch
statistics (`tf.nn.moments`: the variance with the gradient through the mean
stopped) give a second derivative that misses a term; the regularised step
computes the statistics with that gradient kept. The reference is central
finite differences in float64 of the test's own total loss.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar
from keras_attreg._keras.second_order import second_order_layers

ALPHA = 0.3


def _bn_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2), dtype="float64"),
            keras.layers.Conv2D(3, 3, padding="same", dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Activation("tanh", dtype="float64"),
            keras.layers.Conv2D(4, 3, dtype="float64"),
            keras.layers.BatchNormalization(dtype="float64"),
            keras.layers.Activation("tanh", dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 6, 6, 2)), rng.integers(0, 3, 5)


def _total_loss(base, x, y):
    """Task loss + alpha * mean ||dS_c/dx||_1, BatchNorm in training mode,
    written with the test's own tapes."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = base(x, training=True)
        score = tf.reduce_sum(tf.gather(logits, y, batch_dims=1))
    gradient = tape.gradient(score, x)
    task = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return task + ALPHA * tf.reduce_mean(tf.reduce_sum(tf.abs(gradient), [1, 2, 3]))


def _finite_differences(base, variable, indices, x, y, h=1e-6):
    original = variable.numpy()
    result = []
    for index in indices:
        values = []
        for sign in (1, -1):
            value = original.copy()
            value[index] += sign * h
            variable.assign(value)
            values.append(float(_total_loss(base, x, y)))
        result.append((values[0] - values[1]) / (2 * h))
    variable.assign(original)
    return np.array(result)


# Entries of the first convolution's kernel, the first BatchNormalization's
# scale and the second convolution's kernel: all before the second
# BatchNormalization, where the dropped term shows.
INDICES = {
    0: [(0, 0, 0, 0), (1, 2, 1, 2), (2, 1, 0, 1)],
    2: [(0,), (2,)],
    4: [(0, 0, 0, 0), (1, 2, 2, 3), (2, 1, 0, 2)],
}


def _pooled_cnn():
    keras.utils.set_random_seed(2)
    return keras.Sequential(
        [
            keras.Input((8, 8, 2), dtype="float64"),
            keras.layers.Conv2D(
                3, 3, padding="same", activation="tanh", dtype="float64"
            ),
            keras.layers.MaxPooling2D(dtype="float64"),
            keras.layers.Conv2D(
                4, 3, padding="same", activation="tanh", dtype="float64"
            ),
            keras.layers.MaxPooling2D((2, 4), dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )


def _pooled_data():
    rng = np.random.default_rng(7)
    return rng.normal(size=(4, 8, 8, 2)), rng.integers(0, 3, 4)


# Entries of both convolutions' kernels, before and between the poolings.
POOLED_INDICES = {0: [(0, 0, 0, 0), (1, 2, 1, 2)], 2: [(0, 0, 0, 0), (2, 1, 2, 3)]}


@pytest.mark.parametrize(
    "build, data, indices",
    [
        (_bn_cnn, _data, INDICES),
        (_pooled_cnn, _pooled_data, POOLED_INDICES),
    ],
    ids=["batchnorm", "max_pooling"],
)
def test_regularised_step_weight_gradient_matches_finite_differences(
    build, data, indices
):
    x, y = data()
    base = build()
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(ALPHA))
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    variables = {i: base.trainable_variables[i] for i in indices}
    before = {i: v.numpy().copy() for i, v in variables.items()}
    expected = {
        i: _finite_differences(base, v, indices[i], x, y) for i, v in variables.items()
    }
    model.train_on_batch(x, y)
    for i, variable in variables.items():
        # SGD with learning rate 1: the weight change is minus the gradient.
        step = before[i] - variable.numpy()
        actual = np.array([step[index] for index in indices[i]])
        np.testing.assert_allclose(actual, expected[i], rtol=1e-6, atol=1e-9)


def test_keras_batch_statistics_miss_a_second_order_term():
    """The power of the previous test: the same weight gradient through
    Keras's own statistics is off by more than its tolerance."""
    x, y = _data()
    base = _bn_cnn()
    kernel = base.trainable_variables[4]
    expected = _finite_differences(base, kernel, INDICES[4], x, y)
    with tf.GradientTape() as tape:
        loss = _total_loss(base, x, y)
    gradient = tape.gradient(loss, kernel).numpy()
    actual = np.array([gradient[index] for index in INDICES[4]])
    assert np.abs(actual - expected).max() > 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_statistics_keep_forward_values_and_first_derivatives(dtype):
    keras.utils.set_random_seed(1)
    layer = keras.layers.BatchNormalization(dtype=dtype)
    inputs = keras.Input((4, 4, 3), dtype=dtype)
    model = keras.Model(inputs, layer(inputs))
    x = tf.constant(np.random.default_rng(2).normal(size=(6, 4, 4, 3)), dtype)
    weights = tf.constant(np.random.default_rng(3).normal(size=(6, 4, 4, 3)), dtype)
    results = []
    for exact in (False, True):
        moving = [v.numpy() for v in layer.non_trainable_variables]
        with tf.GradientTape() as tape:
            tape.watch(x)
            if exact:
                with second_order_layers(model):
                    outputs = model(x, training=True)
            else:
                outputs = model(x, training=True)
            loss = tf.reduce_sum(weights * outputs)
        gradients = tape.gradient(loss, [x, *layer.trainable_variables])
        updated = [v.numpy() for v in layer.non_trainable_variables]
        for variable, value in zip(layer.non_trainable_variables, moving, strict=True):
            variable.assign(value)
        results.append((outputs.numpy(), gradients, updated))
    (keras_out, keras_grads, keras_moving), (out, grads, moving) = results
    np.testing.assert_array_equal(out, keras_out)
    for a, b in zip(moving, keras_moving, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(grads, keras_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == "float32" else 1e-12)
    # Outside the block, the layer is Keras's own again.
    assert "_moments" not in vars(layer)


# Max pooling: the first derivative is TensorFlow's `MaxPoolGrad`, a linear map
# L of the upstream gradient; its own derivative must be the transpose L^T,
# also where a window holds ties.


def _pool_model(dtype, **pool):
    inputs = keras.Input((6, 8, 3), dtype=dtype)
    return keras.Model(inputs, keras.layers.MaxPooling2D(dtype=dtype, **pool)(inputs))


def _tied_inputs(dtype):
    """Few levels, many zeros: most windows hold ties."""
    rng = np.random.default_rng(4)
    return tf.constant(np.maximum(np.round(rng.normal(size=(5, 6, 8, 3))), 0), dtype)


def _pool_derivatives(model, x, upstream, probe, patched):
    """(outputs, L(upstream), d<probe, L(upstream)>/d upstream = L^T probe)."""
    layers = second_order_layers(model) if patched else contextlib.nullcontext()
    with tf.GradientTape() as outer, layers:
        outer.watch(upstream)
        with tf.GradientTape() as inner:
            inner.watch(x)
            outputs = model(x)
        first = inner.gradient(outputs, x, output_gradients=upstream)
        inner_product = tf.reduce_sum(probe * first)
    return outputs, first, outer.gradient(inner_product, upstream)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pool_second_derivative_is_the_transpose_of_the_first(dtype):
    model = _pool_model(dtype)
    x = _tied_inputs(dtype)
    rng = np.random.default_rng(5)
    upstream = tf.constant(rng.normal(size=(5, 3, 4, 3)), dtype)
    probe = tf.constant(rng.normal(size=(5, 6, 8, 3)), dtype)
    keras_out, keras_first, keras_transpose = _pool_derivatives(
        model, x, upstream, probe, False
    )
    out, first, transpose = _pool_derivatives(model, x, upstream, probe, True)
    np.testing.assert_array_equal(out, keras_out)
    np.testing.assert_array_equal(first, keras_first)
    # TensorFlow's own second derivative (`MaxPoolGradGrad`) agrees.
    tolerance = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(transpose, keras_transpose, rtol=tolerance)
    # <L^T probe, v> = <probe, L v> for any v, L from Keras's own layer.
    for seed in range(3):
        v = tf.constant(np.random.default_rng(seed).normal(size=(5, 3, 4, 3)), dtype)
        _, keras_lv, _ = _pool_derivatives(model, x, v, probe, False)
        np.testing.assert_allclose(
            float(tf.reduce_sum(transpose * v)),
            float(tf.reduce_sum(probe * keras_lv)),
            rtol=1e-5 if dtype == "float32" else 1e-12,
        )
    assert "call" not in vars(model.layers[-1])


def _second_order_ops(model, x):
    """Op types of the traced nested-tape L1 gradient of `model` within
    `second_order_layers`."""

    @tf.function
    def step(x):
        with tf.GradientTape() as outer, second_order_layers(model):
            with tf.GradientTape() as inner:
                inner.watch(x)
                total = tf.reduce_sum(model(x, training=True))
            gradient = inner.gradient(total, x)
            penalty = tf.reduce_sum(tf.abs(gradient))
        return outer.gradient(penalty, model.trainable_variables)

    graph = step.get_concrete_function(x).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(
    "pool, dtype, cheap",
    [
        ({}, "float32", True),
        ({"pool_size": (2, 4)}, "float32", True),
        ({"strides": 1}, "float32", False),  # overlapping windows
        ({"pool_size": 3}, "float32", False),  # 9 elements: avg * 9 rounds
        ({"padding": "same"}, "float32", False),
        ({}, "bfloat16", True),
        ({}, "float16", False),
    ],
)
def test_max_pool_second_derivative_kernel_choice(pool, dtype, cheap):
    inputs = keras.Input((12, 12, 2), dtype=dtype)
    hidden = keras.layers.Conv2D(3, 3, dtype=dtype)(inputs)
    pooled = keras.layers.MaxPooling2D(dtype=dtype, **pool)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype=dtype)(pooled))
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 12, 12, 2)), dtype)
    ops = _second_order_ops(model, x)
    assert ("MaxPoolGradGrad" not in ops) == cheap
    assert ("AvgPool" in ops) == cheap
