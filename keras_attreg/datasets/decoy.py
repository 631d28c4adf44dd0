"""Decoy MNIST (Ross, Hughes, Doshi-Velez, IJCAI 2017): a shortcut to learn.

Each digit gets a 4 x 4 swatch in one of the four corners, chosen at random.
In the training data the swatch's grey level gives the class away,
255 - 25 * label; in the test data it is that of a random class, so a model
that learned the swatch instead of the digit fails there. The annotation
mask of each image is its swatch: the input that must not be the reason.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_attreg._validation import check_choice, check_int

SWATCH = 4
_SHADE_STEP = 25


class DecoyMNIST(NamedTuple):
    """The arrays made by `make_decoy_mnist`.

    Attributes:
        images: uint8 `(n, 28, 28)`, the digits with their swatch.
        labels: the labels, as given.
        masks: bool `(n, 28, 28)`, True on the swatch.
        shades: uint8 `(n,)`, the swatch's grey level.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    shades: np.ndarray


def make_decoy_mnist(
    images: np.ndarray, labels: np.ndarray, split: str = "train", seed: int = 0
) -> DecoyMNIST:
    """Adds Ross et al.'s decoy swatch to each digit.

    For each image a corner is drawn uniformly at random (the swatch covers
    rows 0-3 or 24-27 and columns 0-3 or 24-27 of a 28 x 28 digit) and filled
    with the grey level 255 - 25 * c: c is the image's label for
    `split="train"`, a class drawn uniformly from 0-9 for `split="test"`.

    Args:
        images: uint8 digits `(n, h, w)` or `(n, h, w, 1)`, e.g. MNIST.
        labels: integer labels in 0-9, `(n,)`.
        split: `"train"` (the shade gives the label away) or `"test"`.
        seed: the random corners (and test shades); the same seed gives the
            same arrays.

    Returns:
        A `DecoyMNIST` (images of the input's shape).

    Example:

    >>> import numpy as np
    >>> from keras_attreg.datasets import make_decoy_mnist
    >>> decoy = make_decoy_mnist(np.zeros((2, 28, 28), "uint8"), np.array([0, 3]))
    >>> [int(decoy.images[i][decoy.masks[i]].max()) for i in range(2)]
    [255, 180]
    >>> decoy.masks.sum(axis=(1, 2)).tolist()
    [16, 16]
    """
    check_choice("split", split, ("train", "test"))
    seed = check_int("seed", seed, low=0)
    images = np.asarray(images)
    labels = np.asarray(labels)
    squeeze = images.ndim == 4 and images.shape[-1] == 1
    planes = images[..., 0] if squeeze else images
    if planes.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            "Invalid value for argument images: expected uint8 digits of shape "
            f"(n, h, w) or (n, h, w, 1). Received: images with shape "
            f"{images.shape} and dtype {images.dtype}"
        )
    if (
        labels.shape != (len(planes),)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min(initial=0) < 0
        or labels.max(initial=0) > 9
    ):
        raise ValueError(
            f"Invalid value for argument labels: expected {len(planes)} integer "
            f"labels in 0-9. Received: labels with shape {labels.shape}, dtype "
            f"{labels.dtype}"
        )
    n, height, width = planes.shape
    rng = np.random.default_rng(seed)
    bottom = rng.random(n) < 0.5
    right = rng.random(n) < 0.5
    classes = labels if split == "train" else rng.integers(0, 10, n)
    shades = (255 - _SHADE_STEP * classes).astype(np.uint8)
    rows = np.arange(height)[None, :, None]
    columns = np.arange(width)[None, None, :]
    in_rows = np.where(bottom[:, None, None], rows >= height - SWATCH, rows < SWATCH)
    in_columns = np.where(
        right[:, None, None], columns >= width - SWATCH, columns < SWATCH
    )
    masks = in_rows & in_columns
    out = np.where(masks, shades[:, None, None], planes).astype(np.uint8)
    return DecoyMNIST(
        images=out[..., None] if squeeze else out,
        labels=labels,
        masks=masks,
        shades=shades,
    )
