"""Composite: the one registry mapping layer and operation types to LRP rules."""

from __future__ import annotations

import keras

from keras_attreg._keras.graph import applications_layer_types, operation_types
from keras_attreg.relevance.attention import AttentionRule
from keras_attreg.relevance.canonizers import KERNEL_LAYERS
from keras_attreg.relevance.preprocessing import (
    PREPROCESSING_LAYERS,
    REFUSED_LAYERS,
    TOKEN_PREPROCESSING_LAYERS,
    PreprocessingRule,
)
from keras_attreg.relevance.recurrent import RECURRENT_LAYERS, RecurrentRule
from keras_attreg.relevance.rules import (
    BatchNormRule,
    EpsilonRule,
    GateRule,
    GradientRule,
    IdentityRule,
    LayerNormRule,
    Rule,
    StopRule,
)

L = keras.layers

_USER_RULES: list[tuple[type, Rule]] = []


class Composite:
    """Maps layer types to rules; the first matching type wins.

    Rules registered with `register_rule` come first, then the composite's own.

    Args:
        rules: `[(layer_type, rule), ...]`, matched with `isinstance` in order.

    Example:

    >>> composite = epsilon_composite(1e-2)
    >>> type(composite.rule_for(keras.layers.Flatten())).__name__
    'GradientRule'
    """

    def __init__(self, rules: list[tuple[type | tuple, Rule]]):
        self.rules = list(rules)

    def find(self, operation) -> Rule | None:
        """The rule of `operation`, or None when no rule applies."""
        for layer_type, rule in [*_USER_RULES, *self.rules]:
            if isinstance(operation, layer_type):
                return rule
        return None

    def enters(self, operation) -> bool:
        """Whether the pass enters `operation` through its traced call (a
        custom layer or subclassed model composed of layers with rules): true
        when no rule applies to it."""
        return self.find(operation) is None

    def rule_for(self, operation) -> Rule:
        """The rule of `operation`.

        Raises:
            ValueError: naming the layer, its type and how to add a rule when
                no rule applies.
        """
        rule = self.find(operation)
        if rule is not None:
            return rule
        raise ValueError(
            "The relevance pass has no rule for layer "
            f"{getattr(operation, 'name', operation)!r} of type "
            f"{type(operation).__name__}. Give it one with "
            "`keras_attreg.relevance.register_rule("
            f"{type(operation).__name__}, rule)`, e.g. `IdentityRule()` for an "
            "elementwise activation, `EpsilonRule(epsilon)` for an affine map, "
            "`GradientRule()` for a reshape (see docs/relevance.md)."
        )


class RuleRegistration:
    """A rule given by `register_rule`: in force until `remove()` or, used as a
    context manager, until the `with` block ends (as zennit's composites).

    Example:

    >>> class CumSum(keras.layers.Layer):
    ...     def call(self, x):
    ...         return tf.math.cumsum(x, axis=-1)
    >>> model = keras.Sequential([keras.Input((3,)), CumSum(), keras.layers.Dense(2)])
    >>> from keras_attreg.relevance import relevance_map
    >>> with register_rule(CumSum, EpsilonRule(1e-2)):
    ...     relevance_map(model, tf.ones((1, 3)), [0]).shape
    TensorShape([1, 3])
    >>> relevance_map(model, tf.ones((1, 3)), [0])
    Traceback (most recent call last):
    ...
    ValueError: The relevance pass has no rule for layer 'cum_sum' ...
    """

    def __init__(self, layer_type: type, rule: Rule):
        self.entry = (layer_type, rule)
        _USER_RULES.insert(0, self.entry)

    def remove(self) -> None:
        """Withdraws the rule (the composites' own, or an earlier registered
        one, apply again); a second call does nothing."""
        if any(entry is self.entry for entry in _USER_RULES):
            _USER_RULES.remove(self.entry)

    def __enter__(self) -> RuleRegistration:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def register_rule(layer_type: type, rule: Rule) -> RuleRegistration:
    """Gives every relevance pass a rule for `layer_type` (yours win).

    The rule stays in force for the session; use the returned registration as
    a context manager (`with register_rule(...):`) to scope it, or call its
    `remove()`.

    Args:
        layer_type: a Keras layer (or operation) class.
        rule: a `Rule` instance, e.g. `IdentityRule()`.

    Returns:
        A `RuleRegistration`.

    Example:

    >>> class Reverse(keras.layers.Layer):
    ...     def call(self, x):
    ...         return tf.reverse(x, axis=[-1])
    >>> model = keras.Sequential([keras.Input((3,)), Reverse(), keras.layers.Dense(2)])
    >>> from keras_attreg.relevance import relevance_map
    >>> with register_rule(Reverse, GradientRule()):
    ...     relevance_map(model, tf.ones((1, 3)), [0]).shape
    TensorShape([1, 3])
    """
    if not (isinstance(layer_type, type) and isinstance(rule, Rule)):
        raise ValueError(
            "Invalid arguments for register_rule: expected a class and a "
            f"`Rule` instance. Received: layer_type={layer_type!r}, rule={rule!r}"
        )
    return RuleRegistration(layer_type, rule)


