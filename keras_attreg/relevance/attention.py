"""CP-LRP through attention: the rule of Ali et al. (ICML 2022).

Ali, Schnake, Eberle, Montavon, Müller and Wolf, "XAI for Transformers: Better
Explanations through Conservative Propagation": in the backward relevance pass
the attention probabilities p = softmax(Q K^T / sqrt(d)) are constants. The
head output p V is then linear in the value, and the whole layer,

    z = W_o (p (W_v v + b_v)) + b_o,

is an affine map of the value input `v`, crossed by the epsilon rule
R_v = v * J_v^T (R_z / (z + eps * sign(z))) with J_v the layer's own Jacobian
under frozen p. Query and key receive no relevance (they only enter through
p). LayerNormalization is treated alike by `LayerNormRule` (its standard
deviation held constant).

For a ReLU network and eps -> 0 the map equals gradient x input of the same
network with `stop_gradient` on p and on LayerNorm's standard deviation, and it
conserves relevance when the network has no biases.
"""

from __future__ import annotations

import tensorflow as tf

from keras_attreg._keras.attention import replaced_probabilities
from keras_attreg._keras.graph import copy_with_mask
from keras_attreg.relevance.rules import AffinePropagation, Rule, watch_floats


class AttentionRule(Rule):
    """CP-LRP for `keras.layers.MultiHeadAttention`: probabilities constant,
    the epsilon rule on the value path (self- and cross-attention, masks,
    any heads, dimensions and `attention_axes`).

    DeepLIFT's multiplier through the layer is the same linearisation,
    J_v^T m with p fixed at the input's probabilities: summation-to-delta holds
    exactly only where the input and the reference share their attention
    probabilities.

    Args:
        epsilon: the stabiliser eps >= 0 of the epsilon rule.

    Example:

    >>> x = keras.Input((4, 8))
    >>> y = keras.layers.MultiHeadAttention(2, 4)(x, x)
    >>> y = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(y))
    >>> model = keras.Model(x, y)
    >>> from keras_attreg.relevance import relevance_map
    >>> relevance_map(model, tf.ones((2, 4, 8)), [0, 1]).shape
    TensorShape([2, 4, 8])
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        layer = call.operation
        settings = {
            "return_attention_scores": call.kwargs.get("return_attention_scores"),
            "use_gate": layer.get_config().get("use_gate"),
        }
        for setting, value in settings.items():
            if value:
                raise ValueError(
                    f"The relevance pass cannot cross layer {layer.name!r} "
                    f"(MultiHeadAttention) with {setting}=True: {_WHY[setting]} "
                    f"Received: {setting}={value}"
                )
        inputs = [copy_with_mask(tensor) for tensor in call.inputs]
        probabilities = []  # computed outside the tape: constants to it, yet
        # differentiable for an outer tape (the FBI loss's weight gradient)
        with replaced_probabilities(layer, lambda p: probabilities.append(p) or p):
            call.run(*inputs)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            watch_floats(tape, inputs)
            with replaced_probabilities(layer, lambda p: probabilities[0]):
                outputs = call.run(*inputs)
        return AffinePropagation(
            outputs, self.epsilon, tape, inputs, outputs, None, layer.name
        )


_WHY = {
    "return_attention_scores": "the scores output has no relevance rule (read "
    "the scores from a second model on the same layers).",
    "use_gate": "the sigmoid gate on the query multiplies the value path and "
    "CP-LRP (Ali et al. 2022) has no rule for it; register a rule of your own "
    "with `keras_attreg.relevance.register_rule`.",
}
