"""Callbacks, one per module (Keras's layout).

- `DelayedActivation`: keeps the regulariser off until a metric passes a
  threshold (the FBI paper's 70% switch).
- `AttributionMonitor`: the attribution maps of a fixed validation batch,
  epoch by epoch, in TensorBoard or as PNG grids, with optional scalars.
- `FaithfulnessMonitor`: faithfulness metrics of a fixed validation slice in
  the epoch's logs as `val_<name>`, for `EarlyStopping` and `ModelCheckpoint`.
"""

from keras_attreg.callbacks.attribution_monitor import AttributionMonitor
from keras_attreg.callbacks.delayed_activation import DelayedActivation
from keras_attreg.callbacks.faithfulness_monitor import (
    FAITHFULNESS_METRICS,
    FaithfulnessMonitor,
)

__all__ = [
    "FAITHFULNESS_METRICS",
    "AttributionMonitor",
    "DelayedActivation",
    "FaithfulnessMonitor",
]
