"""The wrong-reason score and the Decoy MNIST builder.

Oracles: linear models whose gradient is known by construction (it is the
weight row), so the share of |attribution| in the region is computed by hand;
the Decoy MNIST swatch checked pixel by pixel against Ross et al.'s rule.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar


def _linear(weights):
    """Flatten + Dense(2, no bias) with the kernel `weights` (pixels x 2)."""
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    model.layers[-1].kernel.assign(weights)
    return model


def _region():
    mask = np.zeros((4, 4), "float32")
    mask[:2, :2] = 1
    return mask


def test_a_model_reading_only_the_region_scores_one_and_one_ignoring_it_zero():
    """Saliency of a linear model is its weight row: weights only inside the
    region give share 1, only outside give 0."""
    inside = _region().reshape(-1)
    x = np.random.default_rng(0).random((5, 4, 4, 1)).astype("float32")
    y = np.array([0, 1, 0, 1, 1])
    masks = np.repeat(_region()[None], 5, axis=0)
    reads = _linear(np.stack([inside, 2 * inside], axis=1))
    ignores = _linear(np.stack([1 - inside, 3 * (1 - inside)], axis=1))
    score = kar.evaluation.wrong_reason_score(reads, (x, y), masks)
    np.testing.assert_allclose(score.per_sample, 1.0)
    score = kar.evaluation.wrong_reason_score(ignores, (x, y), masks)
    np.testing.assert_allclose(score.per_sample, 0.0)
    np.testing.assert_allclose(score.chance, 4 / 16)


def test_share_per_class_and_for_gradient_x_input_by_hand():
    """Class 0 has weights 1 everywhere (share = 4/16), class 1 weight 3 in
    the region and 1 outside (share 12/24); gradient x input with x = 2 in
    the region and 1 outside: class 0 share 8/20. Unannotated examples (zero
    mask) are left out."""
    inside = _region().reshape(-1)
    model = _linear(np.stack([np.ones(16), 1 + 2 * inside], axis=1))
    x = np.ones((4, 4, 4, 1), "float32")
    x[:, :2, :2] = 2.0
    y = np.array([0, 1, 0, 1])
    masks = np.repeat(_region()[None], 4, axis=0)
    masks[3] = 0
    score = kar.evaluation.wrong_reason_score(model, (x, y), masks)
    np.testing.assert_allclose(score.per_sample, [4 / 16, 12 / 24, 4 / 16])
    assert score.per_class() == pytest.approx({0: 4 / 16, 1: 12 / 24})
    np.testing.assert_allclose(score.overall, (4 / 16 * 2 + 0.5) / 3)
    gxi = kar.evaluation.wrong_reason_score(
        model, (x, y), masks, method="gradient_x_input"
    )
    np.testing.assert_allclose(gxi.per_sample[0], 8 / 20)
    assert gxi.label == "gradient_x_input"


def test_a_dataset_of_annotated_batches_gives_the_same_scores(tmp_path):
    """The same examples from arrays and from a tf.data pipeline, a generator
    and a PyDataset of (x, kar.annotate(y, masks)); `plot` writes the
    comparison figure."""
    rng = np.random.default_rng(1)
    model = _linear(rng.normal(size=(16, 2)).astype("float32"))
    x = rng.random((6, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 2, 6)
    masks = np.repeat(_region()[None, ..., None], 6, axis=0)  # (n, H, W, 1)
    arrays = kar.evaluation.wrong_reason_score(model, (x, y), masks)
    dataset = tf.data.Dataset.from_tensor_slices((x, kar.annotate(y, masks)))
    batched = kar.evaluation.wrong_reason_score(model, dataset.batch(4))
    np.testing.assert_allclose(batched.per_sample, arrays.per_sample)

    def batches():
        for i in (0, 4):
            yield x[i : i + 4], kar.annotate(y[i : i + 4], masks[i : i + 4])

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return list(batches())[i]

    for source in (batches(), Batches()):
        scores = kar.evaluation.wrong_reason_score(model, source)
        np.testing.assert_allclose(scores.per_sample, arrays.per_sample)
    figure = arrays.plot(tmp_path / "wr.png", batched, names=["a", "b"])
    assert (tmp_path / "wr.png").exists() and figure.axes
    assert arrays.to_dict()["num_samples"] == 6


def test_wrong_reason_bad_input_raises():
    model = _linear(np.ones((16, 2), "float32"))
    x, y = np.ones((2, 4, 4, 1), "float32"), np.zeros(2, "int64")
    with pytest.raises(ValueError, match="annotation_mask.*None"):
        kar.evaluation.wrong_reason_score(model, (x, y))
    with pytest.raises(ValueError, match="annotation_mask.*shape"):
        kar.evaluation.wrong_reason_score(model, (x, y), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="annotation_mask.*0 .no constraint"):
        kar.evaluation.wrong_reason_score(model, (x, y), np.full((2, 4, 4), 2.0))
    with pytest.raises(ValueError, match="one mask and one label"):
        kar.evaluation.wrong_reason_score(model, (x, y), np.ones((3, 4, 4)))


def test_decoy_mnist_swatch_follows_ross_et_al():
    """4x4 swatch in a corner; train shade 255 - 25 y; test shades of random
    classes; the mask is exactly the swatch and the rest of the digit is
    untouched; corners vary and the same seed repeats."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 28, 28)).astype("uint8")
    labels = rng.integers(0, 10, 400)
    train = kar.datasets.make_decoy_mnist(images, labels, "train", seed=5)
    corners = set()
    for image, original, mask, label in zip(
        train.images, images, train.masks, labels, strict=True
    ):
        rows, cols = np.nonzero(mask)
        assert len(rows) == 16
        assert {rows.min(), rows.max()} in ({0, 3}, {24, 27})
        assert {cols.min(), cols.max()} in ({0, 3}, {24, 27})
        corners.add((rows.min(), cols.min()))
        assert np.all(image[mask] == 255 - 25 * label)
        np.testing.assert_array_equal(image[~mask], original[~mask])
    assert len(corners) == 4
    test = kar.datasets.make_decoy_mnist(images, labels, "test", seed=5)
    shade_class = (255 - test.shades.astype(int)) / 25
    assert np.all(shade_class == np.round(shade_class))
    assert np.mean(shade_class == labels) < 0.2  # random classes, not the label
    again = kar.datasets.make_decoy_mnist(images, labels, "test", seed=5)
    np.testing.assert_array_equal(again.images, test.images)
    with pytest.raises(ValueError, match="images"):
        kar.datasets.make_decoy_mnist(images.astype("float32"), labels)
    with pytest.raises(ValueError, match="labels"):
        kar.datasets.make_decoy_mnist(images, labels + 5)


def test_token_ids_give_one_share_per_sentence_from_the_weights():
    """Token ids: saliency per token of Embedding-Flatten-Dense(no bias) is
    sum_d |W[t * dim + d, c]| (the gradient at the embedding is the weight
    row), so the share of the masked tokens follows from the kernel alone."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(12, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    ids = np.random.default_rng(0).integers(1, 12, (3, 5)).astype("int32")
    y = np.array([0, 1, 1])
    masks = np.zeros((3, 5), "float32")
    masks[:, 1] = 1
    masks[2, 3] = 1
    per_token = np.abs(model.layers[-1].kernel.numpy()).reshape(5, 4, 2).sum(axis=1)
    expected = [
        (per_token[:, c] * m).sum() / per_token[:, c].sum()
        for c, m in zip(y, masks, strict=True)
    ]
    score = kar.evaluation.wrong_reason_score(model, (ids, y), masks)
    np.testing.assert_allclose(score.per_sample, expected, rtol=1e-5)
