"""Annotation masks: per-example "not the reason" masks carried with the labels.

A training batch is `(x, y)` or `(x, y, sample_weight)` as everywhere in
Keras. To annotate it, `y` becomes the dict `annotate(labels, masks)` =
`{"y": labels, "annotation_mask": masks}`: the masks travel wherever `y`
travels (NumPy arrays, `tf.data`, generators, `validation_data`,
`validation_split`, `tf.distribute`), and `predict`, `export` and every
attribution function, which take `x` only, never see them. The convention is
that of Ross et al. (IJCAI 2017): 1 marks input that must *not* be the reason
for the prediction; an all-zero mask is no annotation (no mask penalty).

Accepted mask shapes, for a batch `x`:
- the shape of `x`;
- for images, the shape of `x` without its channel axis, `(batch, H, W)`, or
  with a channel axis of 1: broadcast over the channels;
- for a model on token ids `(batch, seq_len)`: one value per token, broadcast
  over the embedding axis (the penalty is taken at the Embedding output).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_attreg._validation import require

LABELS = "y"
MASK = "annotation_mask"  # also the argument name in error messages


def annotate(y, annotation_mask) -> dict:
    """Labels with their annotation masks, as `fit` and `evaluate` take them.

    Args:
        y: the labels (class indices or one-hot), as given to `fit`.
        annotation_mask: one mask per example, 1 on input that must not be
            the reason (see the module docstring for the shapes).

    Returns:
        `{"y": y, "annotation_mask": annotation_mask}`: pass it as `y` (or as
        the label part of a `tf.data` element).

    Example:

    >>> import numpy as np, keras_attreg as kar
    >>> y = kar.annotate(np.zeros(4), np.zeros((4, 28, 28)))
    >>> sorted(y)
    ['annotation_mask', 'y']
    """
    return {LABELS: y, MASK: annotation_mask}


def split_annotations(y):
    """`(labels, mask)` from `y`: a dict made by `annotate`, or plain labels
    (then `mask` is None)."""
    if isinstance(y, dict) and MASK in y:
        if set(y) != {LABELS, MASK}:
            raise ValueError(
                "Invalid value for argument y: an annotated y is the dict "
                f"{{{LABELS!r}: labels, {MASK!r}: masks}} made by "
                f"`kar.annotate`. Received: y with keys {sorted(y)}"
            )
        return y[LABELS], y[MASK]
    return y, None


def _expected_shapes(x_shape, tokens: bool) -> list[tuple]:
    """The mask shapes (batch axis excluded) accepted for inputs of `x_shape`."""
    sample = tuple(x_shape[1:])
    if tokens or len(sample) < 3:
        return [sample]
    return [sample, sample[:-1], (*sample[:-1], 1)]


def check_mask_shape(mask_shape, x_shape, tokens: bool) -> None:
    """Raises a `ValueError` unless `mask_shape` is accepted for `x_shape`
    (unknown dimensions, such as the batch axis in a graph, match anything)."""
    mask_shape = tuple(mask_shape)
    x_shape = tuple(x_shape)

    def same(a, b):
        return len(a) == len(b) and all(
            i is None or j is None or i == j for i, j in zip(a, b, strict=True)
        )

    batch_ok = mask_shape[:1] == () or same(mask_shape[:1], x_shape[:1])
    if batch_ok and any(
        same(mask_shape[1:], shape) for shape in _expected_shapes(x_shape, tokens)
    ):
        return
    accepted = " or ".join(
        str(("batch", *shape)) for shape in _expected_shapes(x_shape, tokens)
    )
    what = "one value per token" if tokens else "one value per input"
    raise ValueError(
        f"Invalid value for argument {MASK}: expected {what}, shape {accepted} "
        f"for x of shape {x_shape}. Received: {MASK} with shape {mask_shape}"
    )


def check_mask_values(mask):
    """`mask` as a float tensor, once it holds only 0 and 1 (a `ValueError`
    on eager values, a run-time assertion in graphs)."""
    mask = tf.convert_to_tensor(mask)
    if mask.dtype == tf.bool:
        return tf.cast(mask, tf.float32)
    if not (mask.dtype.is_floating or mask.dtype.is_integer):
        raise ValueError(
            f"Invalid value for argument {MASK}: expected a numeric or boolean "
            f"mask of 0 and 1. Received: {MASK} of dtype {mask.dtype.name}"
        )
    mask = tf.cast(mask, tf.float32)
    binary = tf.logical_or(tf.equal(mask, 0.0), tf.equal(mask, 1.0))
    return require(
        binary,
        f"Invalid value for argument {MASK}: expected 0 (no constraint) or 1 "
        "(input that must not be the reason) everywhere; NaN, Inf and other "
        "values are refused.",
        MASK,
        mask,
        lambda values: f"values {np.unique(values)[:8]}",
    )


def mask_for(mask, x_shape, tokens: bool, dtype) -> tf.Tensor:
    """The checked mask, of `dtype`, shaped to broadcast against the input of
    the penalty: `x` itself, or e (batch, seq_len, dim) for token ids."""
    mask = check_mask_values(mask)
    check_mask_shape(mask.shape, x_shape, tokens)
    if tokens or (mask.shape.rank == len(x_shape) - 1 and len(x_shape) >= 4):
        mask = mask[..., None]
    return tf.cast(mask, dtype)
