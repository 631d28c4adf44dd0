"""The zero-pixel probe against a per-pixel loop and a hand-derived linear case."""

import keras
import numpy as np
import pytest

from keras_attreg.evaluation.bn_probe import zero_pixel_probe


def _cnn_with_softmax(channels):
    model = keras.Sequential(
        [
            keras.Input((6, 6, channels)),
            keras.layers.Conv2D(3, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
            keras.layers.Softmax(),
        ]
    )
    # Non-trivial BatchNorm statistics, so that inference mode matters.
    batchnorm = model.layers[1]
    batchnorm.moving_mean.assign([0.3, -0.2, 0.1])
    batchnorm.moving_variance.assign([0.5, 2.0, 0.1])
    return model


def _images(channels, zero, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 6, 6, channels)).astype("float32")
    empty = rng.random((5, 6, 6)) < 0.4
    x[empty] = zero
    # A pixel with only some channels at zero is not empty.
    x[0, 0, 0] = zero
    x[0, 0, 0, 0] = 5.0
    return x


def _naive_probe(logit_model, x, zero, one):
    differences, samples, pixels = [], [], []
    for b in range(x.shape[0]):
        base = logit_model(x[b : b + 1], training=False).numpy()[0]
        for h in range(x.shape[1]):
            for w in range(x.shape[2]):
                if np.all(x[b, h, w] == zero):
                    probed = x[b : b + 1].copy()
                    probed[0, h, w, :] = one
                    out = logit_model(probed, training=False).numpy()[0]
                    differences.append(out - base)
                    samples.append(b)
                    pixels.append(h * x.shape[2] + w)
    return np.array(differences), np.array(samples), np.array(pixels)


@pytest.mark.parametrize("channels", [1, 2])
def test_probe_equals_per_pixel_loop_on_pre_softmax_output(channels):
    zero, one = -0.4242, 2.8215
    model = _cnn_with_softmax(channels)
    logit_model = keras.Model(model.inputs[0], model.layers[-2].output)
    x = _images(channels, zero)
    expected, samples, pixels = _naive_probe(logit_model, x, zero, one)
    result = zero_pixel_probe(model, x, zero, one, batch_size=7, verbose=0)
    np.testing.assert_array_equal(result.sample_index, samples)
    np.testing.assert_array_equal(result.pixel_index, pixels)
    np.testing.assert_allclose(result.differences, expected, rtol=1e-5, atol=1e-5)
    assert (0, 0) not in set(zip(result.sample_index, result.pixel_index, strict=True))


def test_probe_of_linear_model_is_weight_times_step():
    # Dense without bias on feature vectors: d(x, p) = (one - zero) * W[p, :].
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False)])
    weights = np.arange(15, dtype="float32").reshape(5, 3) / 7
    model.layers[0].kernel.assign(weights)
    x = np.array([[0, 1, 0, 2, 0], [3, 0, 0, 0, 4]], "float32")
    result = zero_pixel_probe(model, x, zero_value=0.0, one_value=0.5, verbose=0)
    np.testing.assert_array_equal(result.sample_index, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(result.pixel_index, [0, 2, 4, 1, 2, 3])
    np.testing.assert_allclose(
        result.differences, 0.5 * weights[[0, 2, 4, 1, 2, 3]], atol=1e-6
    )
    summary = result.to_dict()
    assert summary["probes"] == 6 and summary["samples"] == 2
    assert summary["std"] == pytest.approx(float(result.differences.std()))


def test_probe_results_do_not_depend_on_batch_size():
    model = _cnn_with_softmax(1)
    x = _images(1, 0.0, seed=2)
    small = zero_pixel_probe(model, x, batch_size=3, verbose=0)
    large = zero_pixel_probe(model, x, batch_size=1000, verbose=0)
    np.testing.assert_allclose(small.differences, large.differences, atol=1e-6)


def test_bad_arguments_raise_naming_them():
    model = _cnn_with_softmax(1)
    x = _images(1, 0.0)
    with pytest.raises(ValueError, match="zero_value"):
        zero_pixel_probe(model, x, zero_value=123.0, verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        zero_pixel_probe(model, x, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="x with shape"):
        zero_pixel_probe(model, x[0], verbose=0)
    with pytest.raises(ValueError, match="one_value"):
        zero_pixel_probe(model, x, one_value=float("nan"), verbose=0)
