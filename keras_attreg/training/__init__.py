"""Training: the regularised model wrapper, the regularisers, the callbacks."""

from keras_attreg.training.callbacks import DelayedActivation
from keras_attreg.training.fbi import FBILoss
from keras_attreg.training.model import AttributionRegularizedModel
from keras_attreg.training.regularizers import (
    AttributionRegularizer,
    L1GradientPenalty,
)

__all__ = [
    "AttributionRegularizedModel",
    "AttributionRegularizer",
    "DelayedActivation",
    "FBILoss",
    "L1GradientPenalty",
]