def epsilon_composite(epsilon: float) -> Composite:
    """The composite of epsilon-LRP, DeepLIFT and the FBI loss.

    - `EpsilonRule(epsilon)`: Dense, convolutions of every kind (Conv1D/2D/3D,
      transposed, depthwise, separable), average pooling (global too),
      Add/Subtract/Average, ConvNeXt's LayerScale,
      arithmetic with constants, `keras.ops.sum` and `mean` over axes.
    - `BatchNormRule`: BatchNormalization not folded (statistics constant).
    - `LayerNormRule` / `AttentionRule`: CP-LRP (Ali et al. 2022),
      LayerNormalization with its standard deviation constant,
      MultiHeadAttention with its probabilities constant.
    - `PreprocessingRule`: Rescaling, Normalization and the image
      preprocessing and augmentation layers (random flips, rotations, zooms,
      crops, contrast...): the z rule through the map drawn in the forward
      call; the non-affine ones refused.
    - `GradientRule`: max pooling (winner takes all), Flatten, Reshape,
      Permute, padding, cropping, Concatenate, up-sampling, slices.
    - `IdentityRule`: elementwise activations (as layers or operations),
      Dropout and noise layers, Masking, ConvNeXt's StochasticDepth.
    - `GateRule`: elementwise products (the sigmoid-type gate, or a mask
      cast to floats, gets nothing).
    - `StopRule`: the Embedding of token ids, token preprocessing (lookups,
      hashing, discretisation) and comparisons (masks): relevance stops there.
    - `RecurrentRule`: SimpleRNN, LSTM, GRU and Bidirectional (Arras et al.
      2017: gates get no relevance).
    """
    ops = operation_types()
    apps = applications_layer_types()
    affine = EpsilonRule(epsilon)
    routed = GradientRule()
    passed = IdentityRule()
    return Composite(
        [
            (
                (
                    *KERNEL_LAYERS,
                    L.AveragePooling1D,
                    L.AveragePooling2D,
                    L.AveragePooling3D,
                    L.GlobalAveragePooling1D,
                    L.GlobalAveragePooling2D,
                    L.GlobalAveragePooling3D,
                    L.Add,
                    L.Subtract,
                    L.Average,
                    *apps["scale"],
                    *ops["affine"],
                ),
                affine,
            ),
            (L.BatchNormalization, BatchNormRule(epsilon)),
            (L.LayerNormalization, LayerNormRule(epsilon)),
            (L.MultiHeadAttention, AttentionRule(epsilon)),
            ((*PREPROCESSING_LAYERS, *REFUSED_LAYERS), PreprocessingRule()),
            ((L.Multiply, *ops["product"]), GateRule(epsilon)),
            (
                (
                    L.MaxPooling1D,
                    L.MaxPooling2D,
                    L.MaxPooling3D,
                    L.GlobalMaxPooling1D,
                    L.GlobalMaxPooling2D,
                    L.GlobalMaxPooling3D,
                    L.Flatten,
                    L.Reshape,
                    L.Permute,
                    L.RepeatVector,
                    L.ZeroPadding1D,
                    L.ZeroPadding2D,
                    L.ZeroPadding3D,
                    L.Cropping1D,
                    L.Cropping2D,
                    L.Cropping3D,
                    L.UpSampling1D,
                    L.UpSampling2D,
                    L.UpSampling3D,
                    L.Concatenate,
                    L.Identity,
                    *ops["routing"],
                ),
                routed,
            ),
            (
                (
                    L.ReLU,
                    L.LeakyReLU,
                    L.ELU,
                    L.PReLU,
                    L.Activation,
                    L.Softmax,
                    L.Dropout,
                    L.SpatialDropout1D,
                    L.SpatialDropout2D,
                    L.SpatialDropout3D,
                    L.GaussianNoise,
                    L.GaussianDropout,
                    L.AlphaDropout,
                    L.ActivityRegularization,
                    L.Masking,
                    *apps["identity"],
                    *ops["elementwise"],
                ),
                passed,
            ),
            (
                (L.Embedding, *TOKEN_PREPROCESSING_LAYERS, *ops["comparison"]),
                StopRule(),
            ),
            (RECURRENT_LAYERS, RecurrentRule(epsilon)),
        ]
    )
