"""Tests of keras_attreg.datasets: loaders, standardisation, sample, cluttered MNIST."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from keras_attreg import datasets
from keras_attreg.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    destandardize,
    load_cifar10,
    load_mnist,
    load_mnist_sample,
    make_cluttered_mnist,
    standardize,
)


def _arrays(dataset):
    """Concatenates a (batched or not) dataset of (image, label) into numpy."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    if images[0].ndim == 4:
        return np.concatenate(images), np.concatenate(labels)
    return np.stack(images), np.stack(labels)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(datasets.DATA_ENV_VAR, raising=False)


@pytest.fixture
def mnist(data_dir):
    with np.load(data_dir / "mnist.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def fake_tfds_load(monkeypatch):
    """Replaces tfds.load by a recorder returning 4 blank MNIST-like examples."""
    import tensorflow_datasets as tfds

    calls = []

    def fake_load(name, **kwargs):
        calls.append({"name": name, **kwargs})
        return tf.data.Dataset.from_tensor_slices(
            (np.zeros((4, 28, 28, 1), np.uint8), np.arange(4, dtype=np.int64))
        )

    monkeypatch.setattr(tfds, "load", fake_load)
    return calls


# Local MNIST ---------------------------------------------------------------


@pytest.mark.slow
def test_local_mnist_returns_exact_pixels_and_labels(data_dir, mnist):
    images, labels = _arrays(load_mnist("test", data_dir, batch_size=128, limit=500))
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.float32
    assert labels.dtype == np.int64
    pixels = destandardize(images, "mnist")[..., 0] * 255
    np.testing.assert_allclose(pixels, mnist["x_test"][:500], atol=1e-3)
    np.testing.assert_array_equal(labels, mnist["y_test"][:500])

    raw, _ = _arrays(load_mnist("train", data_dir, standardize=False, limit=300))
    np.testing.assert_array_equal(
        raw[..., 0], mnist["x_train"][:300].astype(np.float32) / 255
    )


@pytest.mark.slow
def test_local_mnist_counts_and_limit(data_dir):
    assert int(load_mnist("test", data_dir).cardinality()) == 10_000
    assert int(load_mnist("train", data_dir).cardinality()) == 60_000
    assert int(load_mnist("train", data_dir, limit=1234).cardinality()) == 1234
    batched = load_mnist("train", data_dir, limit=1000, batch_size=300)
    assert [int(x.shape[0]) for x, _ in batched] == [300, 300, 300, 100]


@pytest.mark.slow
def test_environment_variable_names_the_local_folder(data_dir, mnist, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV_VAR, str(data_dir))
    images, labels = _arrays(load_mnist("test", standardize=False, limit=5))
    np.testing.assert_array_equal(images[..., 0] * 255, mnist["x_test"][:5])
    np.testing.assert_array_equal(labels, mnist["y_test"][:5])


@pytest.mark.slow
def test_shuffle_permutes_the_same_examples_reproducibly(data_dir):
    plain = _arrays(load_mnist("test", data_dir, limit=200))[1]
    first = _arrays(load_mnist("test", data_dir, limit=200, shuffle=True, seed=3))[1]
    again = _arrays(load_mnist("test", data_dir, limit=200, shuffle=True, seed=3))[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, plain)
    np.testing.assert_array_equal(np.sort(first), np.sort(plain))


# Standardisation ------------------------------------------------------------


@pytest.mark.slow
def test_mnist_constants_standardise_training_set_to_zero_mean_unit_std(mnist):
    pixels = mnist["x_train"].astype(np.float64) / 255
    standardised = (pixels - MNIST_MEAN[0]) / MNIST_STD[0]
    assert abs(standardised.mean()) < 1e-9
    assert abs(standardised.std() - 1) < 1e-9


@pytest.mark.slow
def test_cifar10_constants_match_lossless_training_subset(data_dir):
    with np.load(data_dir / "cifar10_exact_subset.npz") as subset:
        pixels = subset["x_train"].astype(np.float32) / 255
    standardised = standardize(pixels, "cifar10")
    # 4,000 of the 50,000 training images: sampling error ~0.01 std.
    np.testing.assert_allclose(standardised.mean(axis=(0, 1, 2)), 0, atol=0.01)
    np.testing.assert_allclose(standardised.std(axis=(0, 1, 2)), 1, atol=0.01)


def test_standardize_is_per_channel_affine_and_inverted_by_destandardize():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    expected = np.stack(
        [(rgb[..., c] - CIFAR10_MEAN[c]) / CIFAR10_STD[c] for c in range(3)], -1
    )
    np.testing.assert_allclose(standardize(rgb, "cifar10"), expected, rtol=1e-6)
    np.testing.assert_allclose(
        destandardize(standardize(rgb, "cifar10"), "cifar10"), rgb, atol=1e-6
    )
    as_tensor = standardize(tf.constant(rgb), "cifar10")
    assert isinstance(as_tensor, tf.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), expected, rtol=1e-6)
    black = standardize(np.zeros((1, 28, 28, 1), np.float32), "mnist")
    np.testing.assert_allclose(black, -MNIST_MEAN[0] / MNIST_STD[0], rtol=1e-6)


