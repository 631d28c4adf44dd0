"""Occlusion against a naive loop of forward passes written here.

The oracle of every test is `_naive_occlusion`: one model call per sample and
patch, the patch (all channels together) set to the baseline array, the drop
of the target logit added to every pixel of the patch, then divided by the
number of patches covering the pixel; a pixel that no patch covers keeps 0
(the docstring of `occlusion`). The models are nonlinear (tanh, ReLU, biases),
end in a softmax (occlusion reads the logit before it) and run in float64.
"""

import itertools

import keras
import numpy as np
import pytest

from keras_attreg.attributions import occlusion

L = keras.layers
F64 = "float64"
RNG = np.random.default_rng(11)


def _with_logits(inputs, logits):
    model = keras.Model(inputs, L.Softmax(dtype=F64)(logits))
    return model, keras.Model(inputs, logits)


def _cnn(shape):
    """(height, width, channels) -> conv tanh -> conv relu -> dense logits."""
    inputs = keras.Input(shape, dtype=F64)
    h = inputs if len(shape) == 3 else L.Reshape((*shape, 1), dtype=F64)(inputs)
    h = L.Conv2D(4, 3, activation="tanh", dtype=F64)(h)
    h = L.Conv2D(3, 2, activation="relu", dtype=F64)(h)
    h = L.Flatten(dtype=F64)(h)
    return _with_logits(inputs, L.Dense(3, dtype=F64)(h))


def _mlp(features):
    inputs = keras.Input((features,), dtype=F64)
    h = L.Dense(6, activation="tanh", dtype=F64)(inputs)
    h = L.Dense(5, activation="relu", dtype=F64)(h)
    return _with_logits(inputs, L.Dense(3, dtype=F64)(h))


def _randomize(model):
    rng = np.random.default_rng(3)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)) * 0.6)


def _naive_occlusion(logits, x, targets, patch, stride, baseline):
    """One forward pass per sample and patch; returns (map, coverage)."""
    spatial = x.shape[1:3] if x.ndim >= 3 else x.shape[1:2]
    starts = [
        range(0, size - p + 1, s)
        for size, p, s in zip(spatial, patch, stride, strict=True)
    ]
    expected = np.zeros_like(x)
    coverage = np.zeros(spatial)
    for b in range(len(x)):
        score = logits(x[b : b + 1]).numpy()[0, targets[b]]
        total = np.zeros(spatial)
        coverage[:] = 0
        for corner in itertools.product(*starts):
            window = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
            occluded = x[b].copy()
            occluded[window] = baseline[window]
            drop = score - logits(occluded[None]).numpy()[0, targets[b]]
            total[window] += drop
            coverage[window] += 1
        mean = np.divide(total, coverage, out=np.zeros(spatial), where=coverage > 0)
        expected[b] = mean[..., None] if x.ndim == 4 else mean
    return expected, coverage.copy()


def _check(model, logits, x, targets, patch_size, stride, patch, step):
    baseline = RNG.normal(size=x.shape[1:])
    expected, coverage = _naive_occlusion(logits, x, targets, patch, step, baseline)
    # the case is the one asked for: overlaps and uncovered pixels both occur
    assert coverage.max() > 1 and (coverage == 0).any()
    ours = occlusion(
        model,
        x,
        targets,
        patch_size=patch_size,
        stride=stride,
        baseline=baseline,
        batch_size=5,
    ).numpy()
    assert ours.shape == x.shape
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-13)
    assert np.all(ours[:, coverage == 0] == 0)
    # where patches overlap the mean differs from the sum: not vacuously zero
    overlap = coverage > 1
    assert np.abs(ours[:, overlap]).max() > 1e-3
    return coverage


@pytest.mark.parametrize(
    "patch_size, stride, patch, step",
    [(4, 3, (4, 4), (3, 3)), ((4, 3), (3, 4), (4, 3), (3, 4))],
    ids=["square", "per_axis"],
)
def test_occlusion_of_a_nonlinear_cnn_with_an_array_baseline(
    patch_size, stride, patch, step
):
    """Oracle: `_naive_occlusion`. Input 10 x 9 x 2: with patch 4, stride 3
    rows 3 and 6 lie in two patches, the last row patch ends at the border
    (corner 6 = 10 - 4) and columns 7, 8 lie in none (they get 0). Per
    axis, patch (4, 3) at stride (3, 4): the column patches leave gaps
    (columns 3, 7, 8)."""
    model, logits = _cnn((10, 9, 2))
    _randomize(model)
    x = RNG.normal(size=(3, 10, 9, 2))
    coverage = _check(
        model, logits, x, np.array([0, 2, 1]), patch_size, stride, patch, step
    )
    assert coverage[9].max() > 0 and not coverage[:, 7:].any()
    if patch == (4, 3):
        assert not coverage[:, 3].any()


def test_occlusion_of_rank_2_inputs_runs_over_the_features():
    """Oracle: `_naive_occlusion` over runs of 4 of 14 features at stride 3:
    feature 13 is in no run, features 3, 6 and 9 in two."""
    model, logits = _mlp(14)
    _randomize(model)
    x = RNG.normal(size=(3, 14))
    coverage = _check(model, logits, x, np.array([1, 0, 2]), 4, 3, (4,), (3,))
    np.testing.assert_array_equal(coverage, [1, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 1, 0])


def test_occlusion_of_rank_3_inputs_uses_square_patches_over_height_and_width():
    """Oracle: `_naive_occlusion`. Rank 3 is (batch, height, width), as the
    docstring says: patches run over both axes (not over steps with all
    channels of a (batch, steps, channels) sequence)."""
    model, logits = _cnn((11, 8))
    _randomize(model)
    x = RNG.normal(size=(2, 11, 8))
    coverage = _check(model, logits, x, np.array([2, 0]), 4, 3, (4, 4), (3, 3))
    assert not coverage[10].any() and not coverage[:, 7].any()
