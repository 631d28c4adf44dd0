"""Training: the regularised model wrapper, the regularisers (masked ones
included), annotation masks. The callbacks live in `keras_attreg.callbacks`."""

import warnings

from keras_attreg.annotations import annotate
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
    "ExpectedGradientsPenalty",
    "FBILoss",
    "L1GradientPenalty",
    "MaskedGradientPenalty",
    "MaskedRegularizer",
    "MaskedRelevancePenalty",
    "RRRPenalty",
    "annotate",
]


def __getattr__(name: str):
    """`DelayedActivation` moved to `keras_attreg.callbacks` (one release of
    this path kept, with a `DeprecationWarning`)."""
    if name == "DelayedActivation":
        warnings.warn(
            "keras_attreg.training.DelayedActivation moved to "
            "keras_attreg.callbacks.DelayedActivation (also kar.DelayedActivation); "
            "this import path will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from keras_attreg.callbacks import DelayedActivation

        return DelayedActivation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