# CIFAR-10 -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_tfrecord_decodes_first_images_and_labels(data_dir, split):
    with np.load(data_dir / "cifar10_exact_subset.npz") as subset:
        exact, exact_labels = subset[f"x_{split}"][:64], subset[f"y_{split}"][:64]
    raw, labels = _arrays(load_cifar10(split, data_dir, standardize=False, limit=64))
    assert raw.shape == (64, 32, 32, 3) and raw.dtype == np.float32
    np.testing.assert_array_equal(labels, exact_labels)
    mean_abs_error = np.abs(raw * 255 - exact.astype(np.float32)).mean()
    assert mean_abs_error < 10  # JPEG quality 75: about 5.9 grey levels
    standardised, _ = _arrays(load_cifar10(split, data_dir, limit=64, batch_size=32))
    np.testing.assert_allclose(destandardize(standardised, "cifar10"), raw, atol=1e-5)


# tensorflow_datasets path ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "loader", "shape"),
    [("mnist", load_mnist, (28, 28, 1)), ("cifar10", load_cifar10, (32, 32, 3))],
)
def test_tfds_path_standardises_mocked_data(tmp_path, name, loader, shape):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        raw = tfds.load(
            name,
            split="test",
            as_supervised=True,
            data_dir=str(tmp_path),
            download=False,
        )
        expected_x, expected_y = _arrays(raw)
        ours = loader("test", data_dir=tmp_path, source="tfds", batch_size=4)
        images, labels = _arrays(ours)
    assert images.shape == (6, *shape) and images.dtype == np.float32
    assert labels.dtype == np.int64
    pixels = expected_x.astype(np.float32) / 255
    np.testing.assert_allclose(images, standardize(pixels, name), rtol=1e-6)
    np.testing.assert_array_equal(labels, expected_y)


def test_tfds_is_told_not_to_download_when_a_folder_is_given(fake_tfds_load, no_env):
    load_mnist("train", data_dir="/some/tfds", source="tfds", limit=5)
    load_cifar10("test", source="auto")
    assert fake_tfds_load == [
        {
            "name": "mnist",
            "split": "train[:5]",
            "as_supervised": True,
            "data_dir": "/some/tfds",
            "download": False,
        },
        {
            "name": "cifar10",
            "split": "test",
            "as_supervised": True,
            "data_dir": None,
            "download": True,
        },
    ]


# Embedded sample ------------------------------------------------------------


def test_embedded_sample_is_small_and_shaped_like_mnist():
    path = pathlib.Path(datasets.__file__).parent / "mnist_sample.npz"
    assert path.stat().st_size <= 2 * 1024**2
    for split, count in [("train", 5000), ("test", 1000)]:
        images, labels = load_mnist_sample(split)
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and set(np.unique(labels)) == set(range(10))


@pytest.mark.slow
def test_embedded_sample_equals_first_mnist_digits(mnist):
    for split, count in [("train", 5000), ("test", 1000)]:
        images, labels = load_mnist_sample(split)
        np.testing.assert_array_equal(images, mnist[f"x_{split}"][:count])
        np.testing.assert_array_equal(labels, mnist[f"y_{split}"][:count])


