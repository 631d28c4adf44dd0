"""`FaithfulnessMonitor`: faithfulness metrics of a fixed validation slice,
put into the epoch's logs as `val_<name>` so that `ModelCheckpoint`,
`EarlyStopping` and `TensorBoard` can use them like `val_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_attreg import attributions as attribution_methods
from keras_attreg._inputs import one_array
from keras_attreg._keras.distribute import mean_over_workers
from keras_attreg._logits import unwrap
from keras_attreg._validation import check_choice, check_int
from keras_attreg.attributions._utils import method_name
from keras_attreg.evaluation import (
    deletion,
    infidelity,
    insertion,
    road,
    sensitivity_n,
)


def _area(metric, **options):
    return lambda model, data, method, seed: metric(
        model, data, method, **options
    ).area()


FAITHFULNESS_METRICS = {
    "deletion_auc": _area(deletion),
    "insertion_auc": _area(insertion),
    "road_morf_auc": lambda model, data, method, seed: road(
        model, data, method, order="morf", seed=seed
    ).area(),
    "road_lerf_auc": lambda model, data, method, seed: road(
        model, data, method, order="lerf", seed=seed
    ).area(),
    "infidelity": lambda model, data, method, seed: (
        infidelity(model, data, method, seed=seed).value
    ),
    "sensitivity_n": lambda model, data, method, seed: float(
        np.nanmean(sensitivity_n(model, data, method, seed=seed, verbose=0).correlation)
    ),
}
"""`val_<name>` -> `metric(model, (x, targets), method, seed)`: the areas of
the deletion, insertion and ROAD curves (default settings of each metric),
infidelity (Gaussian) and Sensitivity-n averaged over n."""


@keras.saving.register_keras_serializable(package="keras_attreg")
class FaithfulnessMonitor(keras.callbacks.Callback):
    """Faithfulness metrics of a fixed validation slice, logged as `val_<name>`.

    Every `every` epochs, at the epoch's end, each metric of `metrics` is
    computed for the maps of `method` on `(x_val, y_val)` (the base model of
    an `AttributionRegularizedModel`: S_c is its pre-softmax logit) and
    written into the epoch's logs as `val_<name>` (`val_deletion_auc`, ...).
    Callbacks after this one in the list (`ModelCheckpoint`,
    `EarlyStopping`, `TensorBoard`) and the `History` see them like
    `val_loss`; epochs in between carry no value. Lower is more faithful for
    `deletion_auc`, `road_morf_auc` and `infidelity` (`mode="min"` in
    `EarlyStopping`), higher for the others. Under a multi-worker strategy
    each value is the mean over the workers.

    Args:
        x_val: a fixed batch of inputs (images, or token ids).
        y_val: their classes (indices, or one-hot labels).
        metrics: names of `FAITHFULNESS_METRICS` (`"deletion_auc"`,
            `"insertion_auc"`, `"road_morf_auc"`, `"road_lerf_auc"`,
            `"infidelity"`, `"sensitivity_n"`).
        method: the attribution method, a name of `kar.attributions`.
        every: compute every `every` epochs (epochs `every - 1`, ...).
        seed: seed of the random parts (the same every epoch).

    Example:

    >>> monitor = kar.callbacks.FaithfulnessMonitor(
    ...     x_test[:8], y_test[:8], metrics=("deletion_auc", "insertion_auc"))
    >>> stop = keras.callbacks.EarlyStopping("val_deletion_auc", mode="min")
    >>> model.compile(optimizer="adam", loss=keras.losses.
    ...               SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x_train, y_train, epochs=1, verbose=0,
    ...                     callbacks=[monitor, stop])
    >>> sorted(k for k in history.history if k.endswith("_auc"))
    ['val_deletion_auc', 'val_insertion_auc']
    """

    def __init__(
        self,
        x_val,
        y_val,
        metrics: Sequence[str] = ("deletion_auc", "insertion_auc"),
        method: str = "gradient_x_input",
        every: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.x_val = one_array(x_val, "FaithfulnessMonitor")
        self.y_val = np.asarray(y_val)
        if self.x_val.ndim < 2 or len(self.x_val) == 0:
            raise ValueError(
                "Invalid value for argument x_val: expected a non-empty batch. "
                f"Received: x_val with shape {self.x_val.shape}"
            )
        if isinstance(metrics, str) or not metrics:
            raise ValueError(
                "Invalid value for argument metrics: expected a non-empty sequence "
                f"of names from {tuple(FAITHFULNESS_METRICS)}. Received: "
                f"metrics={metrics!r}"
            )
        self.metrics = [
            check_choice("metrics", name, tuple(FAITHFULNESS_METRICS))
            for name in metrics
        ]
        self.method = method_name(attribution_methods.get(method, name="method"))
        self.every = check_int("every", every, low=1)
        self.seed = check_int("seed", seed)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every or logs is None:
            return
        model = unwrap(self.model)
        method = attribution_methods.get(self.method, name="method")
        data = (self.x_val, self.y_val)
        values = [
            FAITHFULNESS_METRICS[name](model, data, method, self.seed)
            for name in self.metrics
        ]
        values = mean_over_workers(self.model.distribute_strategy, values).tolist()
        for name, value in zip(self.metrics, values, strict=True):
            logs[f"val_{name}"] = value

    def get_config(self) -> dict:
        return {
            "x_val": self.x_val.tolist(),
            "y_val": self.y_val.tolist(),
            "metrics": list(self.metrics),
            "method": self.method,
            "every": self.every,
            "seed": self.seed,
        }
