"""MNIST and CIFAR-10 as `tf.data` pipelines, standardised as the papers do.

Every loader yields `(image, label)` pairs: `image` is float32 NHWC
(`(28, 28, 1)` for MNIST, `(32, 32, 3)` for CIFAR-10), `label` is int64 in
0..9. Images are scaled to [0, 1] (`pixel / 255`) and then, by default,
standardised per channel with the training-set statistics,

    x' = (pixel / 255 - mean[channel]) / std[channel],

as the L1 gradient penalty paper (Kiritoshi et al., 2019, Sec. 4.2: "training
data is standardized as preprocessing") does.

Sources (`source=`):
- `"local"`: files in `data_dir` (or in the folder named by the environment
  variable `KERAS_ATTREG_DATA`): `mnist.npz` (`x_train`, `y_train`, `x_test`,
  `y_test`, uint8) and `cifar10-train.tfrecord` / `cifar10-test.tfrecord`
  (`tf.train.Example` with JPEG bytes `image` and int64 `label`).
- `"tfds"`: `tensorflow_datasets` (downloads when no `data_dir` is given; with
  a `data_dir` it reads the prepared copy there and never downloads).
- `"sample"` (MNIST only): the 5,000 train / 1,000 test digits shipped inside
  the package (see `load_mnist_sample`), for offline quick starts.
- `"auto"`: `"local"` when `data_dir` or `KERAS_ATTREG_DATA` is set, else
  `"tfds"`.
"""

from __future__ import annotations

import os
import pathlib
from importlib import resources

import numpy as np
import tensorflow as tf

from keras_attreg._validation import check_choice, check_int

DATA_ENV_VAR = "KERAS_ATTREG_DATA"

# Mean and standard deviation of pixel / 255 over all 60,000 MNIST training
# digits (all pixels), computed from the pixel-exact `mnist.npz`.
MNIST_MEAN = (0.1306604762738429,)
MNIST_STD = (0.30810780385646264,)

# Per-channel (R, G, B) mean and standard deviation of pixel / 255 over the
# 50,000 original (lossless) CIFAR-10 training images: the widely used
# statistics, which agree with the lossless first 4,000 training images to
# within 0.002. The JPEG copy `cifar10-train.tfrecord` has means
# (0.4868, 0.4822, 0.4414) and stds (0.2451, 0.2425, 0.2605): compression
# shifts the red and blue means by about 0.02 std.
CIFAR10_MEAN = (0.4913996786, 0.4821584094, 0.4465309083)
CIFAR10_STD = (0.2470322251, 0.2434851345, 0.2615878475)

_STATISTICS = {
    "mnist": (np.float32(MNIST_MEAN), np.float32(MNIST_STD)),
    "cifar10": (np.float32(CIFAR10_MEAN), np.float32(CIFAR10_STD)),
}
_SPLITS = ("train", "test")
_SAMPLE_FILE = "mnist_sample.npz"
_SHUFFLE_BUFFER = 10_000
_CIFAR_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def standardize(images, dataset: str):
    """Standardises images scaled to [0, 1] with the training statistics.

    Computes `(images - mean) / std` per channel (last axis). Use it to express
    attribution baselines in the model's input space, e.g. a black image.

    Args:
        images: NumPy array or tensor, NHWC (or HWC), pixel values / 255.
        dataset: `"mnist"` or `"cifar10"`: whose statistics to use.

    Returns:
        The standardised images, same type and shape.

    Example:

    >>> black = standardize(np.zeros((1, 28, 28, 1), "float32"), "mnist")
    >>> round(float(black[0, 0, 0, 0]), 4)
    -0.4241
    """
    mean, std = _statistics(images, dataset)
    return (images - mean) / std


def destandardize(images, dataset: str):
    """Inverts `standardize`: returns images scaled to [0, 1].

    Args:
        images: NumPy array or tensor in the standardised space.
        dataset: `"mnist"` or `"cifar10"`.

    Returns:
        `images * std + mean`, same type and shape.

    Example:

    >>> x = np.full((1, 28, 28, 1), 0.5, "float32")
    >>> bool(np.allclose(destandardize(standardize(x, "mnist"), "mnist"), x))
    True
    """
    mean, std = _statistics(images, dataset)
    return images * std + mean


