"""Layers made exact and cheaper to differentiate twice, in the regularised step.

An input-gradient penalty's weight gradient differentiates the input gradient
once more (double backpropagation). Two Keras layers are changed for the
trace of the regularised step, by `second_order_layers(model)`; their forward
values and first derivatives stay Keras's own.

BatchNormalization in training mode: Keras takes its batch statistics from
`tf.nn.moments`, which computes the variance as
`mean((x - stop_gradient(mean(x)))**2)`. The stopped term is exact for first
derivatives (its gradient carries a factor sum(x - mean) = 0) but not for
second ones: differentiating the input gradient dS/dx once more misses a term
of order 1/batch (measured up to 1e-3 relative on a small CNN in float64;
finite differences side with the statistics computed here). Since the
variance is quadratic in the mean, the exact variance is Keras's minus
`(mean - stop_gradient(mean))**2`: a term that is 0 in value (so forward
values stay Keras's bit for bit), 0 in first derivative, and carries the
missing second-order term, at the cost of a few per-channel operations.
Layers with a mask or with `synchronized=True` (whose statistics keep every
gradient already) are left as they are.

MaxPooling2D with non-overlapping windows (strides equal to the pool size,
`"valid"` padding, channels last, a window of 2**k elements) in float32,
float64 or bfloat16: the first derivative is TensorFlow's `MaxPoolGrad`, a
linear map of the upstream gradient that sends each window's gradient to one
position of the window. Its own derivative is that map's transpose: take the
window's value at that position. TensorFlow derives it with `MaxPoolGradGrad`,
a kernel that searches every window again; here it is the indicator of the
chosen positions (`MaxPoolGrad` of ones, the same kernel, so ties go where
the first derivative sends them) times the upstream gradient, summed per
window by average pooling times the window size (exact: one non-zero term per
window, a power-of-two size). Measured on this project's CPU machine: the L1
step of a CNN with two such layers from 2.31x to 2.23x a plain step, FBI's
from 2.18x to 2.07x (benchmarks/README.md). float16 keeps TensorFlow's kernel
(dividing by the window size could round in its small normal range).
"""

from __future__ import annotations

import contextlib
import functools

import keras
import tensorflow as tf


def _exact_moments(layer, original, inputs, mask):
    """`BatchNormalization._moments` with the gradient through the mean kept."""
    mean, variance = original(inputs, mask)
    if mask is not None or layer.synchronized:
        return mean, variance
    return mean, variance - tf.square(mean - tf.stop_gradient(mean))


_WINDOW_DTYPES = (tf.float32, tf.float64, tf.bfloat16)


def _cheap_second_order(layer, inputs) -> bool:
    """Whether `layer`'s max pooling on `inputs` takes the mask-based second
    derivative (non-overlapping power-of-two windows, see the module)."""
    area = layer.pool_size[0] * layer.pool_size[1]
    return (
        tuple(layer.strides) == tuple(layer.pool_size)
        and layer.padding == "valid"
        and layer.data_format == "channels_last"
        and tf.as_dtype(inputs.dtype) in _WINDOW_DTYPES
        and area & (area - 1) == 0
    )


def _max_pool_2d(inputs, pool_size):
    """2D max pooling whose first derivative is TensorFlow's and whose second
    is the mask-based transpose of the first (see the module)."""
    window = [1, *pool_size, 1]
    area = pool_size[0] * pool_size[1]

    def first(x, y, upstream):
        return tf.raw_ops.MaxPoolGrad(
            orig_input=x,
            orig_output=y,
            grad=upstream,
            ksize=window,
            strides=window,
            padding="VALID",
        )

    @tf.custom_gradient
    def pool(x):
        y = tf.nn.max_pool2d(x, pool_size, pool_size, "VALID")

        @tf.custom_gradient
        def backward(upstream):
            def transpose(gradient):
                chosen = first(x, y, tf.ones_like(y))
                summed = tf.nn.avg_pool2d(
                    chosen * gradient, pool_size, pool_size, "VALID"
                )
                return summed * tf.constant(area, summed.dtype)

            return first(x, y, upstream), transpose

        return y, backward

    return pool(inputs)


def _max_pooling_call(layer, original, inputs):
    if not _cheap_second_order(layer, inputs):
        return original(inputs)
    return _max_pool_2d(inputs, tuple(layer.pool_size))


@contextlib.contextmanager
def second_order_layers(model: keras.Model):
    """Within the block, `model`'s BatchNormalization and MaxPooling2D layers
    (nested models included) differentiate twice exactly and cheaply (see the
    module); outside it they are Keras's own again."""
    patches = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            patches.append((layer, "_moments", _exact_moments))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            patches.append((layer, "call", _max_pooling_call))
    for layer, name, replacement in patches:
        original = getattr(layer, name)
        object.__setattr__(layer, name, functools.partial(replacement, layer, original))
    try:
        yield
    finally:
        for layer, name, _ in patches:
            object.__delattr__(layer, name)
