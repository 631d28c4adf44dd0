"""Canonizer: BatchNormalization folded into the affine layer before it.

Where a BatchNormalization reads the output of a convolution or Dense layer
without activation (and nothing else reads that output), the relevance pass
sees one affine map: `BN(W a + b)` is rewritten as `W' a + b'` with
`W' = W * scale`, `b' = b * scale + shift`. The model itself is not changed:
the forward pass still calls the BatchNormalization layer (so its moving
statistics update in training), and the epsilon rule of the layer before it
divides by the BatchNormalization's output and scales its map by `scale`.
Elsewhere (DenseNet's BN-ReLU-Conv order) a BatchNormalization is its own
affine epsilon layer. LayerNormalization gets the same diagonal form with its
per-sample statistics held constant.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
    if training and getattr(batch_norm, "renorm", False):
        raise ValueError(
            f"BatchNormalization layer {batch_norm.name!r} uses batch "
            "renormalisation, whose training-mode affine form the relevance pass "
            "does not model. Received: renorm=True"
        )
    rank = inputs.shape.rank
    axis = batch_norm.axis % rank
    shape = [1] * rank
    shape[axis] = inputs.shape[axis]
    # Statistics in float32 at least (as Keras computes them under mixed
    # precision: a float16 variance overflows), the result in x's dtype.
    dtype = tf.float64 if inputs.dtype == tf.float64 else tf.float32
    if training and batch_norm.trainable:
        mean, variance = tf.nn.moments(
            tf.cast(inputs, dtype), axes=[i for i in range(rank) if i != axis]
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
    return (
        tf.cast(tf.reshape(scale, shape), inputs.dtype),
        tf.cast(tf.reshape(shift, shape), inputs.dtype),
    )


def layer_norm_scale(layer_norm, inputs: tf.Tensor) -> tf.Tensor:
    """The per-sample scale of a LayerNormalization, statistics held constant.

        LN(a) = scale * a + shift,  scale = gamma / sqrt(var(a) + eps_ln)

    (`rms_scaling`: gamma / sqrt(mean(a^2) + eps_ln)).

    Example:

    >>> ln = keras.layers.LayerNormalization()
    >>> ln.build((None, 3))
    >>> scale = layer_norm_scale(ln, tf.constant([[1.0, 2.0, 3.0]]))
    >>> [round(float(v), 3) for v in scale[0]]
    [1.224, 1.224, 1.224]
    """
    rank = inputs.shape.rank
    axes = [a % rank for a in tf.nest.flatten(layer_norm.axis)]
    wide = tf.cast(inputs, tf.float64 if inputs.dtype == tf.float64 else tf.float32)
    if getattr(layer_norm, "rms_scaling", False):
        variance = tf.reduce_mean(tf.square(wide), axis=axes, keepdims=True)
    else:
        variance = tf.nn.moments(wide, axes=axes, keepdims=True)[1]
    scale = tf.cast(tf.math.rsqrt(variance + layer_norm.epsilon), inputs.dtype)
    if layer_norm.scale or getattr(layer_norm, "rms_scaling", False):
        shape = [1] * rank
        for axis in axes:
            shape[axis] = inputs.shape[axis]
        scale = scale * tf.reshape(tf.cast(layer_norm.gamma, inputs.dtype), shape)
    return scale


KERNEL_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
"""The affine layers with a kernel: the K layers of the FBI loss, and those a
following BatchNormalization is folded into."""


def can_fold(layer, batch_norm) -> bool:
    """Whether `batch_norm`, reading the output of `layer` (and nothing else
    reading it), is folded into `layer`: an affine layer without activation
    and a BatchNormalization without batch renormalisation."""
    return (
        isinstance(batch_norm, keras.layers.BatchNormalization)
        and not getattr(batch_norm, "renorm", False)
        and isinstance(layer, KERNEL_LAYERS)
        and layer.activation is keras.activations.linear
    )
