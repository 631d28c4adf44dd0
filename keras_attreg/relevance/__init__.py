"""The relevance (LRP) pass: rules per layer type, one composite, BatchNorm folding.

Used by the FBI loss (`keras_attreg.training.fbi`) and by epsilon-LRP
attributions. Works on any functional or Sequential Keras model that is a
linear chain of supported layers.
"""

from keras_attreg.relevance.canonizers import batch_norm_fold, fold_batch_norm
from keras_attreg.relevance.composites import Composite, epsilon_composite
from keras_attreg.relevance.propagation import (
    DEFAULT_EPSILON,
    LAYERS_IN_K,
    Relevance,
    layer_chain,
    relevance_map,
    relevance_pass,
)
from keras_attreg.relevance.rules import (
    EpsilonRule,
    GradientRule,
    IdentityRule,
    Propagation,
    Rule,
)

__all__ = [
    "DEFAULT_EPSILON",
    "LAYERS_IN_K",
    "Composite",
    "EpsilonRule",
    "GradientRule",
    "IdentityRule",
    "Propagation",
    "Relevance",
    "Rule",
    "batch_norm_fold",
    "epsilon_composite",
    "fold_batch_norm",
    "layer_chain",
    "relevance_map",
    "relevance_pass",
]
