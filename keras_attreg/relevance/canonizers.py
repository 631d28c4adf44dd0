"""Canonizer: BatchNormalization folded into the preceding Conv2D / Dense.

The relevance pass must see one affine map per weighted layer, never a
BatchNormalization on its own: `BN(W a + b)` is rewritten as `W' a + b'` with
`W' = W * scale`, `b' = b * scale + shift`. The model itself is not changed:
the forward pass still calls the BatchNormalization layer (so its moving
statistics update in training), and the rule scales its map by `scale`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

FOLDABLE = (keras.layers.Conv2D, keras.layers.Dense)


def batch_norm_fold(
    batch_norm: keras.layers.BatchNormalization, inputs: tf.Tensor, training: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """The affine form of a BatchNormalization: `BN(y) = scale * y + shift`.

        scale = gamma / sqrt(var + eps_bn),   shift = beta - mean * scale

    Args:
        batch_norm: a built `BatchNormalization` layer.
        inputs: its input `y` (used for the batch statistics).
        training: as passed to the layer. The batch mean and variance of
            `inputs` are used when `training` and the layer is trainable (the
            statistics the forward pass normalises with), the moving ones
            otherwise, as Keras does.

    Returns:
        `(scale, shift)`, each broadcastable against `inputs`.

    Example:

    >>> bn = keras.layers.BatchNormalization()
    >>> bn.build((None, 3))
    >>> scale, shift = batch_norm_fold(bn, tf.ones((2, 3)), training=False)
    >>> scale.shape
    TensorShape([1, 3])
    """
    rank = inputs.shape.rank
    axis = batch_norm.axis % rank
    shape = [1] * rank
    shape[axis] = inputs.shape[axis]
    dtype = inputs.dtype
    if training and batch_norm.trainable:
        mean, variance = tf.nn.moments(
            inputs, axes=[i for i in range(rank) if i != axis]
        )
    else:
        mean = tf.cast(batch_norm.moving_mean, dtype)
        variance = tf.cast(batch_norm.moving_variance, dtype)
    scale = tf.math.rsqrt(variance + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * tf.cast(batch_norm.gamma, dtype)
    shift = -mean * scale
    if batch_norm.center:
        shift = shift + tf.cast(batch_norm.beta, dtype)
    return tf.reshape(scale, shape), tf.reshape(shift, shape)


def fold_batch_norm(layers: list) -> list[tuple]:
    """Pairs each layer with the BatchNormalization folded into it.

    Args:
        layers: the model's layers, input to output.

    Returns:
        A list of `(layer, batch_norm or None)`, BatchNormalization layers
        removed from the chain.

    Raises:
        ValueError: a BatchNormalization that does not directly follow a
            Conv2D or Dense without activation (nothing affine to fold into),
            or that uses batch renormalisation.
    """
    folded = []
    for layer in layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            folded.append((layer, None))
            continue
        previous, taken = folded[-1] if folded else (None, None)
        if (
            not isinstance(previous, FOLDABLE)
            or taken is not None
            or previous.activation is not keras.activations.linear
            or layer.renorm
        ):
            after = (
                f"after {previous.name!r} ({type(previous).__name__})"
                if previous is not None
                else "at the input"
            )
            raise ValueError(
                f"Cannot fold BatchNormalization layer {layer.name!r} {after}: "
                "the relevance pass folds a BatchNormalization (without renorm) "
                "into the Conv2D or Dense layer right before it, which must have "
                "no activation. Put the activation after the BatchNormalization."
            )
        folded[-1] = (previous, layer)
    return folded
