"""An `AttributionRegularizedModel` given where a model is expected stands for its
base model: every public entry point gives the numbers of the base model."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar
from keras_attreg import attributions as attr
from keras_attreg._logits import unwrap

RNG = np.random.default_rng(3)


def _models():
    """A BatchNorm CNN ending in `activation="softmax"`, and its wrapper.

    The softmax matters: on the wrapper taken as an opaque model, S_c would
    be a probability, not the logit.
    """
    base = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    wrapper = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(1e-2))
    return base, wrapper


def _data(samples=4):
    x = RNG.normal(size=(samples, 8, 8, 1)).astype("float32")
    return x, np.arange(samples) % 3


def test_unwrap_gives_the_base_model_and_leaves_other_models_alone():
    base, wrapper = _models()
    assert unwrap(wrapper) is base
    assert unwrap(base) is base
    assert wrapper.attributed_model is base


def test_saliency_of_the_wrapper_is_the_logit_gradient_of_the_base_model():
    base, wrapper = _models()
    x, targets = _data()
    logits_model = keras.Model(base.inputs, base.layers[-1].input)
    dense = base.layers[-1]
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        features = logits_model(x_tensor)
        logits = tf.matmul(features, dense.kernel) + dense.bias
        scores = tf.gather(logits, targets, axis=1, batch_dims=1)
    expected = np.abs(tape.gradient(scores, x_tensor).numpy())
    np.testing.assert_allclose(attr.saliency(wrapper, x, targets), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "method",
    [
        attr.saliency,
        attr.gradient_x_input,
        functools.partial(attr.integrated_gradients, steps=8),
        functools.partial(attr.smoothgrad, samples=4),
        attr.epsilon_lrp,
        attr.deeplift_rescale,
        functools.partial(attr.occlusion, patch_size=2),
    ],
    ids=lambda m: getattr(m, "__name__", None) or m.func.__name__,
)
def test_attribution_methods_give_the_base_models_maps(method):
    base, wrapper = _models()
    x, targets = _data()
    np.testing.assert_array_equal(method(wrapper, x, targets), method(base, x, targets))


def test_smoothgrad_hands_the_base_model_to_a_custom_method():
    base, wrapper = _models()
    x, targets = _data()
    seen = []

    def method(model, x_batch, t_batch):
        seen.append(model)
        return attr.saliency(model, x_batch, t_batch)

    np.testing.assert_array_equal(
        attr.smoothgrad(wrapper, x, targets, samples=2, method=method),
        attr.smoothgrad(base, x, targets, samples=2, method=method),
    )
    assert seen == [base, base]


def test_relevance_map_gives_the_base_models_map():
    base, wrapper = _models()
    x, targets = _data()
    np.testing.assert_array_equal(
        kar.relevance.relevance_map(wrapper, tf.constant(x), targets),
        kar.relevance.relevance_map(base, tf.constant(x), targets),
    )


def test_sensitivity_n_gives_the_base_models_curve_and_calls_the_method_on_it():
    base, wrapper = _models()
    x, targets = _data()
    seen = []

    def method(model, x_batch, t_batch):
        seen.append(model)
        return attr.gradient_x_input(model, x_batch, t_batch)

    options = dict(n_values=[1, 8, 30], num_subsets=6, verbose=0)
    on_wrapper = kar.evaluation.sensitivity_n(wrapper, (x, targets), method, **options)
    on_base = kar.evaluation.sensitivity_n(base, (x, targets), method, **options)
    np.testing.assert_array_equal(on_wrapper.per_sample, on_base.per_sample)
    assert seen == [base, base]


def test_zero_pixel_probe_gives_the_base_models_changes():
    base, wrapper = _models()
    x = np.where(RNG.random((3, 8, 8, 1)) < 0.5, 0.0, 1.0).astype("float32")
    on_wrapper = kar.evaluation.zero_pixel_probe(wrapper, x, verbose=0)
    on_base = kar.evaluation.zero_pixel_probe(base, x, verbose=0)
    np.testing.assert_array_equal(on_wrapper.differences, on_base.differences)


def test_layer_activations_give_the_base_models_activations():
    base, wrapper = _models()
    x, _ = _data()
    on_wrapper = kar.analysis.layer_activations(wrapper, x)
    on_base = kar.analysis.layer_activations(base, x)
    assert list(on_wrapper) == list(on_base) == ["conv"]
    np.testing.assert_array_equal(on_wrapper["conv"], on_base["conv"])


def test_attribution_monitor_logs_the_base_models_maps_and_scalars(tmp_path):
    base, wrapper = _models()
    x, targets = _data()
    monitor = kar.callbacks.AttributionMonitor(
        x,
        targets,
        methods=("saliency",),
        output_dir=tmp_path,
        sensitivity_n_values=(1, 8),
        num_subsets=6,
    )
    monitor.set_model(wrapper)
    monitor.on_epoch_end(0)
    gradient = attr.saliency(base, x, targets).numpy()
    expected = gradient.reshape(len(x), -1).sum(axis=1).mean()
    logged = dict(monitor.history["attributions/mean_l1_input_gradient"])
    np.testing.assert_allclose(logged[0], expected, rtol=1e-6)
    curve = kar.evaluation.sensitivity_n(
        base, (x, targets), gradient, n_values=[1, 8], num_subsets=6, verbose=0
    )
    logged = dict(monitor.history["attributions/sensitivity_n/saliency/n=8"])
    np.testing.assert_allclose(logged[0], curve.correlation[1], rtol=1e-6)


def test_a_named_logits_layer_is_the_logit_of_the_wrappers_attributions():
    """A base model that rescales its logit after the named layer: the
    wrapper's attributions are taken on the named layer's output, like its
    penalty, not on the model's output."""
    inputs = keras.Input((5,))
    logits = keras.layers.Dense(3, name="logits")(
        keras.layers.Dense(4, activation="tanh")(inputs)
    )
    base = keras.Model(inputs, keras.layers.Rescaling(2.0)(logits))
    wrapper = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(1e-2), logits_layer="logits"
    )
    x = tf.constant(RNG.normal(size=(4, 5)).astype("float32"))
    targets = np.array([0, 1, 2, 0])
    to_logits = keras.Model(inputs, logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.gather(to_logits(x), targets, batch_dims=1)
    expected = tape.gradient(scores, x).numpy()
    ours = attr.saliency(wrapper, x, targets, absolute=False).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    on_base = attr.saliency(base, x, targets, absolute=False).numpy()
    np.testing.assert_allclose(on_base, 2 * expected, rtol=1e-5, atol=1e-7)
    assert unwrap(wrapper).get_layer("logits") is base.get_layer("logits")
