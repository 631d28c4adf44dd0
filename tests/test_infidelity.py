"""Infidelity (Yeh et al. 2019) against a linear model's exact attribution and
the test's own per-perturbation loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg.attributions import gradient_x_input, saliency
from keras_attreg.evaluation import infidelity

L = keras.layers


def _linear(shape, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape), L.Flatten(), L.Dense(3)])


def _exact(model, x, y):
    return np.asarray(saliency(model, x, y, absolute=False))


@pytest.mark.parametrize("perturbation", ["gaussian", "square"])
def test_exact_attribution_of_a_linear_model_has_zero_infidelity(perturbation):
    """Hand-derived: for S_c(x) = w_c . x + b_c, S_c(x) - S_c(x - I) = w_c . I
    for every I, so Phi = w_c (the signed gradient) gives 0; gradient*input
    (w_c * x) does not."""
    model = _linear((6, 6, 2))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 4)
    options = {"perturbation": perturbation, "num_perturbations": 16, "square_size": 3}
    exact = infidelity(model, (x, y), _exact(model, x, y), **options)
    assert exact.value < 1e-9
    other = infidelity(model, (x, y), gradient_x_input, **options)
    assert other.value > 1e-3


def test_normalize_rescales_by_the_optimal_beta():
    """Hand-derived: Phi = 2 w_c on a linear model predicts twice the change,
    so its plain infidelity is E[(w_c . I)^2] > 0 while beta = 1/2 makes the
    normalised one 0."""
    model = _linear((8,))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 8)).astype("float32")
    y = np.array([0, 1, 2])
    doubled = 2 * _exact(model, x, y)
    plain = infidelity(model, (x, y), doubled, num_perturbations=32, noise_std=0.5)
    normalised = infidelity(
        model, (x, y), doubled, num_perturbations=32, noise_std=0.5, normalize=True
    )
    assert plain.value > 1e-3 and normalised.value < 1e-9


def _draws(seed, item, count):
    return tf.random.stateless_uniform([count], seed=[seed, item]).numpy()


@pytest.mark.parametrize("perturbation", ["gaussian", "square"])
def test_value_matches_a_per_perturbation_loop(perturbation):
    """Oracle: the test's own loop over samples and draws, one model call per
    perturbed image, with the draws keyed as documented (seed, sample *
    num_perturbations + draw) and a non-zero baseline array; a batch size
    that splits the data."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            L.Conv2D(3, 2, activation="tanh"),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 5, 5, 2)).astype("float32")
    y = rng.integers(0, 3, 5)
    maps = rng.normal(size=x.shape).astype("float32")
    baseline = rng.normal(size=(5, 5, 2)).astype("float32")
    steps, seed, size, std = 6, 7, 2, 0.3
    result = infidelity(
        model,
        (x, y),
        maps,
        perturbation=perturbation,
        num_perturbations=steps,
        noise_std=std,
        square_size=size,
        baseline=baseline,
        seed=seed,
        batch_size=3,
    )
    expected = []
    for index, (image, target, m) in enumerate(zip(x, y, maps, strict=True)):
        score = model(image[None]).numpy()[0, target]
        errors = []
        for draw in range(steps):
            item = index * steps + draw
            if perturbation == "gaussian":
                change = (
                    std
                    * tf.random.stateless_normal(image.shape, seed=[seed, item]).numpy()
                )
            else:
                top, left = (_draws(seed, item, 2) * (5 - size + 1)).astype(int)
                change = np.zeros_like(image)
                square = (slice(top, top + size), slice(left, left + size))
                change[square] = image[square] - baseline[square]
            drop = score - model((image - change)[None]).numpy()[0, target]
            errors.append(((change * m).sum() - drop) ** 2)
        expected.append(np.mean(errors))
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-3, atol=1e-6)


def test_token_runs_match_a_numpy_forward_pass():
    """Oracle: the test's own NumPy forward pass of Embedding -> mean over the
    positions -> Dense, removing a run of `square_size` consecutive real
    tokens (zero embedding) whose start is drawn as documented; I . Phi is the
    map summed over the run."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            L.Embedding(15, 3),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )
    ids = np.array([[4, 2, 9, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    y = np.array([1, 0, 1])
    maps = np.random.default_rng(6).normal(size=ids.shape).astype("float32")
    steps, seed, run = 5, 2, 2
    result = infidelity(
        model,
        (ids, y),
        maps,
        perturbation="square",
        num_perturbations=steps,
        square_size=run,
        seed=seed,
    )
    table = model.layers[0].embeddings.numpy()
    kernel, bias = (v.numpy() for v in model.layers[-1].weights)
    expected = []
    for index, (row, target, m) in enumerate(zip(ids, y, maps, strict=True)):
        real = np.flatnonzero(row)
        span = min(run, real.size)
        score = (table[row].mean(0) @ kernel + bias)[target]
        errors = []
        for draw in range(steps):
            start = int(
                _draws(seed, index * steps + draw, 1)[0] * (real.size - span + 1)
            )
            removed = real[start : start + span]
            e = table[row].copy()
            e[removed] = 0.0
            drop = score - (e.mean(0) @ kernel + bias)[target]
            errors.append((m[removed].sum() - drop) ** 2)
        expected.append(np.mean(errors))
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(
        ValueError, match="perturbation.*Received: perturbation='gaussian'"
    ):
        infidelity(model, (ids, y), maps, perturbation="gaussian")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"perturbation": "blur"}, "perturbation.*Received: perturbation='blur'"),
        ({"num_perturbations": 0}, "num_perturbations.*Received: num_perturbations=0"),
        ({"noise_std": -1.0}, "noise_std.*Received: noise_std=-1.0"),
        (
            {"perturbation": "square", "square_size": 7},
            "square_size.*Received: square_size=7",
        ),
        ({"normalize": "yes"}, "normalize.*Received: normalize='yes'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    model = _linear((6, 6, 2))
    x = np.zeros((2, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match=message):
        infidelity(model, (x, [0, 1]), saliency, **kwargs)
