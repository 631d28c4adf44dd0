"""Cluttered MNIST: real digits on a larger canvas, with a known object box.

A ground truth for localisation scores (share of attribution mass inside the
object's box, pointing game): each canvas holds one real digit at a random
place, fragments of other digits outside the digit's box, and uniform noise
everywhere, so attribution that lands outside the box is on clutter.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from keras_attreg._validation import check_float, check_int

_PLACEMENT_TRIES = 100


class ClutteredMNIST(NamedTuple):
    """The arrays made by `make_cluttered_mnist`.

    Attributes:
        images: float32 `(n, canvas_size, canvas_size, 1)`, values in [0, 1]
            (pixel / 255, not standardised).
        labels: int64 `(n,)`, the class of the pasted digit.
        boxes: int32 `(n, 4)`, the digit's tight box `(y0, x0, y1, x1)` on the
            canvas, `y1` and `x1` exclusive: `images[i, y0:y1, x0:x1]`.
        masks: bool `(n, canvas_size, canvas_size)`, the digit's own (nonzero)
            pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


def make_cluttered_mnist(
    images: np.ndarray,
    labels: np.ndarray,
    canvas_size: int = 56,
    num_fragments: int = 4,
    fragment_size: int = 10,
    noise: float = 0.1,
    seed: int = 0,
) -> ClutteredMNIST:
    """Pastes each digit at a random place on a cluttered canvas.

    For digit `i`: the canvas starts as uniform noise in `[0, noise]`; then
    `num_fragments` square crops of side `fragment_size`, each centred on an ink
    pixel of another, randomly chosen digit, are drawn (by pixel-wise maximum)
    at random places that do not overlap the digit's box; finally the digit is
    pasted at a random place, its nonzero pixels replacing the canvas, so that
    inside the box the canvas equals the digit wherever the digit has ink. A
    fragment that finds no free place in 100 tries is left out. The same `seed`
    gives the same arrays.

    Args:
        images: uint8 digits `(n, h, w)` or `(n, h, w, 1)`, e.g. from
            `load_mnist_sample`.
        labels: `(n,)` integer labels.
        canvas_size: side of the square canvas, at least `max(h, w)`.
        num_fragments: clutter fragments per canvas (needs `n >= 2` when > 0).
        fragment_size: side of each fragment, at most `min(h, w)`.
        noise: upper bound of the uniform background noise, in [0, 1].
        seed: seed of the random placement.

    Returns:
        A `ClutteredMNIST` of images, labels, boxes and masks.

    Example:

    >>> from keras_attreg.datasets import load_mnist_sample
    >>> x, y = load_mnist_sample("test")
    >>> data = make_cluttered_mnist(x[:8], y[:8], canvas_size=56, seed=1)
    >>> data.images.shape, data.boxes.shape
    ((8, 56, 56, 1), (8, 4))
    """
    digits, labels = _check_digits(images, labels)
    n, height, width = digits.shape
    canvas_size = check_int("canvas_size", canvas_size, low=max(height, width))
    num_fragments = check_int("num_fragments", num_fragments, low=0)
    fragment_size = check_int("fragment_size", fragment_size, low=1)
    if fragment_size > min(height, width):
        raise ValueError(
            "Invalid value for argument fragment_size: expected an integer <= "
            f"{min(height, width)} (the digits' side). "
            f"Received: fragment_size={fragment_size}"
        )
    if num_fragments > 0 and n < 2:
        raise ValueError(
            "Invalid value for argument images: expected at least 2 digits to "
            f"cut fragments from other digits. Received: images.shape={images.shape}"
        )
    noise = check_float("noise", noise, low=0.0, high=1.0)
    seed = check_int("seed", seed)

    rng = np.random.default_rng(seed)
    canvases = np.empty((n, canvas_size, canvas_size), np.float32)
    masks = np.zeros((n, canvas_size, canvas_size), bool)
    boxes = np.empty((n, 4), np.int32)
    for i in range(n):
        canvas = rng.uniform(0.0, noise, (canvas_size, canvas_size))
        canvas = canvas.astype(np.float32)
        top = rng.integers(0, canvas_size - height + 1)
        left = rng.integers(0, canvas_size - width + 1)
        ink_rows = np.flatnonzero(digits[i].any(axis=1))
        ink_cols = np.flatnonzero(digits[i].any(axis=0))
        box = (
            top + ink_rows[0],
            left + ink_cols[0],
            top + ink_rows[-1] + 1,
            left + ink_cols[-1] + 1,
        )
        for _ in range(num_fragments):
            other = digits[(i + rng.integers(1, n)) % n]
            fragment = _crop_around_ink(other, fragment_size, rng)
            _draw_outside(canvas, fragment, box, rng)
        ink = digits[i] > 0
        window = canvas[top : top + height, left : left + width]
        window[ink] = digits[i][ink] / np.float32(255)
        masks[i, top : top + height, left : left + width] = ink
        canvases[i] = canvas
        boxes[i] = box
    return ClutteredMNIST(canvases[..., None], labels, boxes, masks)


def _check_digits(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(digits (n, h, w) uint8, labels (n,) int64)` after checks."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(
            "Invalid value for argument images: expected a non-empty uint8 array "
            "of shape (n, h, w) or (n, h, w, 1). "
            f"Received: images.shape={images.shape}, dtype={images.dtype}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Invalid value for argument labels: expected {len(images)} integer "
            f"labels, one per image. Received: labels.shape={labels.shape}, "
            f"dtype={labels.dtype}"
        )
    blank = np.flatnonzero(~images.any(axis=(1, 2)))
    if blank.size:
        raise ValueError(
            "Invalid value for argument images: expected every digit to have "
            f"nonzero pixels (its box is undefined otherwise). Received: blank "
            f"images at indices {blank[:5].tolist()}"
        )
    return images, labels.astype(np.int64)


def _crop_around_ink(digit, size, rng) -> np.ndarray:
    """A `size x size` crop of `digit` (scaled to [0, 1]) around a random ink pixel."""
    rows, cols = np.nonzero(digit)
    pick = rng.integers(len(rows))
    top = np.clip(rows[pick] - size // 2, 0, digit.shape[0] - size)
    left = np.clip(cols[pick] - size // 2, 0, digit.shape[1] - size)
    return digit[top : top + size, left : left + size] / np.float32(255)


def _draw_outside(canvas, fragment, box, rng) -> None:
    """Draws `fragment` (maximum) at a random place not overlapping `box`."""
    y0, x0, y1, x1 = box
    size = fragment.shape[0]
    for _ in range(_PLACEMENT_TRIES):
        top, left = rng.integers(0, canvas.shape[0] - size + 1, size=2)
        if top + size <= y0 or top >= y1 or left + size <= x0 or left >= x1:
            region = canvas[top : top + size, left : left + size]
            np.maximum(region, fragment, out=region)
            return
