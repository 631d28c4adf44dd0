"""keras-attreg: attribution-regularised training and faithful attribution evaluation.

One import gives the public API::

    import keras_attreg as kar
"""

from keras_attreg import (
    analysis,
    attributions,
    callbacks,
    datasets,
    evaluation,
    plotting,
    relevance,
    training,
)
from keras_attreg.callbacks import DelayedActivation
from keras_attreg.serving import export_with_explanations
from keras_attreg.training import (
    AttributionRegularizedModel,
    AttributionRegularizer,
    ExpectedGradientsPenalty,
    FBILoss,
    L1GradientPenalty,
    MaskedGradientPenalty,
    MaskedRegularizer,
    MaskedRelevancePenalty,
    RRRPenalty,
    annotate,
)

__version__ = "0.1.0"

__all__ = [
    "AttributionRegularizedModel",
    "AttributionRegularizer",
    "DelayedActivation",
    "ExpectedGradientsPenalty",
    "FBILoss",
    "L1GradientPenalty",
    "MaskedGradientPenalty",
    "MaskedRegularizer",
    "MaskedRelevancePenalty",
    "RRRPenalty",
    "analysis",
    "annotate",
    "attributions",
    "callbacks",
    "datasets",
    "evaluation",
    "export_with_explanations",
    "plotting",
    "relevance",
    "training",
]
