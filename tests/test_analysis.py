"""Activation analysis: Table 1 statistics against numpy/scipy, figures written."""

import keras
import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from keras_attreg.analysis import (
    activation_statistics,
    energy_skewness,
    layer_activations,
    plot_activation_densities,
    plot_filter_heatmaps,
    statistics_table,
    tile_filters,
)

L = keras.layers


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.Conv2D(2, 3, activation="relu", name="c1"),
            L.Conv2D(3, 1, name="c2"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="relu"),
            L.Flatten(),
            L.Dense(2),
        ]
    )


def _numpy_activations(model, x):
    """The two conv layers by hand: relu(conv3x3), then relu(BN(conv1x1))."""
    k1, b1 = model.get_layer("c1").get_weights()
    a1 = np.zeros((len(x), 4, 4, 2))
    for i in range(4):
        for j in range(4):
            a1[:, i, j, :] = np.einsum("nhwc,hwcf->nf", x[:, i : i + 3, j : j + 3], k1)
    a1 = np.maximum(a1 + b1, 0)
    k2, b2 = model.get_layer("c2").get_weights()
    gamma, beta, mean, var = model.get_layer("bn").get_weights()
    z2 = a1 @ k2[0, 0] + b2
    a2 = np.maximum(gamma * (z2 - mean) / np.sqrt(var + 1e-3) + beta, 0)
    return a1, a2


def test_layer_activations_are_the_rectified_conv_outputs():
    model = _model()
    bn = model.get_layer("bn")
    bn.set_weights(
        [
            np.array([1.5, 0.5, 2.0]),
            np.array([0.1, -0.2, 0.3]),
            np.array([0.2, -0.1, 0.0]),
            np.array([0.5, 2.0, 1.0]),
        ]
    )
    x = np.random.default_rng(1).normal(size=(5, 6, 6, 1)).astype("float32")
    activations = layer_activations(model, x, batch_size=2)
    assert list(activations) == ["c1", "c2"]
    for ours, expected in zip(
        activations.values(), _numpy_activations(model, x), strict=True
    ):
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
        assert (ours == 0).any() and ours.max() > 0


def test_statistics_match_their_definitions():
    rng = np.random.default_rng(2)
    values = np.maximum(rng.normal(size=(40, 3, 3, 2)), 0)
    (stats,) = activation_statistics({"conv": values})
    flat = values.ravel()
    assert stats.max == pytest.approx(flat.max())
    normalized = flat / np.sqrt(np.mean(flat**2))
    assert stats.energy_skewness == pytest.approx(1 / np.var(normalized))
    assert stats.energy_skewness == pytest.approx(1 + flat.mean() ** 2 / flat.var())
    # Third standardised moment, by hand and through scipy.
    centered = flat - flat.mean()
    by_hand = np.mean(centered**3) / np.mean(centered**2) ** 1.5
    assert stats.moment_skewness == pytest.approx(by_hand)
    assert stats.moment_skewness == pytest.approx(scipy.stats.skew(flat))
    assert stats.squared_variation == pytest.approx(flat.var() / flat.mean() ** 2)
    by_hand = np.mean(centered**4) / np.mean(centered**2) ** 2 - 3
    assert stats.excess_kurtosis == pytest.approx(by_hand)
    assert stats.zero_fraction == pytest.approx(np.sum(flat == 0) / flat.size)
    assert 0.3 < stats.zero_fraction < 0.7  # half of a rectified normal


def test_primary_skewness_rises_with_sparsity_where_the_literal_reading_falls():
    """Hand-derived (issue 20, finding 1): for [0, 0, 1, 1] the third moment is 0
    and mean(a^2)/Var(a) = 0.5/0.25 = 2; for the sparser [0, 0, 0, 1] the third
    moment is (3*(-1/4)^3 + (3/4)^3)/4 / (3/16)^1.5 = 2/sqrt(3) and the literal
    reading 0.25/0.1875 = 4/3. The paper's "more skewed to 0" must rise."""
    dense, sparse = activation_statistics(
        {"dense": np.array([0.0, 0.0, 1.0, 1.0]), "sparse": np.array([0.0, 0, 0, 1])}
    )
    assert dense.moment_skewness == pytest.approx(0.0, abs=1e-12)
    assert sparse.moment_skewness == pytest.approx(2 / np.sqrt(3))
    assert dense.energy_skewness == pytest.approx(2.0)
    assert sparse.energy_skewness == pytest.approx(4 / 3)
    # Var/mean^2: 0.25/0.25 = 1 and 0.1875/0.0625 = 3.
    assert (dense.squared_variation, sparse.squared_variation) == pytest.approx((1, 3))


def test_energy_skewness_is_scale_free():
    values = np.random.default_rng(3).exponential(size=1000)
    assert energy_skewness(7.0 * values) == pytest.approx(energy_skewness(values))
    # Exponential: mean^2 / var = 1, so 1 / Var(a / rms) tends to 2.
    assert energy_skewness(values) == pytest.approx(2.0, abs=0.2)


def test_table_lists_both_models_per_layer():
    a = activation_statistics({"c1": np.array([0.0, 1.0, 2.0])})
    b = activation_statistics({"other": np.array([0.0, 0.0, 4.0])})
    table = statistics_table({"conventional": a, "FBI": b})
    assert "(conventional / FBI)" in table
    assert "2.000 / 4.000" in table
    assert "skewness (3rd moment)" in table and "energy-normalised" in table


def test_unknown_layer_raises():
    with pytest.raises(ValueError, match="layers.*Received: layers=\\['nope'\\]"):
        layer_activations(_model(), np.zeros((1, 6, 6, 1)), layers=["nope"])


def test_tile_filters_places_each_filter():
    maps = np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3)
    tiled = tile_filters(maps, columns=2)
    np.testing.assert_array_equal(tiled[0:2, 0:2], maps[..., 0])
    np.testing.assert_array_equal(tiled[0:2, 3:5], maps[..., 1])
    np.testing.assert_array_equal(tiled[3:5, 0:2], maps[..., 2])
    assert np.isnan(tiled[3:5, 3:5]).all() and np.isnan(tiled[2]).all()


def test_figures_are_written(tmp_path):
    model = _model()
    x = np.random.default_rng(4).normal(size=(3, 6, 6, 1)).astype("float32")
    acts = layer_activations(model, x)
    by_model = {"conventional": acts, "FBI": {k: 2 * v for k, v in acts.items()}}
    plot_activation_densities(by_model, tmp_path / "densities.png")
    plot_filter_heatmaps(by_model, tmp_path / "heatmaps.png")
    for name in ("densities.png", "heatmaps.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # not a blank canvas
    with pytest.raises(ValueError, match="same \\(non-zero\\) number of layers"):
        plot_activation_densities(
            {"a": acts, "b": {"c1": acts["c1"]}}, tmp_path / "x.png"
        )
