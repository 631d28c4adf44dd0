"""Deletion and insertion curves against the test's own loops and a linear
model where the optimal ranking is known."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg.attributions import gradient_x_input, saliency
from keras_attreg.evaluation import deletion, insertion, sensitivity_n

L = keras.layers


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, activation="relu"),
            L.Flatten(),
            L.Dense(3),
        ]
    )


def _images(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


def _naive_curve(model, x, y, maps, fractions, baseline, mode, score):
    """The test's own loop: per sample, rank the pixels (attributions summed
    over channels, largest first, ties to the lower index), remove or insert
    the top round(f * d) of them, run the model on that one image."""
    rows = []
    for image, target, m in zip(x, y, maps, strict=True):
        relevance = m.sum(-1).ravel()
        order = np.argsort(-relevance, kind="stable")
        row = []
        for f in fractions:
            chosen = np.zeros(relevance.size, bool)
            chosen[order[: int(round(f * relevance.size))]] = True
            chosen = chosen.reshape(image.shape[:-1])[..., None]
            if mode == "deletion":
                perturbed = np.where(chosen, baseline, image)
            else:
                perturbed = np.where(chosen, image, baseline)
            logits = model(perturbed[None].astype("float32")).numpy()[0]
            if score == "probability":
                logits = (
                    np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                )
            row.append(logits[target])
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("score", ["probability", "logit"])
def test_curve_matches_a_naive_per_example_loop(mode, score):
    """Oracle: `_naive_curve`, one model call per image and fraction, with a
    non-zero baseline array and a step that does not divide the pixels."""
    model = _cnn()
    x, y = _images()
    maps = np.asarray(gradient_x_input(model, x, y))
    baseline = np.random.default_rng(3).normal(size=(6, 6, 2)).astype("float32")
    metric = deletion if mode == "deletion" else insertion
    result = metric(
        model, (x, y), maps, step=5, baseline=baseline, score=score, batch_size=4
    )
    expected_fractions = np.append(np.arange(0, 1, 5 / 36), 1.0)
    np.testing.assert_allclose(result.fractions, expected_fractions)
    expected = _naive_curve(model, x, y, maps, result.fractions, baseline, mode, score)
    np.testing.assert_allclose(result.per_sample, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.curve, expected.mean(0), rtol=1e-4, atol=1e-5)
    # Trapezoid areas by hand.
    widths = np.diff(result.fractions)
    areas = ((expected[:, 1:] + expected[:, :-1]) / 2 * widths).sum(1)
    assert result.area() == pytest.approx(areas.mean(), rel=1e-4)
    assert result.area_standard_error() == pytest.approx(
        areas.std(ddof=1) / np.sqrt(len(areas)), rel=1e-3
    )


def test_gradient_x_input_ranking_is_optimal_for_deletion_on_a_linear_model():
    """Hand-derived: for S_c(x) = w_c . x + b_c and baseline 0, removing a set
    S lowers S_c by sum_{i in S} w_ci x_i, so the k features of largest
    w_ci x_i (the gradient*input ranking) give the lowest logit for every k:
    the test computes that optimum by sorting, and any other ranking (saliency,
    random) is never below it."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), L.Dense(3)])
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 12)).astype("float32")
    y = rng.integers(0, 3, 6)
    w, b = model.layers[0].kernel.numpy(), model.layers[0].bias.numpy()
    contributions = x * w[:, y].T
    optimum = np.concatenate(
        [
            np.zeros((6, 1)),
            np.cumsum(np.sort(contributions, axis=1)[:, ::-1], axis=1),
        ],
        axis=1,
    )
    optimum = (contributions.sum(1) + b[y])[:, None] - optimum
    exact = deletion(model, (x, y), gradient_x_input, step=1, score="logit")
    np.testing.assert_allclose(exact.per_sample, optimum, rtol=1e-4, atol=1e-4)
    for other in (
        np.asarray(saliency(model, x, y)),
        rng.normal(size=x.shape).astype("float32"),
    ):
        worse = deletion(model, (x, y), other, step=1, score="logit")
        assert np.all(worse.per_sample >= exact.per_sample - 1e-4)
    assert worse.area() > exact.area()


