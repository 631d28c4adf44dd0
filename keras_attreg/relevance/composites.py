"""Composite: the one registry mapping layer types to LRP rules."""

from __future__ import annotations

import keras

from keras_attreg.relevance.rules import (
    EpsilonRule,
    GradientRule,
    IdentityRule,
    Rule,
)


class Composite:
    """Maps layer types to rules; the first matching type wins.

    Args:
        rules: `{layer_type: rule}`, matched with `isinstance` in order.

    Example:

    >>> composite = epsilon_composite(1e-2)
    >>> type(composite.rule_for(keras.layers.Flatten())).__name__
    'GradientRule'
    """

    def __init__(self, rules: dict[type, Rule]):
        self.rules = dict(rules)

    def rule_for(self, layer) -> Rule:
        """The rule of `layer`.

        Raises:
            ValueError: naming the layer and its type when no rule applies.
        """
        for layer_type, rule in self.rules.items():
            if isinstance(layer, layer_type):
                return rule
        supported = ", ".join(sorted({t.__name__ for t in self.rules}))
        raise ValueError(
            f"The relevance pass has no rule for layer {layer.name!r} of type "
            f"{type(layer).__name__}. Supported layer types: {supported}, "
            "BatchNormalization (folded into the Conv2D/Dense before it)."
        )


def epsilon_composite(epsilon: float) -> Composite:
    """The composite of epsilon-LRP and of the FBI loss.

    - `EpsilonRule(epsilon)`: Conv2D, Dense (with their folded
      BatchNormalization), AveragePooling2D, GlobalAveragePooling2D: the
      affine layers.
    - `GradientRule`: MaxPooling2D (winner takes all), Flatten, Reshape.
    - `IdentityRule`: ReLU, Activation, Dropout.
    """
    affine = EpsilonRule(epsilon)
    routed = GradientRule()
    passed = IdentityRule()
    return Composite(
        {
            keras.layers.Conv2D: affine,
            keras.layers.Dense: affine,
            keras.layers.AveragePooling2D: affine,
            keras.layers.GlobalAveragePooling2D: affine,
            keras.layers.MaxPooling2D: routed,
            keras.layers.Flatten: routed,
            keras.layers.Reshape: routed,
            keras.layers.ReLU: passed,
            keras.layers.Activation: passed,
            keras.layers.Dropout: passed,
        }
    )
