"""Sensitivity-n figures: curves named after their methods, a band of one
standard error across samples, several methods in one figure."""

import functools
import math

import keras
import numpy as np
import pytest

from keras_attreg import attributions as attr
from keras_attreg.evaluation import SensitivityNResult, sensitivity_n
from keras_attreg.plotting import plot_sensitivity_n

RNG = np.random.default_rng(11)
OPTIONS = dict(n_values=[1, 4, 20], num_subsets=6, verbose=0)


def _setup():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    x = RNG.normal(size=(6, 6, 6, 1)).astype("float32")
    return model, (x, np.arange(6) % 3)


def _naive_standard_error(per_sample):
    errors = []
    for column in per_sample.T:
        values = [v for v in column if not math.isnan(v)]
        if len(values) < 2:
            errors.append(math.nan)
            continue
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        errors.append(math.sqrt(variance / len(values)))
    return np.array(errors)


def test_results_are_labelled_with_the_methods_name_or_the_given_label():
    model, data = _setup()
    ig = functools.partial(attr.integrated_gradients, steps=4)
    assert sensitivity_n(model, data, attr.saliency, **OPTIONS).label == "saliency"
    assert sensitivity_n(model, data, ig, **OPTIONS).label == "integrated_gradients"
    maps = attr.saliency(model, *data)
    assert sensitivity_n(model, data, maps, **OPTIONS).label == "precomputed maps"
    named = sensitivity_n(model, data, maps, label="vanilla", **OPTIONS)
    assert named.label == named.to_dict()["label"] == "vanilla"
    with pytest.raises(ValueError, match="argument label: .* Received: label=3"):
        sensitivity_n(model, data, maps, label=3, **OPTIONS)


def test_standard_error_matches_a_loop_over_samples():
    per_sample = RNG.uniform(-1, 1, size=(5, 3))
    per_sample[0, 1] = per_sample[3, 1] = np.nan
    per_sample[:4, 2] = np.nan
    result = SensitivityNResult(
        np.array([1, 2, 3]), np.nanmean(per_sample, axis=0), per_sample, None, False
    )
    expected = _naive_standard_error(per_sample)
    np.testing.assert_allclose(result.standard_error(), expected, rtol=1e-12)
    assert np.isnan(result.standard_error()[2])


def test_plot_draws_every_method_in_one_figure_with_a_standard_error_band(tmp_path):
    model, data = _setup()
    results = [
        sensitivity_n(model, data, method, **OPTIONS)
        for method in (attr.saliency, attr.gradient_x_input)
    ]
    figure = results[0].plot(tmp_path / "sn.png", results[1], label="vanilla")
    assert (tmp_path / "sn.png").read_bytes()[:4] == b"\x89PNG"
    (ax,) = figure.axes
    assert ax.get_legend_handles_labels()[1] == ["vanilla", "gradient_x_input"]
    assert len(ax.get_lines()) == len(ax.collections) == 2
    for result, band in zip(results, ax.collections, strict=True):
        error = _naive_standard_error(result.per_sample)
        vertices = band.get_paths()[0].vertices
        for n, mean, e in zip(result.n_values, result.correlation, error, strict=True):
            at_n = vertices[np.isclose(vertices[:, 0], n), 1]
            np.testing.assert_allclose(
                [at_n.min(), at_n.max()], [mean - e, mean + e], rtol=1e-6
            )


def test_plot_accepts_a_mapping_of_labels_to_results(tmp_path):
    model, data = _setup()
    result = sensitivity_n(model, data, attr.saliency, **OPTIONS)
    figure = plot_sensitivity_n({"mine": result}, tmp_path / "sn.png")
    assert figure.axes[0].get_legend_handles_labels()[1] == ["mine"]
