"""`DelayedActivation`: the regulariser's switch, driven by a monitored metric."""

from __future__ import annotations

import keras

from keras_attreg._keras.distribute import mean_over_workers
from keras_attreg._validation import check_choice, check_float, check_int


@keras.saving.register_keras_serializable(package="keras_attreg")
class DelayedActivation(keras.callbacks.Callback):
    """Keeps the regulariser off until a monitored metric passes a threshold.

    The FBI paper (Yoo et al., CVPR-W 2019) switches its loss on once the
    validation accuracy exceeds 70%. The switch is the wrapper's
    `regularizer_weight` variable: 0 before, then
    `min(1, (epoch - start + 1) / (ramp_epochs + 1))` from the epoch `start`
    that follows the first epoch whose `monitor` passed `threshold` (strictly
    above for `mode="max"`, strictly below for `mode="min"`). Once on, it stays
    on. The start epoch is the wrapper's `regularizer_start_epoch` variable, so
    the state is saved with the model (`.keras`, `BackupAndRestore`). Under
    `MultiWorkerMirroredStrategy` the value compared is the mean over the
    workers of their `monitor` values (one all-reduce), so every worker takes
    the same decision. While the weight is 0, `fit` runs the wrapper's plain
    step (the cost of a plain Keras step, no penalty computed or logged); the
    regularised step is compiled when the switch first turns on.

    Args:
        monitor: the log key to watch, e.g. `"val_accuracy"`.
        threshold: the value to pass.
        mode: `"max"` (switch on above threshold) or `"min"` (below).
        ramp_epochs: epochs over which the weight rises linearly to 1 after
            the switch (0: full weight at once).

    Example:

    >>> import keras_attreg as kar
    >>> callback = kar.DelayedActivation(monitor="val_accuracy", threshold=0.7)
    >>> callback.get_config()["threshold"]
    0.7
    """

    drives_regularizer = True
    """Marks the callback `AttributionRegularizedModel.fit` runs first."""

    def __init__(
        self,
        monitor: str = "val_accuracy",
        threshold: float = 0.70,
        mode: str = "max",
        ramp_epochs: int = 0,
    ):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                "Invalid value for argument monitor: expected a log key such as "
                f"'val_accuracy'. Received: monitor={monitor!r}"
            )
        self.monitor = monitor
        self.threshold = check_float("threshold", threshold)
        self.mode = check_choice("mode", mode, ("max", "min"))
        self.ramp_epochs = check_int("ramp_epochs", ramp_epochs, low=0)

    def set_model(self, model):
        if not hasattr(model, "regularizer_start_epoch"):
            raise ValueError(
                "DelayedActivation drives an `AttributionRegularizedModel`. "
                f"Received: a model of type {type(model).__name__}"
            )
        super().set_model(model)

    def weight_at(self, epoch: int) -> float:
        """The regulariser weight for `epoch` given the saved start epoch."""
        start = int(self.model.regularizer_start_epoch.numpy())
        if start < 0 or epoch < start:
            return 0.0
        return min(1.0, (epoch - start + 1) / (self.ramp_epochs + 1))

    def on_epoch_begin(self, epoch, logs=None):
        self.model.regularizer_weight.assign(self.weight_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if int(self.model.regularizer_start_epoch.numpy()) >= 0:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"DelayedActivation monitors {self.monitor!r}, which is not in the "
                f"epoch logs (available: {sorted(logs or {})}). Pass validation "
                "data to `fit` for a `val_` metric."
            )
        # One decision for all workers: the mean of their values.
        value = float(mean_over_workers(self.model.distribute_strategy, value))
        passed = (
            value > self.threshold if self.mode == "max" else value < self.threshold
        )
        if passed:
            self.model.regularizer_start_epoch.assign(epoch + 1)

    def get_config(self) -> dict:
        return {
            "monitor": self.monitor,
            "threshold": self.threshold,
            "mode": self.mode,
            "ramp_epochs": self.ramp_epochs,
        }
