"""LRP rules: how relevance crosses one layer (one small object per rule).

A rule runs the layer forward and returns, with the layer's output, a
`backward` function mapping the relevance of the output to the relevance of
the input. Every rule keeps the map differentiable with respect to the
weights: it is built from the layer's own vector-Jacobian product, recorded by
a per-layer `tf.GradientTape`, so an outer tape can differentiate through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from keras_attreg._logits import call_layer, linear_call
from keras_attreg.relevance.canonizers import batch_norm_fold


@dataclasses.dataclass(frozen=True)
class Propagation:
    """One layer of the relevance pass, as run forward.

    Attributes:
        outputs: the layer's output a+_i (what the next layer receives).
        pre_activation: z_i, the output before the layer's own activation
            (equal to `outputs` for layers without one); the logit when the
            last layer carries the softmax.
        backward: maps the relevance of the output to that of the input.
    """

    outputs: tf.Tensor
    pre_activation: tf.Tensor
    backward: Callable[[tf.Tensor], tf.Tensor]


class Rule:
    """Base class of the rules: one `forward` per layer call."""

    def forward(
        self, layer, inputs: tf.Tensor, training: bool, batch_norm=None
    ) -> Propagation:
        """Runs `layer` on `inputs` (a+_{i-1}) and prepares its backward map.

        Args:
            layer: the Keras layer.
            inputs: its input batch.
            training: forwarded to the layer.
            batch_norm: the BatchNormalization folded into `layer`, if any
                (called after it in the forward pass).

        Returns:
            A `Propagation`.
        """
        raise NotImplementedError


def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """z + eps * sign(z), with sign(0) = +1 (never zero for eps > 0)."""
    return z + epsilon * (2 * tf.cast(z >= 0, z.dtype) - 1)


class EpsilonRule(Rule):
    """The z / epsilon rule of Bach et al. (2015), Eq. 2 of Yoo et al. (2019).

        R_{i-1} = a_{i-1} * J_i^T (R_i / (z_i + eps * sign(z_i)))

    `J_i` is the Jacobian of the layer's affine map `z_i = W_i a_{i-1} + b_i`
    (`J_i^T s = W_i^T s` for Dense; the transposed convolution for Conv2D;
    the spreading of an average for pooling). The relevance of the output is
    that of `z_i`: the layer's activation (ReLU) passes it unchanged, and a
    unit with a_i = 0 receives none from above. A BatchNormalization folded
    into the layer scales the map: `W' = W * gamma / sqrt(var + eps_bn)`.

    Without biases and with eps -> 0, sum(R_{i-1}) = sum(R_i); in general
    sum(R_{i-1}) = sum_k R_k (z_k - b_k) / (z_k + eps * sign(z_k)).

    Args:
        epsilon: the stabiliser eps >= 0 (with eps = 0, a zero z_k passes no
            relevance instead of dividing by zero).
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, layer, inputs, training, batch_norm=None):
        activation = getattr(layer, "activation", None)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(inputs)
            if activation is None:
                affine = call_layer(layer, inputs, training)
            else:
                affine = linear_call(layer, inputs, training)
        z, scale = affine, None
        if batch_norm is not None:
            scale = batch_norm_fold(batch_norm, affine, training)[0]
            z = call_layer(batch_norm, affine, training)
        outputs = z if activation is None else activation(z)

        def backward(relevance):
            if self.epsilon > 0:
                ratio = relevance * tf.math.reciprocal(stabilize(z, self.epsilon))
            else:
                ratio = tf.math.divide_no_nan(relevance, z)
            if scale is not None:
                ratio = ratio * scale
            return inputs * tape.gradient(affine, inputs, output_gradients=ratio)

        return Propagation(outputs, z, backward)


class GradientRule(Rule):
    """R_{i-1} = J_i^T R_i: relevance routed along the layer's own gradient.

    For MaxPooling this is winner-takes-all (each output's relevance goes to
    the input that won the max); for Flatten/Reshape it is the reshape back.
    Both conserve relevance exactly.
    """

    def forward(self, layer, inputs, training, batch_norm=None):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(inputs)
            outputs = call_layer(layer, inputs, training)

        def backward(relevance):
            return tape.gradient(outputs, inputs, output_gradients=relevance)

        return Propagation(outputs, outputs, backward)


class IdentityRule(Rule):
    """R_{i-1} = R_i: elementwise activations and Dropout pass relevance on.

    This is the LRP convention for activations: the relevance of a unit is
    assigned by the affine layer below it, the nonlinearity only gates it (a
    unit switched off by ReLU or dropped by Dropout has a_i = 0 and so already
    holds no relevance).
    """

    def forward(self, layer, inputs, training, batch_norm=None):
        outputs = call_layer(layer, inputs, training)
        return Propagation(outputs, outputs, lambda relevance: relevance)