def test_sample_source_feeds_the_same_pipeline():
    images, labels = load_mnist_sample("test")
    ours, our_labels = _arrays(load_mnist("test", source="sample", batch_size=256))
    assert ours.shape == (1000, 28, 28, 1)
    expected = (images[..., None] / np.float32(255) - MNIST_MEAN[0]) / MNIST_STD[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(our_labels, labels)


# Bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: load_mnist("validation"), r"split.*Received: split='validation'"),
        (lambda: load_mnist(source="web"), r"source.*Received: source='web'"),
        (lambda: load_cifar10(source="sample"), r"Received: source='sample'"),
        (lambda: load_mnist(source="sample", limit=0), r"Received: limit=0"),
        (lambda: load_mnist(source="sample", batch_size=-2), r"batch_size=-2"),
        (lambda: load_mnist(source="sample", seed=1.5), r"Received: seed=1.5"),
        (lambda: load_mnist_sample("val"), r"Received: split='val'"),
        (lambda: standardize(np.zeros((2, 3)), "imagenet"), r"dataset='imagenet'"),
        (lambda: standardize(np.zeros((2, 2, 2)), "cifar10"), r"images.shape"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, pattern, no_env):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_missing_local_file_names_the_path(tmp_path, no_env):
    with pytest.raises(ValueError, match="mnist.npz") as info:
        load_mnist(data_dir=tmp_path)
    assert str(tmp_path / "mnist.npz") in str(info.value)
    assert f"data_dir={str(tmp_path)!r}" in str(info.value)
    with pytest.raises(ValueError, match="cifar10-test.tfrecord"):
        load_cifar10("test", data_dir=tmp_path)


def test_local_source_without_folder_says_how_to_set_it(no_env):
    with pytest.raises(ValueError, match="KERAS_ATTREG_DATA.*data_dir=None"):
        load_mnist(source="local")


# Cluttered MNIST ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist_sample("test")
    return images[:60], labels[:60]


def test_cluttered_box_holds_exactly_the_pasted_digit(digits):
    images, labels = digits
    data = make_cluttered_mnist(images, labels, canvas_size=56, seed=0)
    assert data.images.shape == (60, 56, 56, 1) and data.images.dtype == np.float32
    np.testing.assert_array_equal(data.labels, labels)
    for i, (y0, x0, y1, x1) in enumerate(data.boxes):
        rows = np.flatnonzero(images[i].any(axis=1))
        cols = np.flatnonzero(images[i].any(axis=0))
        tight = images[i][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert (y1 - y0, x1 - x0) == tight.shape
        inside = data.images[i, y0:y1, x0:x1, 0]
        ink = tight > 0
        np.testing.assert_array_equal(inside[ink], tight[ink] / np.float32(255))
        np.testing.assert_array_equal(data.masks[i, y0:y1, x0:x1], ink)
        assert data.masks[i].sum() == ink.sum()  # no digit pixel outside the box
        # Inside the box, off the digit: background noise only, no fragments.
        assert inside[~ink].max() <= 0.1


def test_cluttered_fragments_lie_outside_the_box(digits):
    images, labels = digits
    data = make_cluttered_mnist(images, labels, num_fragments=4, noise=0.0, seed=2)
    bare = make_cluttered_mnist(images, labels, num_fragments=0, noise=0.0, seed=2)
    for i, (y0, x0, y1, x1) in enumerate(data.boxes):
        outside = data.images[i, ..., 0].copy()
        outside[y0:y1, x0:x1] = 0
        assert outside.sum() > 1.0  # fragments of ink were drawn
        np.testing.assert_array_equal(outside * 255, np.round(outside * 255))
        bare_outside = bare.images[i, ..., 0].copy()
        by0, bx0, by1, bx1 = bare.boxes[i]
        bare_outside[by0:by1, bx0:bx1] = 0
        assert bare_outside.sum() == 0  # without clutter or noise: only the digit


def test_cluttered_is_deterministic_under_seed(digits):
    images, labels = digits
    first = make_cluttered_mnist(images, labels, seed=5)
    again = make_cluttered_mnist(images, labels, seed=5)
    other = make_cluttered_mnist(images, labels, seed=6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.boxes, other.boxes)
    assert not np.array_equal(first.images, other.images)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"images": np.zeros((3, 28, 28), np.float32)}, r"images.*dtype=float32"),
        ({"labels": np.zeros(2, int)}, r"labels.*labels.shape=\(2,\)"),
        ({"images": np.zeros((3, 28, 28), np.uint8)}, r"blank images at indices"),
        ({"fragment_size": 29}, r"Received: fragment_size=29"),
        ({"canvas_size": 20}, r"Received: canvas_size=20"),
        ({"noise": -0.1}, r"Received: noise=-0.1"),
        ({"images": np.ones((1, 28, 28), np.uint8), "labels": [0]}, r"at least 2"),
    ],
)
def test_cluttered_bad_arguments_raise_value_error(kwargs, pattern):
    arguments = {"images": np.ones((3, 28, 28), np.uint8), "labels": [0, 1, 2]}
    with pytest.raises(ValueError, match=pattern):
        make_cluttered_mnist(**{**arguments, **kwargs})
