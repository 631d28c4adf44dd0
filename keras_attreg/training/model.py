"""`AttributionRegularizedModel`: a Keras model trained with an attribution penalty."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._logits import check_targets, labels_to_targets, split_logits
from keras_attreg._validation import check_choice
from keras_attreg.training.callbacks import DelayedActivation
from keras_attreg.training.regularizers import AttributionRegularizer


def _replica_scale(value: tf.Tensor) -> tf.Tensor:
    """Divides by the number of replicas, as Keras does for its own losses.

    Each replica averages over its local batch; the optimizer sums the replica
    gradients, so dividing by the replica count gives the global-batch mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def _all_finite(x: tf.Tensor) -> tf.Tensor:
    """True when `x` holds no NaN or Inf (always for token ids)."""
    if not x.dtype.is_floating:
        return tf.constant(True)
    return tf.reduce_all(tf.math.is_finite(x))


@keras.saving.register_keras_serializable(package="keras_attreg")
class AttributionRegularizedModel(keras.Model):
    """Wraps a Keras classifier and trains it with an attribution regulariser.

    The training step nests two `tf.GradientTape`s: the inner one gives what the
    regulariser needs from the forward pass (e.g. dS_c(x)/dx, the input gradient
    of the true-class logit), the outer one differentiates the total loss
    `regularizer.combine(task_loss, penalty, weight)` with respect to the weights.
    The penalty is logged under `regularizer.name` in `fit` and `evaluate` logs.

    The logit S_c is the pre-softmax score: models ending in a softmax (a
    `Softmax` layer, `Activation("softmax")` or a layer with
    `activation="softmax"`) are handled; otherwise name the logit layer.

    Args:
        base_model: a built Keras model with one output (class scores).
        regularizer: an `AttributionRegularizer`, e.g. `L1GradientPenalty`.
        logits_layer: optional name of the layer of `base_model` whose output
            is the logit (for models where it cannot be found automatically).
        embedding_layer: for a base model on token ids, the name of the
            Embedding layer whose output e is the penalty's input (default:
            the one fed by the model's input); see `kar.attributions.saliency`.
        nonfinite: what a training step does when the inputs, the task loss,
            the penalty or the gradients hold NaN or Inf: `"raise"` (default)
            stops `fit` with a `FloatingPointError` naming the step and the
            term; `"skip"` leaves the weights and BatchNorm statistics as they
            were and counts the batch in the `skipped_batches` log.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras, keras_attreg as kar
    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = kar.AttributionRegularizedModel(
    ...     base, regularizer=kar.L1GradientPenalty(alpha=1e-3))
    >>> model.compile(optimizer="adam", loss=keras.losses.
    ...     SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(np.ones((8, 4)), np.zeros(8), verbose=0)
    >>> sorted(history.history)
    ['attribution_penalty', 'loss']
    """

    def __init__(
        self,
        base_model: keras.Model,
        regularizer: AttributionRegularizer,
        logits_layer: str | None = None,
        nonfinite: str = "raise",
        embedding_layer: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(regularizer, AttributionRegularizer):
            raise ValueError(
                "Invalid value for argument regularizer: expected an "
                "`AttributionRegularizer` (e.g. `kar.L1GradientPenalty`). "
                f"Received: regularizer={regularizer!r}"
            )
        self.base_model = base_model
        self.regularizer = regularizer
        self.logits_layer = logits_layer
        self.embedding_layer = embedding_layer
        self.nonfinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))
        self._split = split_logits(base_model, logits_layer, embedding_layer)
        # Switch of the regulariser, driven by `DelayedActivation`: the weight in
        # [0, 1] and the epoch from which it is on (-1: not yet). Variables, so
        # switching never retraces the step and both are saved with the model.
        self.regularizer_weight = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="regularizer_weight"
        )
        self.regularizer_start_epoch = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(-1),
            dtype="int64",
            trainable=False,
            name="regularizer_start_epoch",
        )
        self.penalty_tracker = keras.metrics.Mean(name=regularizer.name)
        if self.nonfinite == "skip":
            self.skipped_batches = keras.metrics.Sum(name="skipped_batches")
        self.built = True

    def call(self, inputs, training=None):
        return self.base_model(inputs, training=training)

    def _prepare(self, data):
        """Unpacks a batch; checks the input rank; labels to class indices."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.convert_to_tensor(x)
        self._check_rank(x.shape)
        if self._split.tokens is not None:
            x = tf.cast(x, tf.int32)  # token ids: the penalty is taken at e
        elif not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        classes = self._split.num_classes(x.shape)
        targets = check_targets(labels_to_targets(y), classes, name="y")
        return x, y, sample_weight, targets

    def _check_rank(self, shape):
        inputs = getattr(self.base_model, "inputs", None)
        if not inputs:
            return  # a subclassed model declares no input shape
        expected = inputs[0].shape
        if len(shape) != len(expected):
            raise ValueError(
                f"Invalid value for argument x: expected rank {len(expected)} "
                f"(batch included), like the base model's input {tuple(expected)}. "
                f"Received: x with shape {tuple(shape)}"
            )

    def _penalty(self, per_sample, sample_weight):
        """Batch mean of the per-sample penalty (weighted like Keras losses)."""
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, "float32"), [-1])
            per_sample = per_sample * weights
        return _replica_scale(tf.reduce_mean(per_sample))

    def _regularized_losses(self, x, y, sample_weight, targets, training):
        """Outputs, task loss, batch penalty and total loss of one batch.

        The penalty is computed even while `DelayedActivation` holds its weight
        at 0 (it is logged). Skipping it with a `tf.cond` on the weight was
        measured slower overall: the conditional costs about 20% of the
        regularised step and left the switched-off step at 1.4x a plain one.
        """
        y_pred, per_sample = self.regularizer(self._split, x, targets, training)
        task = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        per_sample = tf.cast(per_sample, "float32")
        penalty = self._penalty(per_sample, sample_weight)
        total = self.regularizer.combine(task, penalty, self.regularizer_weight)
        return y_pred, task, penalty, total

    def _update_metrics(self, x, y, sample_weight, y_pred, penalty, total, ok=True):
        """Updates the trackers; a skipped batch (`ok` false) counts for nothing."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.cast(tf.shape(x)[0], "float32") * tf.cast(ok, "float32")
        for tracker, value in (
            (self._loss_tracker, total),
            (self.penalty_tracker, penalty),
        ):
            value = tf.where(ok, tf.cast(value, "float32") * replicas, 0.0)
            tracker.update_state(value, sample_weight=batch)
        if ok is not True:
            if sample_weight is None:
                sample_weight = tf.ones(tf.shape(x)[:1])
            sample_weight = tf.where(ok, sample_weight, tf.zeros_like(sample_weight))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _finite_inputs(self, x):
        """Stops the step before the forward pass if `x` holds NaN or Inf."""
        if self.nonfinite == "skip":
            return x
        message = tf.strings.format(
            "keras_attreg: non-finite value in training step {}: inputs (x) "
            "contain NaN or Inf.",
            self.optimizer.iterations,
        )
        check = tf.debugging.Assert(_all_finite(x), [message])
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _finite_terms(self, x, task, penalty, gradients):
        """True when every term of the step is finite; raises in "raise" mode."""
        terms = {
            "inputs (x)": _all_finite(x),
            "task loss": tf.reduce_all(tf.math.is_finite(task)),
            f"penalty ({self.regularizer.name})": tf.reduce_all(
                tf.math.is_finite(penalty)
            ),
        }
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # With loss scaling, overflowing gradients are expected: the
            # optimizer skips those steps and lowers the scale itself.
            terms["gradients"] = tf.reduce_all(
                [
                    tf.reduce_all(tf.math.is_finite(g))
                    for g in gradients
                    if g is not None
                ]
            )
        flags = tf.stack(list(terms.values()))
        ok = tf.reduce_all(flags)
        if self.nonfinite == "skip":
            return ok
        bad = tf.strings.reduce_join(
            tf.boolean_mask(tf.constant(list(terms)), tf.logical_not(flags)),
            separator=", ",
        )
        message = tf.strings.format(
            "keras_attreg: non-finite value in training step {}: {} went NaN or "
            "Inf. Lower the learning rate or the regulariser weight, check the "
            "data, or pass nonfinite='skip' to skip such batches.",
            (self.optimizer.iterations, bad),
        )
        return tf.debugging.Assert(ok, [message])

    def train_step(self, data):
        x, y, sample_weight, targets = self._prepare(data)
        x = self._finite_inputs(x)
        if self.nonfinite == "skip":
            state = [tf.identity(v) for v in self.non_trainable_variables]
        with tf.GradientTape() as tape:
            y_pred, task, penalty, total = self._regularized_losses(
                x, y, sample_weight, targets, True
            )
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        check = self._finite_terms(x, task, penalty, gradients)
        if self.nonfinite == "raise":
            with tf.control_dependencies([check]):
                self.optimizer.apply(gradients, variables)
            return self._update_metrics(x, y, sample_weight, y_pred, penalty, total)

        def apply():
            self.optimizer.apply(gradients, variables)
            return tf.constant(0.0)

        def skip():
            # Undo what the forward pass wrote (e.g. BatchNorm moving statistics).
            for variable, value in zip(
                self.non_trainable_variables, state, strict=True
            ):
                variable.assign(value)
            return tf.constant(1.0)

        self.skipped_batches.update_state(tf.cond(check, apply, skip))
        return self._update_metrics(
            x, y, sample_weight, y_pred, penalty, total, ok=check
        )

    def test_step(self, data):
        x, y, sample_weight, targets = self._prepare(data)
        y_pred, _, penalty, total = self._regularized_losses(
            x, y, sample_weight, targets, False
        )
        return self._update_metrics(x, y, sample_weight, y_pred, penalty, total)

    @staticmethod
    def _reraise(error: tf.errors.InvalidArgumentError):
        """Our run-time assertions as Python errors: `FloatingPointError` for a
        non-finite step, `ValueError` for labels out of range in a dataset."""
        for marker, kind in (
            ("keras_attreg: non-finite value", FloatingPointError),
            ("Invalid value for argument y", ValueError),
        ):
            if marker in error.message:
                # "assertion failed: [<our message>]": one formatted string.
                text = error.message[error.message.index(marker) :].split("\n")[0]
                raise kind(text.removesuffix("]")) from None
        raise error

    def _check_data(self, x, y):
        """Eager checks of array inputs at the `fit`/`evaluate` boundary."""
        if isinstance(x, tf.data.Dataset):
            if x.cardinality() == 0:
                raise ValueError(
                    "Invalid value for argument x: Received: x=an empty "
                    "tf.data.Dataset (no batches)."
                )
            return
        if isinstance(x, (np.ndarray, tf.Tensor)):
            self._check_rank(x.shape)
        if isinstance(x, (np.ndarray, tf.Tensor)) and len(x) == 0:
            raise ValueError(
                f"Invalid value for argument x: Received: x with shape {x.shape} "
                "(no samples)."
            )
        if isinstance(y, (np.ndarray, tf.Tensor)) and len(y):
            classes = self._split.num_classes(np.shape(x))
            check_targets(labels_to_targets(y), classes, name="y")

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the data checked first.

        `DelayedActivation` callbacks are moved to the front of `callbacks`, so
        that each epoch's switch decision is taken before any other callback
        (e.g. `BackupAndRestore`) saves the epoch.
        """
        self._check_data(x, y)
        if kwargs.get("callbacks"):
            kwargs["callbacks"] = sorted(
                kwargs["callbacks"], key=lambda c: not isinstance(c, DelayedActivation)
            )
        try:
            return super().fit(x, y, *args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            self._reraise(error)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y)
        try:
            return super().evaluate(x, y, *args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            self._reraise(error)

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Exports the base model for inference (TF Serving, TFLite, ...).

        The artifact holds the base model's forward pass only: its `serve`
        endpoint returns the base model's outputs, with no training graph.
        Arguments are those of `keras.Model.export`.
        """
        return self.base_model.export(
            filepath, format=format, verbose=verbose, **kwargs
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "base_model": keras.saving.serialize_keras_object(self.base_model),
                "regularizer": keras.saving.serialize_keras_object(self.regularizer),
                "logits_layer": self.logits_layer,
                "embedding_layer": self.embedding_layer,
                "nonfinite": self.nonfinite,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        config["base_model"] = keras.saving.deserialize_keras_object(
            config["base_model"], custom_objects=custom_objects
        )
        config["regularizer"] = keras.saving.deserialize_keras_object(
            config["regularizer"], custom_objects=custom_objects
        )
        return cls(**config)
