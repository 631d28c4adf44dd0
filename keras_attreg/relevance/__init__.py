"""The relevance (LRP) pass: rules per layer type, one composite, BatchNorm folding.

Used by the FBI loss (`keras_attreg.training.fbi`) and by the epsilon-LRP and
DeepLIFT attributions. Walks any functional, Sequential or subclassed Keras model
(residual and dense connections, nested models, custom layers that compose
known layers); a layer type of your own gets a rule with `register_rule`.
"""

from keras_attreg.relevance.attention import AttentionRule
from keras_attreg.relevance.canonizers import batch_norm_fold, layer_norm_scale
from keras_attreg.relevance.composites import (
    Composite,
    RuleRegistration,
    epsilon_composite,
    register_rule,
)
from keras_attreg.relevance.preprocessing import PreprocessingRule
from keras_attreg.relevance.propagation import (
    DEFAULT_EPSILON,
    LAYERS_IN_K,
    POOLING_LAYERS,
    START_SCORES,
    Relevance,
    deeplift_pass,
    relevance_map,
    relevance_pass,
)
from keras_attreg.relevance.recurrent import RecurrentRule
from keras_attreg.relevance.rules import (
    BatchNormRule,
    EpsilonRule,
    GateRule,
    GradientRule,
    IdentityRule,
    LayerNormRule,
    Propagation,
    Rule,
    StopRule,
)

__all__ = [
    "DEFAULT_EPSILON",
    "LAYERS_IN_K",
    "POOLING_LAYERS",
    "START_SCORES",
    "AttentionRule",
    "BatchNormRule",
    "Composite",
    "EpsilonRule",
    "GateRule",
    "GradientRule",
    "IdentityRule",
    "LayerNormRule",
    "PreprocessingRule",
    "Propagation",
    "RecurrentRule",
    "Relevance",
    "Rule",
    "RuleRegistration",
    "StopRule",
    "batch_norm_fold",
    "deeplift_pass",
    "epsilon_composite",
    "layer_norm_scale",
    "register_rule",
    "relevance_map",
    "relevance_pass",
]
