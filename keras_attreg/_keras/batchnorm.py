"""BatchNormalization batch statistics that stay exact under double backprop.

Keras's BatchNormalization (TensorFlow backend) takes its batch statistics
from `tf.nn.moments`, which computes the variance as
`mean((x - stop_gradient(mean(x)))**2)`. The stopped term is exact for first
derivatives (its gradient carries a factor sum(x - mean) = 0) but not for
second ones: differentiating the input gradient dS/dx of a model with a
BatchNormalization in training mode once more, as the L1 gradient penalty's
weight gradient does, misses a term of order 1/batch (measured up to 1e-3
relative on a small CNN in float64; finite differences side with the
statistics computed here).

`exact_batch_statistics(model)` makes the BatchNormalization layers of
`model` compute `mean((x - mean(x))**2)` with the gradient through the mean
kept, for the layer calls made while it is active (the trace of a step).
Forward values are unchanged bit for bit; first derivatives agree to rounding
(the kept term is sum(x - mean) = 0 up to rounding). Layers with a mask or
with `synchronized=True` (whose statistics keep every gradient already) are
left as they are.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import tensorflow as tf


def _exact_moments(layer, original, inputs, mask):
    """`BatchNormalization._moments` with the gradient through the mean kept."""
    if mask is not None or layer.synchronized:
        return original(inputs, mask)
    axes = layer._reduction_axes
    mean = tf.reduce_mean(inputs, axes, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(inputs, mean), axes)
    return tf.squeeze(mean, axes), variance


@contextlib.contextmanager
def exact_batch_statistics(model: keras.Model):
    """Within the block, `model`'s BatchNormalization layers (nested models
    included) compute batch statistics whose second derivatives are exact."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        original = layer._moments
        object.__setattr__(
            layer, "_moments", functools.partial(_exact_moments, layer, original)
        )
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "_moments")