def _text_model():
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            L.Embedding(20, 4),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )


def test_token_curves_match_a_numpy_forward_pass():
    """Oracle: the test's own forward pass in NumPy (embedding rows, mean over
    the 7 positions, dense layer), with each sample's real tokens ranked by
    its map, round(f * length) of them set to the zero embedding; padding is
    never ranked, removed or inserted."""
    model = _text_model()
    ids = np.array(
        [[3, 5, 7, 9, 11, 0, 0], [2, 4, 6, 8, 10, 12, 14], [1, 19, 0, 0, 0, 0, 0]]
    )
    y = np.array([0, 1, 1])
    maps = np.random.default_rng(6).normal(size=ids.shape).astype("float32")
    table = model.layers[0].embeddings.numpy()
    kernel, bias = (v.numpy() for v in model.layers[-1].weights)
    for mode, metric in (("deletion", deletion), ("insertion", insertion)):
        result = metric(model, (ids, y), maps, step=0.25, score="logit")
        expected = []
        for row, target, m in zip(ids, y, maps, strict=True):
            real = np.flatnonzero(row)
            order = real[np.argsort(-m[real], kind="stable")]
            values = []
            for f in result.fractions:
                chosen = np.zeros(row.size, bool)
                chosen[order[: int(round(f * real.size))]] = True
                replaced = chosen if mode == "deletion" else ~chosen & (row != 0)
                e = table[row] * ~replaced[:, None]
                values.append((e.mean(0) @ kernel + bias)[target])
            expected.append(values)
        np.testing.assert_allclose(result.per_sample, expected, rtol=1e-4, atol=1e-5)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def _forms(x, y):
    return {
        "tf.data": tf.data.Dataset.from_tensor_slices((x, y)).batch(2),
        "PyDataset": _Batches(x, y, 3),
        "generator": ((x[i : i + 2], y[i : i + 2]) for i in range(0, len(x), 2)),
    }


@pytest.mark.parametrize("form", ["tf.data", "PyDataset", "generator"])
def test_every_data_form_gives_the_arrays_result(form):
    """Oracle: the same metrics on the arrays (pinned above against naive
    loops): deletion, insertion and Sensitivity-n take every data form
    `evaluate` takes, batch boundaries included."""
    model = _cnn()
    x, y = _images(n=5)
    for metric in (deletion, insertion):
        reference = metric(model, (x, y), saliency, step=0.25)
        result = metric(model, _forms(x, y)[form], saliency, step=0.25)
        np.testing.assert_allclose(result.per_sample, reference.per_sample, rtol=1e-5)
    options = {"n_values": [1, 4], "num_subsets": 8, "verbose": 0}
    reference = sensitivity_n(model, (x, y), gradient_x_input, **options)
    result = sensitivity_n(model, _forms(x, y)[form], gradient_x_input, **options)
    np.testing.assert_allclose(result.per_sample, reference.per_sample, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"step": 0.0}, "step.*Received: step=0.0"),
        ({"step": 1.5}, "step.*Received: step=1.5"),
        ({"step": 100}, "step.*at most 36.*Received: step=100"),
        ({"score": "accuracy"}, "score.*Received: score='accuracy'"),
        ({"features": "channel"}, "features.*Received: features='channel'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    model = _cnn()
    x, y = _images()
    with pytest.raises(ValueError, match=message):
        deletion(model, (x, y), saliency, **kwargs)


def test_bad_data_and_maps_raise():
    model = _cnn()
    x, y = _images()
    with pytest.raises(ValueError, match="attributions.*shape.*Received"):
        deletion(model, (x, y), np.zeros((5, 6, 6, 1), "float32"))
    with pytest.raises(ValueError, match="one map per sample.*Received"):
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
        insertion(model, dataset, np.zeros((4, 6, 6, 2), "float32"))
    with pytest.raises(ValueError, match="data.*Received: data of type int"):
        deletion(model, 3, saliency)
    with pytest.raises(ValueError, match="step.*fraction.*Received: step=2"):
        deletion(_text_model(), (np.ones((2, 7), "int32"), [0, 1]), "saliency", step=2)
