"""Training: the regularised model wrapper, the regularisers (masked ones
included), annotation masks, the callbacks."""

from keras_attreg.annotations import annotate
from keras_attreg.training.callbacks import DelayedActivation
from keras_attreg.training.fbi import FBILoss
from keras_attreg.training.masked import (
    ExpectedGradientsPenalty,
    MaskedGradientPenalty,
    MaskedRegularizer,
    MaskedRelevancePenalty,
    RRRPenalty,
)
from keras_attreg.training.model import AttributionRegularizedModel
from keras_attreg.training.regularizers import (
    AttributionRegularizer,
    L1GradientPenalty,
)

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
    "annotate",
]
