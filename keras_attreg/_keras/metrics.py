"""The wrapper's own logged metrics, grouped the way Keras groups compiled ones.

Keras's `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` infer
`mode="auto"` only from the `_direction` of metrics inside a
`compile_utils.MetricsList` (or `CompileMetrics`), not from a model's other
metrics; grouping the penalty's mean and the skipped-batch count in one lets
them be monitored without `mode=`.
"""

from __future__ import annotations

import keras
from keras.src.trainers.compile_utils import MetricsList


class _Group(MetricsList):
    """A `MetricsList` whose result is each member's, by name (the model logs
    each under its own name)."""

    def result(self) -> dict:
        return self.get_result()


def lower_is_better(metrics: list[keras.metrics.Metric], name: str) -> MetricsList:
    """`metrics` marked for minimisation, in one group named `name`."""
    for metric in metrics:
        metric._direction = "down"
    return _Group(metrics, name=name)
