"""Sensitivity-n against a naive numpy loop and the cases Ancona et al. derive."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg.attributions import gradient_x_input
from keras_attreg.evaluation import sensitivity_n
from keras_attreg.evaluation.sensitivity_n import (
    _pearson,
    pool_size,
    smallest_keys,
    subset_pool,
    subset_rows,
)

RNG = np.random.default_rng(1)


def _linear_model(shape=(5, 5, 2), classes=3):
    inputs = keras.Input(shape)
    h = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax")(h)
    return keras.Model(inputs, outputs)


def _cnn(shape=(6, 6, 3), classes=4):
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    logits = keras.layers.Dense(classes, name="logits")(h)
    outputs = keras.layers.Softmax()(logits)
    return keras.Model(inputs, outputs), keras.Model(inputs, logits)


def _naive(
    logits_model, x, targets, maps, n_values, num_subsets, baseline, pixel, seed
):
    """Plain loops over samples, n and subsets; subsets from the same generator."""
    count = x[0, ..., 0].size if pixel else x[0].size
    rows = pool_size(len(n_values), num_subsets, count)
    pool = subset_pool(seed, n_values, rows, count).numpy()
    chosen = subset_rows(seed, tf.range(len(x)), len(n_values), rows, num_subsets)
    relevance = maps.sum(axis=-1) if pixel else maps
    result = np.full((len(x), len(n_values)), np.nan)
    for b in range(len(x)):
        c = targets[b]
        score = logits_model(x[b : b + 1]).numpy()[0, c]
        for k in range(len(n_values)):
            r_n, s_n = [], []
            for j in range(num_subsets):
                mask = pool[k, chosen[b, k, j]].reshape(relevance.shape[1:])
                r_n.append(relevance[b][mask].sum())
                masked = x[b].copy()
                masked[mask] = baseline[mask] if np.ndim(baseline) else baseline
                s_n.append(score - logits_model(masked[None]).numpy()[0, c])
            if np.std(r_n) > 1e-6 * np.max(np.abs(r_n)) and np.std(s_n) > 1e-6 * np.max(
                np.abs(s_n)
            ):
                result[b, k] = np.corrcoef(r_n, s_n)[0, 1]
    return result


@pytest.mark.parametrize("features", ["pixel", "element"])
def test_linear_model_with_gradient_x_input_has_correlation_one_for_every_n(features):
    """Oracle: Ancona et al.'s derivation. The value must be exactly 1, not a
    clipped larger one: on a linear logit S_c(x) = w_c . x + b_c with the zero
    baseline, removing a subset changes the logit by S_n = sum_subset w_ci
    x_i, which is R_n of gradient*input term by term, so over the subsets the
    two series are one series and their Pearson correlation is 1 (up to
    float32 rounding). That the clip to [-1, 1] cannot hide an inflated value
    is checked by `test_pearson_is_not_clipped_below_one` and by
    `test_linear_model_with_a_perturbed_map_has_the_naive_correlation_below_one`.
    """
    model = _linear_model()
    x = RNG.normal(size=(6, 5, 5, 2)).astype("float32")
    targets = np.array([0, 1, 2, 0, 1, 2])
    result = sensitivity_n(
        model,
        (x, targets),
        gradient_x_input,
        num_subsets=20,
        features=features,
        verbose=0,
    )
    count = 25 if features == "pixel" else 50
    assert result.n_values[0] == 1 and result.n_values[-1] == round(0.8 * count)
    np.testing.assert_allclose(result.correlation, 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.undefined, 0)


def _correlated(rho, count=8):
    """(r, s) of exactly Pearson correlation rho: r = u, s = rho u +
    sqrt(1 - rho^2) v for centred, orthogonal u, v of equal norm, then
    shifted and scaled (Pearson is invariant to both)."""
    u = np.array([1.0, -1, 1, -1, 1, -1, 1, -1])[:count]
    v = np.array([1.0, 1, -1, -1, 1, 1, -1, -1])[:count]
    assert u.sum() == v.sum() == u @ v == 0 and u @ u == v @ v
    return 3 * u + 5, -2 * (rho * u + np.sqrt(1 - rho**2) * v) + 0.5


@pytest.mark.parametrize("rho", [-0.5, 0.8, 0.3])
def test_pearson_is_not_clipped_below_one(rho):
    """Oracle: pairs built by hand with an exact correlation (`_correlated`:
    r = u, s = rho u + sqrt(1 - rho^2) v, u and v orthogonal; the scale -2 of s
    flips the sign), over the last axis of a (2, 1, 8) batch."""
    r, s = _correlated(rho)
    other_r, other_s = _correlated(0.8)
    r_batch = np.stack([r, other_r])[:, None]
    s_batch = np.stack([s, other_s])[:, None]
    result = _pearson(tf.constant(r_batch), tf.constant(s_batch)).numpy()
    np.testing.assert_allclose(result[:, 0], [-rho, -0.8], rtol=1e-12)
    assert np.corrcoef(r, s)[0, 1] == pytest.approx(-rho, rel=1e-12)


def test_pearson_is_nan_for_a_constant_series_and_one_for_equal_ones():
    """Oracle: the definition: a constant series has no variance (NaN, also
    when it is constant but for a rounding-level 1e-9 relative wiggle), and
    a series against an increasing affine image of itself has r = 1."""
    r, s = _correlated(0.8)
    constant = np.full(8, 2.5)
    wiggle = constant * (1 + 1e-9 * np.arange(8))
    rows = [(constant, s), (r, constant), (wiggle, s), (r, 4 * r - 1), (r, -r)]
    result = _pearson(
        tf.constant([[a] for a, _ in rows]), tf.constant([[b] for _, b in rows])
    ).numpy()[:, 0]
    assert np.isnan(result[:3]).all()
    np.testing.assert_allclose(result[3:], [1.0, -1.0], rtol=1e-12)


def test_linear_model_with_a_perturbed_map_has_the_naive_correlation_below_one():
    """Oracle: `_naive` (np.corrcoef, which is not clipped, over the same
    subsets) on a linear logit whose map is gradient*input plus noise: R_n =
    S_n + (noise summed over the subset), so the exact value is below 1 for
    every sample and n, and sensitivity_n must give that value, not 1."""
    model = _linear_model()
    inputs = keras.Input((5, 5, 2))
    dense = keras.layers.Dense(3)
    logits = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights(model.layers[-1].get_weights())
    x = RNG.normal(size=(4, 5, 5, 2)).astype("float32")
    targets = np.array([0, 1, 2, 1])
    maps = gradient_x_input(model, x, targets).numpy()
    maps = maps + RNG.normal(scale=0.5 * maps.std(), size=maps.shape)
    n_values, num_subsets = [2, 10, 30], 12
    expected = _naive(logits, x, targets, maps, n_values, num_subsets, 0.0, False, 5)
    assert np.nanmax(expected) < 0.98 and np.nanmin(expected) > 0.2
    result = sensitivity_n(
        model,
        (x, targets),
        maps,
        n_values=n_values,
        num_subsets=num_subsets,
        features="element",
        seed=5,
        verbose=0,
    )
    np.testing.assert_allclose(result.per_sample, expected, atol=1e-5)
    np.testing.assert_allclose(result.correlation, expected.mean(0), atol=1e-5)


def test_random_attributions_have_mean_correlation_near_zero():
    model, _ = _cnn()
    x = RNG.normal(size=(80, 6, 6, 3)).astype("float32")
    targets = RNG.integers(0, 4, size=80)
    maps = RNG.normal(size=x.shape)
    result = sensitivity_n(
        model, (x, targets), maps, n_values=[1, 4, 16], num_subsets=40, verbose=0
    )
    # Per sample: subset sampling noise (std 1/sqrt(40) ~ 0.16) plus the chance
    # alignment of a random map with the model (measured spread ~0.26); the
    # mean over 80 samples has a std of ~0.03.
    assert np.all(np.abs(result.correlation) < 0.1)
    assert np.nanstd(result.per_sample) > 0.1


@pytest.mark.parametrize("features", ["pixel", "element"])
def test_fast_equals_naive_loop_on_the_same_subsets(features):
    model, logits = _cnn()
    x = RNG.normal(size=(5, 6, 6, 3)).astype("float32")
    targets = np.array([3, 0, 1, 2, 3])
    maps = gradient_x_input(model, x, targets).numpy() + RNG.normal(
        scale=0.05, size=x.shape
    ).astype("float32")
    baseline = np.broadcast_to(np.array([0.1, -0.2, 0.3], "float32"), x.shape[1:])
    n_values, num_subsets = [1, 7, 30], 6
    expected = _naive(
        logits,
        x,
        targets,
        maps,
        n_values,
        num_subsets,
        baseline,
        features == "pixel",
        3,
    )
    assert not np.isnan(expected).any() and np.ptp(expected) > 0.1
    dataset = tf.data.Dataset.from_tensor_slices((x, targets)).batch(2)
    for data, batch_size in (((x, targets), 3), (dataset, 64)):
        result = sensitivity_n(
            model,
            data,
            maps,
            n_values=n_values,
            num_subsets=num_subsets,
            baseline=baseline[0, 0],
            features=features,
            seed=3,
            batch_size=batch_size,
            verbose=0,
        )
        np.testing.assert_allclose(result.per_sample, expected, atol=2e-5)


def test_subsets_have_size_n_are_uniform_and_distinct_per_sample():
    count, n, num_subsets = 20, 5, 50
    rows = pool_size(2, num_subsets, count)
    assert rows == 4 * num_subsets
    pool = subset_pool(0, [n, 12], rows, count).numpy()
    assert (pool[0].sum(axis=-1) == n).all() and (pool[1].sum(axis=-1) == 12).all()
    # Binomial std of each inclusion frequency: sqrt(0.25 * 0.75 / 200) ~ 0.03.
    np.testing.assert_allclose(pool[0].mean(axis=0), n / count, atol=0.12)
    assert abs(pool[0].mean() - n / count) < 1e-12
    chosen = subset_rows(0, tf.range(300), 2, rows, num_subsets).numpy()
    assert all(len(set(r)) == num_subsets for r in chosen.reshape(-1, num_subsets))
    # Over many samples every pool row is used about equally often.
    usage = np.bincount(chosen[:, 0].ravel(), minlength=rows) / len(chosen)
    np.testing.assert_allclose(usage, num_subsets / rows, atol=0.1)
    assert not np.array_equal(chosen[0], chosen[1])


def test_subset_pool_holds_the_n_features_with_the_smallest_keys():
    n_values, rows, count, seed = np.array([1, 3, 7, 9]), 30, 10, 5
    keys = tf.random.stateless_uniform(
        [len(n_values), rows, count], seed=[seed, -1]
    ).numpy()
    ranks = np.argsort(np.argsort(keys, axis=-1, kind="stable"), axis=-1)
    expected = ranks < n_values[:, None, None]
    np.testing.assert_array_equal(subset_pool(seed, n_values, rows, count), expected)


@pytest.mark.parametrize("n", range(1, 10))
def test_smallest_keys_breaks_ties_like_a_stable_sort(n):
    keys = RNG.integers(0, 3, size=(50, 9)).astype("float32")
    ranks = np.argsort(np.argsort(keys, axis=-1, kind="stable"), axis=-1)
    np.testing.assert_array_equal(smallest_keys(tf.constant(keys), n), ranks < n)


def test_absolute_variant_scores_a_sign_flipped_exact_map_one():
    """Oracle: Ancona et al.'s derivation on a linear logit (see the
    correlation-one test): gradient*input times s_b = +1 or -1 per sample has
    R_n = s_b S_n, so the signed Pearson is exactly s_b for every n and the
    signed mean is the mean of the signs (0 here), while the absolute variant
    (Kiritoshi et al.: |Pearson| per sample, then the mean) is exactly 1."""
    model = _linear_model()
    x = RNG.normal(size=(6, 5, 5, 2)).astype("float32")
    targets = np.array([0, 1, 2, 0, 1, 2])
    signs = np.array([1.0, -1, -1, 1, -1, 1])
    maps = gradient_x_input(model, x, targets).numpy() * signs[:, None, None, None]
    options = dict(n_values=[2, 10, 40], num_subsets=10, features="element", verbose=0)
    signed = sensitivity_n(model, (x, targets), maps, **options)
    absolute = sensitivity_n(model, (x, targets), maps, absolute=True, **options)
    np.testing.assert_allclose(signed.per_sample, np.outer(signs, [1, 1, 1]), atol=1e-5)
    np.testing.assert_allclose(signed.correlation, 0.0, atol=1e-5)
    np.testing.assert_allclose(absolute.per_sample, 1.0, atol=1e-5)
    np.testing.assert_allclose(absolute.correlation, 1.0, atol=1e-5)
    assert absolute.absolute and not signed.absolute


def test_undefined_correlations_are_counted_not_averaged_in():
    model = _linear_model()
    x = RNG.normal(size=(4, 5, 5, 2)).astype("float32")
    x[2] = 0.0  # masking with the zero baseline changes nothing: S_n constant
    targets = np.array([0, 1, 2, 0])
    result = sensitivity_n(
        model,
        (x, targets),
        gradient_x_input,
        n_values=[3, 25],
        num_subsets=8,
        verbose=0,
    )
    # n = 25 removes every pixel: R_n is constant for every sample.
    np.testing.assert_array_equal(result.undefined, [1, 4])
    assert np.isnan(result.per_sample[2, 0]) and np.isnan(result.correlation[1])
    np.testing.assert_allclose(result.correlation[0], 1.0, atol=1e-5)
    assert json.loads(json.dumps(result.to_dict()))["undefined"] == [1, 4]


def test_results_are_deterministic_under_the_seed_and_independent_of_batch_size():
    model, _ = _cnn()
    x = RNG.normal(size=(5, 6, 6, 3)).astype("float32")
    targets = RNG.integers(0, 4, size=5)
    maps = RNG.normal(size=x.shape)
    options = dict(n_values=[3, 9], num_subsets=5, verbose=0)
    first = sensitivity_n(model, (x, targets), maps, seed=7, batch_size=2, **options)
    again = sensitivity_n(model, (x, targets), maps, seed=7, batch_size=64, **options)
    other = sensitivity_n(model, (x, targets), maps, seed=8, **options)
    np.testing.assert_allclose(first.per_sample, again.per_sample, atol=1e-6)
    assert not np.allclose(first.per_sample, other.per_sample, atol=1e-3)


def test_plot_writes_an_image(tmp_path):
    model = _linear_model()
    x = RNG.normal(size=(3, 5, 5, 2)).astype("float32")
    result = sensitivity_n(
        model, (x, [0, 1, 2]), gradient_x_input, num_subsets=4, verbose=0
    )
    path = tmp_path / "curve.png"
    result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_values": [5, 26]}, "n_values"),
        ({"n_values": [0]}, "n_values"),
        ({"num_subsets": 1}, "num_subsets"),
        ({"attributions": np.zeros((3, 5, 5, 1))}, "attributions"),
        ({"attributions": np.zeros((2, 5, 5, 2))}, "attributions"),
        ({"targets": [0, 1, 3]}, "targets"),
        ({"features": "channel"}, "features"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(options, match):
    model = _linear_model()
    x = RNG.normal(size=(3, 5, 5, 2)).astype("float32")
    targets = options.pop("targets", [0, 1, 2])
    attributions = options.pop("attributions", gradient_x_input)
    with pytest.raises(ValueError, match=match):
        sensitivity_n(model, (x, targets), attributions, verbose=0, **options)


def test_dataset_with_too_many_attributions_raises():
    model = _linear_model()
    x = RNG.normal(size=(3, 5, 5, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, [0, 1, 2])).batch(2)
    with pytest.raises(ValueError, match="attributions"):
        sensitivity_n(model, dataset, np.zeros((4, 5, 5, 2)), num_subsets=3, verbose=0)