def load_mnist_sample(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Returns the real MNIST digits shipped inside the package (no data needed).

    The sample holds the first 5,000 training and the first 1,000 test digits of
    MNIST (LeCun, Cortes and Burges), pixel-exact, written by
    `python scripts/make_mnist_sample.py --data-dir ../shared/data`.

    Args:
        split: `"train"` (5,000 digits) or `"test"` (1,000 digits).

    Returns:
        `(images, labels)`: uint8 arrays of shapes `(n, 28, 28)` and `(n,)`.

    Example:

    >>> x, y = load_mnist_sample("test")
    >>> x.shape, x.dtype, y.shape
    ((1000, 28, 28), dtype('uint8'), (1000,))
    """
    check_choice("split", split, _SPLITS)
    resource = resources.files(__package__).joinpath(_SAMPLE_FILE)
    with resource.open("rb") as file, np.load(file) as sample:
        return sample[f"x_{split}"], sample[f"y_{split}"]


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    standardize: bool = True,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    limit: int | None = None,
    source: str = "auto",
) -> tf.data.Dataset:
    """Loads MNIST as a `tf.data.Dataset` of `(image, label)`.

    Args:
        split: `"train"` (60,000 digits) or `"test"` (10,000).
        data_dir: folder holding `mnist.npz` (`source="local"`), or a
            `tensorflow_datasets` data folder (`source="tfds"`, no download).
            Defaults to `$KERAS_ATTREG_DATA`.
        standardize: if True, `(pixel / 255 - MNIST_MEAN) / MNIST_STD`; if False,
            `pixel / 255`.
        batch_size: if given, batch the dataset (last batch may be smaller).
        shuffle: shuffle the examples (again at each epoch).
        seed: shuffle seed.
        limit: keep only the first `limit` examples of the split.
        source: `"auto"`, `"local"`, `"tfds"` or `"sample"` (see module doc).

    Returns:
        A dataset of float32 images `(28, 28, 1)` and int64 labels (batched
        when `batch_size` is given).

    Example:

    >>> ds = load_mnist("test", source="sample", batch_size=32)
    >>> images, labels = next(iter(ds))
    >>> images.shape, labels.dtype.name
    (TensorShape([32, 28, 28, 1]), 'int64')
    """
    source, data_dir = _resolve(
        split, data_dir, source, ("auto", "local", "tfds", "sample")
    )
    limit, batch_size, seed = _check_sizes(limit, batch_size, seed)
    if source == "tfds":
        dataset = _load_tfds("mnist", split, data_dir, limit)
    else:
        if source == "sample":
            images, labels = load_mnist_sample(split)
        else:
            path = _local_file(data_dir, "mnist.npz")
            with np.load(path) as mnist:
                images, labels = mnist[f"x_{split}"], mnist[f"y_{split}"]
        dataset = tf.data.Dataset.from_tensor_slices(
            (images[:limit, :, :, None], labels[:limit])
        )
    return _pipeline(dataset, "mnist", standardize, batch_size, shuffle, seed)


def load_cifar10(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    standardize: bool = True,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    limit: int | None = None,
    source: str = "auto",
) -> tf.data.Dataset:
    """Loads CIFAR-10 as a `tf.data.Dataset` of `(image, label)`.

    The local test file keeps the original order for its first 1,000 images
    only (the rest is grouped by class): use `shuffle=True` when taking more.

    Args:
        split: `"train"` (50,000 images) or `"test"` (10,000).
        data_dir: folder holding `cifar10-{split}.tfrecord` (`source="local"`),
            or a `tensorflow_datasets` data folder (`source="tfds"`, no
            download). Defaults to `$KERAS_ATTREG_DATA`.
        standardize: if True, `(pixel / 255 - CIFAR10_MEAN) / CIFAR10_STD` per
            channel; if False, `pixel / 255`.
        batch_size: if given, batch the dataset (last batch may be smaller).
        shuffle: shuffle the examples (again at each epoch).
        seed: shuffle seed.
        limit: keep only the first `limit` examples of the split.
        source: `"auto"`, `"local"` or `"tfds"` (see module doc).

    Returns:
        A dataset of float32 RGB images `(32, 32, 3)` and int64 labels in
        CIFAR-10's order (airplane, automobile, bird, cat, deer, dog, frog,
        horse, ship, truck).

    Example:

    >>> ds = load_cifar10("test", data_dir=data_dir, limit=8)
    >>> [tuple(x.shape) for x, _ in ds.take(1)]
    [(32, 32, 3)]
    """
    source, data_dir = _resolve(split, data_dir, source, ("auto", "local", "tfds"))
    limit, batch_size, seed = _check_sizes(limit, batch_size, seed)
    if source == "tfds":
        dataset = _load_tfds("cifar10", split, data_dir, limit)
    else:
        path = _local_file(data_dir, f"cifar10-{split}.tfrecord")
        dataset = tf.data.TFRecordDataset(str(path))
        if limit is not None:
            dataset = dataset.take(limit)
        dataset = dataset.map(_parse_cifar_record, num_parallel_calls=tf.data.AUTOTUNE)
    return _pipeline(dataset, "cifar10", standardize, batch_size, shuffle, seed)


def _statistics(images, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    mean, std = _STATISTICS[check_choice("dataset", dataset, tuple(_STATISTICS))]
    channels = images.shape[-1] if len(images.shape) else None
    if channels is not None and channels not in (1, len(mean)):
        raise ValueError(
            f"Invalid value for argument images: expected {len(mean)} channel(s) "
            f"on the last axis for dataset={dataset!r}. "
            f"Received: images.shape={tuple(images.shape)}"
        )
    return mean, std


def _resolve(split, data_dir, source, sources) -> tuple[str, pathlib.Path | None]:
    """Checks `split`/`source` and picks the source and folder to read."""
    check_choice("split", split, _SPLITS)
    check_choice("source", source, sources)
    explicit_dir = data_dir is not None
    if not explicit_dir and source in ("auto", "local"):
        data_dir = os.environ.get(DATA_ENV_VAR) or None
    if source == "auto":
        source = "local" if data_dir is not None else "tfds"
    if source == "local" and data_dir is None:
        raise ValueError(
            "Invalid value for argument data_dir: expected the folder holding "
            f"the data files with source='local' (or set ${DATA_ENV_VAR}). "
            "Received: data_dir=None"
        )
    return source, (pathlib.Path(data_dir) if data_dir is not None else None)


def _local_file(data_dir: pathlib.Path, filename: str) -> pathlib.Path:
    path = data_dir / filename
    if not path.is_file():
        raise ValueError(
            f"Invalid value for argument data_dir: expected a folder holding "
            f"{filename}, but {path} does not exist. "
            f"Received: data_dir={str(data_dir)!r}"
        )
    return path


def _check_sizes(limit, batch_size, seed) -> tuple[int | None, ...]:
    """Checks the optional integer arguments shared by the loaders."""
    return (
        None if limit is None else check_int("limit", limit, low=1),
        None if batch_size is None else check_int("batch_size", batch_size, low=1),
        None if seed is None else check_int("seed", seed),
    )


def _load_tfds(name: str, split: str, data_dir, limit: int | None):
    import tensorflow_datasets as tfds

    return tfds.load(
        name,
        split=split if limit is None else f"{split}[:{limit}]",
        as_supervised=True,
        data_dir=None if data_dir is None else str(data_dir),
        download=data_dir is None,
    )


def _parse_cifar_record(record):
    example = tf.io.parse_single_example(record, _CIFAR_FEATURES)
    image = tf.io.decode_jpeg(example["image"], channels=3)
    return tf.ensure_shape(image, (32, 32, 3)), example["label"]


def _pipeline(dataset, name, standardized, batch_size, shuffle, seed):
    """Shuffles raw examples, scales (and standardises) images, batches."""
    if shuffle:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed)

    def prepare(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if standardized:
            image = standardize(image, name)
        return image, tf.cast(label, tf.int64)

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
