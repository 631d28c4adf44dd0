"""Localisation scores of attribution maps against a known object box.

Two scores, for images whose object lies in a known box (e.g.
`keras_attreg.datasets.make_cluttered_mnist`):

- mass in box: the share of the attribution magnitude that falls inside the
  box, sum_{p in box} |R_p| / sum_p |R_p|, where |R_p| is the magnitude of
  pixel p summed over channels; 1 means no attribution lands on the clutter.
- pointing game (Zhang et al., "Top-down neural attention by excitation
  backprop", ECCV 2016): a hit when the pixel of largest magnitude lies inside
  the box, widened by `tolerance` pixels on every side.

Maps are NumPy arrays or tensors of shape `(n, H, W)` or `(n, H, W, C)`;
boxes are `(n, 4)` integers `(y0, x0, y1, x1)` with `y1`, `x1` exclusive, as
made by `make_cluttered_mnist`.
"""

from __future__ import annotations

import numpy as np

from keras_attreg._validation import check_int


def _pixel_magnitude(attributions) -> np.ndarray:
    """|R| summed over the channel axis, shape (n, H, W), float64."""
    maps = np.abs(np.asarray(attributions, dtype=np.float64))
    if maps.ndim == 4:
        return maps.sum(axis=-1)
    if maps.ndim != 3:
        raise ValueError(
            "Invalid value for argument attributions: expected maps of shape "
            "(n, H, W) or (n, H, W, C). "
            f"Received: attributions with shape {maps.shape}"
        )
    return maps


def _box_masks(boxes, num_maps: int, height: int, width: int) -> np.ndarray:
    """Boolean masks (n, H, W) of the boxes, after checking them."""
    boxes = np.asarray(boxes)
    if boxes.shape != (num_maps, 4) or not np.issubdtype(boxes.dtype, np.integer):
        raise ValueError(
            f"Invalid value for argument boxes: expected {num_maps} integer boxes "
            "(y0, x0, y1, x1), shape (n, 4), one per map. "
            f"Received: boxes with shape {boxes.shape} and dtype {boxes.dtype}"
        )
    y0, x0, y1, x1 = boxes.T
    if np.any((y0 < 0) | (x0 < 0) | (y1 > height) | (x1 > width)) or np.any(
        (y1 <= y0) | (x1 <= x0)
    ):
        raise ValueError(
            "Invalid value for argument boxes: expected non-empty boxes with "
            f"0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width}. "
            f"Received: boxes with min {boxes.min(axis=0).tolist()} and max "
            f"{boxes.max(axis=0).tolist()} per column"
        )
    rows = np.arange(height)[None, :, None]
    columns = np.arange(width)[None, None, :]
    return (
        (rows >= y0[:, None, None])
        & (rows < y1[:, None, None])
        & (columns >= x0[:, None, None])
        & (columns < x1[:, None, None])
    )


def share_inside(magnitude: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per sample, the share of `magnitude` (non-negative, any rank) where
    `inside` (broadcast against it) is set; NaN where a sample's magnitude
    is all zero."""
    axes = tuple(range(1, magnitude.ndim))
    total = magnitude.sum(axis=axes)
    within = (magnitude * inside).sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, within / total, np.nan)


def mass_in_box(attributions, boxes) -> np.ndarray:
    """Share of the attribution magnitude inside each sample's box.

        share = sum_{p in box} |R_p| / sum_p |R_p|,   |R_p| = sum_ch |R_{p,ch}|

    Args:
        attributions: maps `(n, H, W)` or `(n, H, W, C)`.
        boxes: `(n, 4)` integer boxes `(y0, x0, y1, x1)`, `y1`/`x1` exclusive.

    Returns:
        float64 array `(n,)` in [0, 1]; NaN where a map is all zero.

    Example:

    >>> maps = np.zeros((1, 4, 4)); maps[0, 0, 0] = 3.0; maps[0, 3, 3] = 1.0
    >>> mass_in_box(maps, np.array([[0, 0, 2, 2]]))
    array([0.75])
    """
    magnitude = _pixel_magnitude(attributions)
    return share_inside(magnitude, _box_masks(boxes, *magnitude.shape))


def pointing_game(attributions, boxes, tolerance: int = 0) -> np.ndarray:
    """Pointing-game hits: is the map's largest magnitude inside the box?

    The point of a map is the pixel of largest |R_p| (summed over channels;
    the first in row-major order on ties). It is a hit when it lies inside the
    box widened by `tolerance` pixels on every side.

    Args:
        attributions: maps `(n, H, W)` or `(n, H, W, C)`.
        boxes: `(n, 4)` integer boxes `(y0, x0, y1, x1)`, `y1`/`x1` exclusive.
        tolerance: pixels added around the box (Zhang et al. use 15 at
            ImageNet scale).

    Returns:
        bool array `(n,)`; the hit rate is its mean.

    Example:

    >>> maps = np.zeros((2, 4, 4)); maps[0, 1, 1] = 1.0; maps[1, 3, 3] = 1.0
    >>> pointing_game(maps, np.array([[0, 0, 2, 2], [0, 0, 2, 2]]))
    array([ True, False])
    """
    tolerance = check_int("tolerance", tolerance, low=0)
    magnitude = _pixel_magnitude(attributions)
    num_maps, height, width = magnitude.shape
    _box_masks(boxes, num_maps, height, width)
    flat = magnitude.reshape(num_maps, -1).argmax(axis=1)
    row, column = np.divmod(flat, width)
    y0, x0, y1, x1 = np.asarray(boxes).T
    return (
        (row >= y0 - tolerance)
        & (row < y1 + tolerance)
        & (column >= x0 - tolerance)
        & (column < x1 + tolerance)
    )
