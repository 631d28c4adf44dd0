"""Attribution methods against independent computations (finite differences,
hand-derived LRP, numpy occlusion, the completeness axiom, tf-keras-vis)."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg.attributions import (
    deeplift_rescale,
    epsilon_lrp,
    gradient_x_input,
    integrated_gradients,
    occlusion,
    saliency,
    smoothgrad,
)
from keras_attreg.attributions._utils import _TRACED
from keras_attreg.attributions.gradient import _smoothgrad_kernel

RNG = np.random.default_rng(0)


def _cnn(activation="relu", use_bias=True, dtype="float64", softmax=True):
    """A small CNN ending in a separate Softmax layer; returns (model, logits)."""
    inputs = keras.Input((6, 6, 2), dtype=dtype)
    h = keras.layers.Conv2D(
        4, 3, activation=activation, use_bias=use_bias, dtype=dtype
    )(inputs)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(5, use_bias=use_bias, dtype=dtype)(h)
    h = keras.layers.Activation(activation, dtype=dtype)(h)
    logits = keras.layers.Dense(3, use_bias=use_bias, dtype=dtype)(h)
    outputs = keras.layers.Softmax(dtype=dtype)(logits) if softmax else logits
    return keras.Model(inputs, outputs), keras.Model(inputs, logits)


def _inputs(count=3, dtype="float64"):
    x = RNG.normal(size=(count, 6, 6, 2)).astype(dtype)
    return x, np.arange(count) % 3


def _score(logits_model, x, targets):
    z = logits_model(x).numpy()
    return z[np.arange(len(targets)), targets]


def test_saliency_matches_central_finite_differences_of_the_logit():
    model, logits = _cnn(activation="tanh")
    x, targets = _inputs(2)
    h = 1e-6
    expected = np.zeros_like(x)
    for index in np.ndindex(x.shape[1:]):
        step = np.zeros_like(x)
        step[(slice(None), *index)] = h
        up, down = _score(logits, x + step, targets), _score(logits, x - step, targets)
        expected[(slice(None), *index)] = (up - down) / (2 * h)
    signed = saliency(model, x, targets, absolute=False).numpy()
    np.testing.assert_allclose(signed, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(saliency(model, x, targets), np.abs(expected), atol=1e-8)


def test_saliency_equals_tf_keras_vis_saliency_on_a_functional_model():
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    x = RNG.normal(size=(4, 6, 6, 3)).astype("float32")
    targets = np.array([0, 2, 1, 2])
    theirs = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore(list(targets)), x, normalize_map=False
    )
    ours = saliency(model, x, targets).numpy()
    # tf-keras-vis reduces channels with max |gradient| (its default).
    np.testing.assert_allclose(ours.max(axis=-1), theirs, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete_within_one_percent():
    model, logits = _cnn()
    x, targets = _inputs(3)
    baseline = 0.1
    maps = integrated_gradients(model, x, targets, baseline=baseline, steps=128)
    difference = _score(logits, x, targets) - _score(
        logits, np.full_like(x, baseline), targets
    )
    totals = maps.numpy().reshape(len(x), -1).sum(axis=1)
    np.testing.assert_array_less(np.abs(totals - difference), 0.01 * np.abs(difference))


def test_integrated_gradients_midpoint_rule_matches_a_numpy_sum():
    model, _ = _cnn()
    x, targets = _inputs(2)
    steps = 5
    expected = np.zeros_like(x)
    for k in range(steps):
        point = ((k + 0.5) / steps) * x
        expected += saliency(model, point, targets, absolute=False).numpy()
    expected *= x / steps
    maps = integrated_gradients(model, x, targets, steps=steps, batch_size=3)
    np.testing.assert_allclose(maps, expected, rtol=1e-10, atol=1e-12)


def test_gradient_x_input_equals_epsilon_lrp_and_deeplift_on_bias_free_relu_net():
    model, _ = _cnn(use_bias=False)
    x, targets = _inputs(3)
    expected = (x * saliency(model, x, targets, absolute=False)).numpy()
    np.testing.assert_allclose(
        gradient_x_input(model, x, targets), expected, rtol=1e-12
    )
    errors = [
        np.abs(epsilon_lrp(model, x, targets, epsilon=eps).numpy() - expected).max()
        for eps in (1e-4, 1e-12)
    ]
    assert errors[1] < 1e-6 * errors[0]
    lrp = epsilon_lrp(model, x, targets, epsilon=1e-12).numpy()
    np.testing.assert_allclose(lrp, expected, rtol=1e-6, atol=1e-14)
    deeplift = deeplift_rescale(model, x, targets, baseline=0.0).numpy()
    np.testing.assert_allclose(deeplift, expected, rtol=1e-10, atol=1e-12)


def test_epsilon_lrp_matches_hand_computed_lrp_with_biases():
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(6, activation="relu", dtype="float64"),
            keras.layers.Dense(3, activation="softmax", dtype="float64"),
        ]
    )
    for layer in model.layers:
        layer.bias.assign(RNG.normal(size=layer.bias.shape))
    (w1, b1), (w2, b2) = (layer.get_weights() for layer in model.layers)
    x = RNG.normal(size=(5, 4))
    targets = np.array([0, 1, 2, 1, 0])
    eps = 1e-3
    expected = np.zeros_like(x)
    for b in range(len(x)):
        z1 = x[b] @ w1 + b1
        a1 = np.maximum(z1, 0)
        c = targets[b]
        z2 = a1 @ w2 + b2
        # Relevance of hidden unit j: a_j w_jc R_c / (z_c + eps sign z_c), with
        # R_c = S_c = z_c (the stabiliser sits at every affine map, the logit
        # layer included, as in Eq. 2 of the FBI paper).
        hidden = a1 * w2[:, c] * z2[c] / (z2[c] + eps * (1 if z2[c] >= 0 else -1))
        for i in range(4):
            expected[b, i] = sum(
                x[b, i]
                * w1[i, j]
                / (z1[j] + eps * (1 if z1[j] >= 0 else -1))
                * hidden[j]
                for j in range(6)
            )
    np.testing.assert_allclose(
        epsilon_lrp(model, x, targets, epsilon=eps), expected, rtol=1e-10
    )


def test_epsilon_lrp_is_gradient_x_input_at_small_eps_with_batch_norm_and_softmax():
    # eps -> 0 in a ReLU net (inference BatchNorm, max pooling, biases):
    # R = x * dS_c/dx, S_c the logit under the softmax (the test's own tape).
    dtype = "float64"
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2), dtype=dtype),
            keras.layers.Conv2D(4, 3, padding="same", dtype=dtype),
            keras.layers.BatchNormalization(dtype=dtype),
            keras.layers.ReLU(dtype=dtype),
            keras.layers.MaxPooling2D(dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(6, activation="relu", dtype=dtype),
            keras.layers.Dense(3, activation="softmax", dtype=dtype),
        ]
    )
    batch_norm = model.layers[1]
    batch_norm.moving_mean.assign(RNG.normal(size=4))
    batch_norm.moving_variance.assign(RNG.uniform(0.5, 2.0, size=4))
    x = tf.constant(RNG.normal(size=(3, 8, 8, 2)))
    targets = np.array([2, 0, 1])
    logits = keras.Model(model.inputs, model.layers[-1].input)
    head = model.layers[-1]
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = tf.matmul(logits(x), head.kernel) + head.bias
        score = tf.reduce_sum(tf.gather(z, targets, axis=1, batch_dims=1))
    expected = (x * tape.gradient(score, x)).numpy()
    ours = epsilon_lrp(model, x, targets, epsilon=1e-12).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-12)
    assert np.abs(expected).max() > 1e-3


def test_deeplift_rescale_sums_to_the_score_difference():
    model, logits = _cnn(activation="tanh")
    x, targets = _inputs(3)
    baseline = RNG.normal(size=(6, 6, 2))
    maps = deeplift_rescale(model, x, targets, baseline=baseline).numpy()
    difference = _score(logits, x, targets) - _score(
        logits, np.broadcast_to(baseline, x.shape), targets
    )
    np.testing.assert_allclose(maps.reshape(3, -1).sum(axis=1), difference, rtol=1e-9)


def _linear_model(shape, classes=3):
    inputs = keras.Input(shape, dtype="float64")
    h = keras.layers.Flatten(dtype="float64")(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float64")(h)
    model = keras.Model(inputs, outputs)
    weights = RNG.normal(size=(int(np.prod(shape)), classes))
    model.layers[-1].set_weights([weights, RNG.normal(size=classes)])
    return model, weights.reshape(*shape, classes)


@pytest.mark.parametrize("stride", [2, 1])
def test_occlusion_on_linear_model_equals_weight_times_input_per_patch(stride):
    model, weights = _linear_model((4, 4, 2))
    x = RNG.normal(size=(2, 4, 4, 2))
    targets = np.array([1, 2])
    expected = np.zeros_like(x)
    for b, c in enumerate(targets):
        contribution = weights[..., c] * x[b]
        total, covered = np.zeros((4, 4)), np.zeros((4, 4))
        for top in range(0, 3, stride):
            for left in range(0, 3, stride):
                drop = contribution[top : top + 2, left : left + 2].sum()
                total[top : top + 2, left : left + 2] += drop
                covered[top : top + 2, left : left + 2] += 1
        expected[b] = (total / covered)[..., None]
    maps = occlusion(model, x, targets, patch_size=2, stride=stride, batch_size=5)
    np.testing.assert_allclose(maps, expected, rtol=1e-10)


def test_smoothgrad_of_a_linear_model_is_its_weight_magnitude():
    model, weights = _linear_model((3, 3, 1))
    x = RNG.normal(size=(4, 3, 3, 1))
    targets = np.array([0, 1, 2, 0])
    maps = smoothgrad(model, x, targets, samples=7, noise=0.5, batch_size=10)
    expected = np.abs(np.moveaxis(weights[..., targets], -1, 0))
    np.testing.assert_allclose(maps, expected, rtol=1e-12)


def test_smoothgrad_averages_the_base_method_over_noisy_copies():
    model, _ = _cnn()
    x, targets = _inputs(2)
    no_noise = smoothgrad(
        model, x, targets, samples=3, noise=0.0, method=gradient_x_input
    )
    np.testing.assert_allclose(
        no_noise, gradient_x_input(model, x, targets), rtol=1e-12
    )
    # On a linear model gradient*input of x + e is W * (x + e): the average is
    # W * x plus W times the mean of N normal draws of std noise * range(x).
    linear, weights = _linear_model((6, 6, 2))
    samples, noise = 64, 0.2
    maps = smoothgrad(
        linear, x, targets, samples=samples, noise=noise, method=gradient_x_input
    ).numpy()
    w = np.moveaxis(weights[..., targets], -1, 0)
    sigma = noise * np.ptp(x.reshape(2, -1), axis=1)[:, None, None, None]
    z = (maps - w * x) / (np.abs(w) * sigma / np.sqrt(samples))
    assert 0.7 < z.std() < 1.3
    assert abs(z.mean()) < 0.3


@pytest.mark.parametrize(
    "method",
    [
        saliency,
        functools.partial(gradient_x_input, batch_size=4),
        functools.partial(integrated_gradients, steps=4, batch_size=5),
        epsilon_lrp,
        deeplift_rescale,
        functools.partial(occlusion, patch_size=3),
    ],
)
def test_smoothgrad_traced_and_generic_paths_average_the_documented_noise(method):
    model, _ = _cnn()
    x, targets = _inputs(5)
    samples, noise, seed = 3, 0.3, 7
    # batch_size 7 gives batches of 7 // 3 = 2 samples; batch i uses seed (7, i).
    expected = []
    for index, start in enumerate(range(0, 5, 2)):
        x_batch = x[start : start + 2]
        sigma = noise * np.ptp(x_batch.reshape(len(x_batch), -1), axis=1)
        draws = tf.random.stateless_normal(
            [len(x_batch) * samples, 6, 6, 2], seed=[seed, index], dtype="float64"
        ).numpy()
        noisy = np.repeat(x_batch, samples, axis=0) + (
            np.repeat(sigma, samples)[:, None, None, None] * draws
        )
        maps = method(model, noisy, np.repeat(targets[start : start + 2], samples))
        expected.append(np.reshape(maps, (-1, samples, 6, 6, 2)).mean(axis=1))
    options = {"samples": samples, "noise": noise, "seed": seed, "batch_size": 7}
    built_in = smoothgrad(model, x, targets, method=method, **options)
    assert any(key[0] is _smoothgrad_kernel for key in _TRACED[model])
    generic = smoothgrad(model, x, targets, method=lambda *a: method(*a), **options)
    np.testing.assert_allclose(built_in, np.concatenate(expected), rtol=1e-10)
    np.testing.assert_allclose(generic, np.concatenate(expected), rtol=1e-10)


def test_numpy_tensor_and_dataset_inputs_give_the_same_maps():
    model, _ = _cnn(dtype="float32")
    x, targets = _inputs(5, dtype="float32")
    expected = integrated_gradients(model, x, targets, steps=8).numpy()
    dataset = tf.data.Dataset.from_tensor_slices((x, np.eye(3)[targets])).batch(2)
    for maps in (
        integrated_gradients(model, tf.constant(x), tf.constant(targets), steps=8),
        integrated_gradients(model, dataset, None, steps=8, batch_size=1),
    ):
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method, options, match",
    [
        (saliency, {"targets": [0, 3, 1]}, "targets"),
        (integrated_gradients, {"steps": 0}, "steps"),
        (epsilon_lrp, {"epsilon": 0.0}, "epsilon"),
        (occlusion, {"patch_size": 7}, "patch_size"),
        (deeplift_rescale, {"baseline": np.zeros((2, 2))}, "baseline"),
        (smoothgrad, {"noise": -0.1}, "noise"),
        (smoothgrad, {"targets": [0, 3, 1]}, "targets"),
        (saliency, {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(method, options, match):
    model, _ = _cnn(dtype="float32")
    x, targets = _inputs(3, dtype="float32")
    options = {"targets": targets, **options}
    with pytest.raises(ValueError, match=match):
        method(model, x, **options)


def test_modified_gradients_enter_subclassed_models():
    """Oracle: the functional twin over the same Dense layer (a subclassed
    model is entered through its traced call)."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(np.zeros((1, 3), "float32"))
    inputs = keras.Input((3,))
    twin = keras.Model(inputs, model.dense(inputs))
    x = RNG.normal(size=(2, 3)).astype("float32")
    for method in (epsilon_lrp, deeplift_rescale):
        expected = method(twin, x, [0, 1]).numpy()
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(method(model, x, [0, 1]).numpy(), expected)


def test_attribution_grid_shows_mean_absolute_value_over_channels(tmp_path):
    from matplotlib.image import imread

    from keras_attreg.plotting import map_image, plot_attribution_maps

    maps = RNG.normal(size=(3, 6, 6, 2))
    np.testing.assert_allclose(map_image(maps[0]), np.abs(maps[0]).mean(axis=-1))
    path = tmp_path / "maps.png"
    plot_attribution_maps(
        {"a": maps, "b": -maps}, path, images=maps[..., :1], cell_size=1.0
    )
    # rows = 3 samples, columns = input + 2 methods, 1 inch cells at 100 dpi.
    assert imread(path).shape[:2] == (300, 300)
    with pytest.raises(ValueError, match="same number of samples"):
        plot_attribution_maps({"a": maps, "b": maps[:2]}, tmp_path / "bad.png")
