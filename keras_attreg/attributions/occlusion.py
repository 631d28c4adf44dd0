"""Occlusion (Zeiler & Fergus 2014): the output drop when a patch is hidden."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._inputs import InputView, model_inputs
from keras_attreg._logits import target_scores, unwrap
from keras_attreg._validation import check_int
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    attribute,
    for_each_chunk,
    reference,
    token_split,
)


def _sizes(name: str, value, spatial: tuple[int, ...]) -> tuple[int, ...]:
    values = (
        tuple(value) if isinstance(value, (tuple, list)) else (value,) * len(spatial)
    )
    if len(values) != len(spatial):
        raise ValueError(
            f"Invalid value for argument {name}: expected an int or {len(spatial)} "
            f"ints. Received: {name}={value!r}"
        )
    sizes = tuple(check_int(name, v, low=1) for v in values)
    if any(s > d for s, d in zip(sizes, spatial, strict=True)):
        raise ValueError(
            f"Invalid value for argument {name}: expected sizes no larger than the "
            f"input's spatial shape {spatial}. Received: {name}={value!r}"
        )
    return sizes


def _patch_masks(x: tf.Tensor, patch_size, stride, tokens: bool) -> tf.Tensor:
    """One 0/1 mask per patch, shaped to broadcast against one sample.

    For token ids `x` is e, (batch, seq_len, dim): patches run over the tokens.
    """
    rank = x.shape.rank
    if tokens:
        spatial = (x.shape[1],)
    elif rank not in (2, 3, 4):
        raise ValueError(
            "Occlusion expects inputs of shape (batch, features), (batch, height, "
            f"width) or (batch, height, width, channels). Received: x with shape "
            f"{x.shape}"
        )
    else:
        spatial = tuple(x.shape[1:3]) if rank >= 3 else (x.shape[1],)
    patch = _sizes("patch_size", patch_size, spatial)
    step = patch if stride is None else _sizes("stride", stride, spatial)
    corners = itertools.product(
        *(range(0, d - p + 1, s) for d, p, s in zip(spatial, patch, step, strict=True))
    )
    masks = []
    for corner in corners:
        mask = np.zeros(spatial, dtype=x.dtype.as_numpy_dtype)
        mask[tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))] = 1
        masks.append(mask)
    masks = np.stack(masks)
    return tf.constant(masks[..., None] if rank == 4 or tokens else masks)


def _occlusion_kernel(split, x, targets, baseline, masks, *, chunk: int):
    num_patches = tf.shape(masks)[0]
    scores = target_scores(split.logits(x), targets)
    removal = split.fix_padding(x - baseline)

    def measure(drops, indices):
        sample = indices // num_patches
        mask = tf.gather(masks, indices % num_patches)
        occluded = tf.gather(x, sample) - mask * tf.gather(removal, sample)
        hidden = target_scores(
            split.rows(sample).logits(occluded), tf.gather(targets, sample)
        )
        return tf.tensor_scatter_nd_update(
            drops, indices[:, None], tf.gather(scores, sample) - hidden
        )

    batch = tf.shape(x)[0]
    drops = for_each_chunk(
        batch * num_patches, chunk, measure, tf.zeros([batch * num_patches], x.dtype)
    )
    total = tf.tensordot(tf.reshape(drops, [batch, num_patches]), masks, axes=1)
    coverage = tf.reduce_sum(masks, axis=0)
    return tf.broadcast_to(tf.math.divide_no_nan(total, coverage), tf.shape(x))


def _inputs_occlusion_kernel(split, x, targets, baselines, masks, *, chunk: int):
    """Occlusion of each input of a model with several inputs in turn, the
    others held at the sample's own values: one map per input, in x's
    structure."""
    inputs = model_inputs(split.model)
    maps = [
        _occlusion_kernel(view, view.value, targets, baseline, mask, chunk=chunk)
        for view, baseline, mask in zip(
            (InputView(split, inputs, x, name) for name in inputs.names),
            tf.nest.flatten(baselines),
            tf.nest.flatten(masks),
            strict=True,
        )
    ]
    return tf.nest.pack_sequence_as(x, maps)


def _inputs_patch_masks(inputs, x, patch_size, stride) -> list:
    """The patch masks of each input of a model with several inputs (in x's
    structure): `patch_size` and `stride` one value for all or a dict of one
    per input; the default patch is 4 on inputs with spatial axes, 1 (each
    feature alone) on feature vectors."""

    def of(value, name):
        return value.get(name) if isinstance(value, dict) else value

    for argument, value in (("patch_size", patch_size), ("stride", stride)):
        if isinstance(value, dict) and not set(value) <= set(inputs.names):
            raise ValueError(
                f"Invalid value for argument {argument}: expected a dict keyed by "
                f"input names (of {inputs.names}). Received: {argument}={value!r}"
            )
    masks = []
    for tensor, name in zip(tf.nest.flatten(x), inputs.names, strict=True):
        size = of(patch_size, name)
        if size is None:
            size = 4 if tensor.shape.rank >= 3 else 1
        masks.append(_patch_masks(tensor, size, of(stride, name), tokens=False))
    return tf.nest.pack_sequence_as(x, masks)


def occlusion(
    model: keras.Model,
    x,
    targets=None,
    patch_size=None,
    stride=None,
    baseline=0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
) -> tf.Tensor:
    """Occlusion: mean drop of S_c over the patches covering each pixel.

        R_i = 1/|P_i| * sum_{p in P_i} (S_c(x) - S_c(x with patch p set to b))

    where P_i are the patches (all channels together) that contain pixel i.
    Patches start at 0 and move by `stride`; pixels that no patch covers (when
    the stride does not tile the input) get 0. For token ids the patches are
    runs of tokens whose embedding vectors e_t are set to b, and R_t is the
    mean drop of the runs covering token t (0 at padding).

    Args:
        model, x, targets, embedding_layer: as `saliency`; `x` of shape
            (batch, features), (batch, height, width), (batch, height, width,
            channels) or token ids (batch, seq_len); for several inputs, a
            list or dict of them, each occluded in turn, the others held.
        patch_size: patch side (int) or sizes per spatial axis; default 4
            (pixels), 1 (token) for token ids; for several inputs, one value
            for all or a dict of one per input (default: 4 on inputs with
            spatial axes, 1 on feature vectors).
        stride: step between patches; defaults to `patch_size` (for several
            inputs, one value for all or a dict).
        baseline: b, a scalar or an array of one sample's shape (0: the zero
            embedding for token ids).
        batch_size: the largest number of occluded inputs per model call.
        baseline_token: for token ids, a token id whose embedding is b.

    Returns:
        A tensor of the shape of `x` (several inputs: one per input, in the
        structure of `x`).

    Example:
        >>> maps = occlusion(model, x_test[:8], y_test[:8], patch_size=4)
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    inputs = model_inputs(unwrap(model))
    if inputs is not None:
        inputs.require_float("occlusion")
        return attribute(
            model,
            x,
            targets,
            _inputs_occlusion_kernel,
            batch_size,
            tensors=lambda x_batch: (
                reference(model, baseline, baseline_token, x_batch),
                _inputs_patch_masks(inputs, x_batch, patch_size, stride),
            ),
            chunk=batch_size,
        )
    tokens = token_split(model, embedding_layer) is not None
    if patch_size is None:
        patch_size = 1 if tokens else 4
    return attribute(
        model,
        x,
        targets,
        _occlusion_kernel,
        batch_size,
        tensors=lambda x_batch: (
            reference(model, baseline, baseline_token, x_batch, embedding_layer),
            _patch_masks(x_batch, patch_size, stride, tokens),
        ),
        embedding_layer=embedding_layer,
        per_token="mean",
        chunk=batch_size,
    )
