"""`AttributionRegularizedModel`: a Keras model trained with an attribution penalty."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._logits import check_targets, labels_to_targets, split_logits
from keras_attreg.training.regularizers import AttributionRegularizer


def _replica_scale(value: tf.Tensor) -> tf.Tensor:
    """Divides by the number of replicas, as Keras does for its own losses.

    Each replica averages over its local batch; the optimizer sums the replica
    gradients, so dividing by the replica count gives the global-batch mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


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
        self._split = split_logits(base_model, logits_layer)
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
        self.built = True

    def call(self, inputs, training=None):
        return self.base_model(inputs, training=training)

    def _prepare(self, data):
        """Unpacks a batch; checks the input rank; labels to class indices."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.convert_to_tensor(x)
        self._check_rank(x.shape)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        classes = self._split.num_classes(x.shape)
        targets = check_targets(labels_to_targets(y), classes, name="y")
        return x, y, sample_weight, targets

    def _check_rank(self, shape):
        expected = self.base_model.inputs[0].shape
        if len(shape) != len(expected):
            raise ValueError(
                f"Invalid value for argument x: expected rank {len(expected)} "
                f"(batch included), like the base model's input {tuple(expected)}. "
                f"Received: x with shape {tuple(shape)}"
            )

    def _penalty(self, per_sample, sample_weight):
        """Batch mean of the per-sample penalty (weighted like Keras losses)."""
        per_sample = tf.cast(per_sample, "float32")
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, "float32"), [-1])
            per_sample = per_sample * weights
        return _replica_scale(tf.reduce_mean(per_sample))

    def _regularized_losses(self, data, training):
        x, y, sample_weight, targets = self._prepare(data)
        y_pred, per_sample = self.regularizer(self._split, x, targets, training)
        task = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        penalty = self._penalty(per_sample, sample_weight)
        total = self.regularizer.combine(task, penalty, self.regularizer_weight)
        return x, y, sample_weight, y_pred, penalty, total

    def _update_metrics(self, x, y, sample_weight, y_pred, penalty, total):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.shape(x)[0]
        self._loss_tracker.update_state(total * replicas, sample_weight=batch)
        self.penalty_tracker.update_state(penalty * replicas, sample_weight=batch)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            x, y, sample_weight, y_pred, penalty, total = self._regularized_losses(
                data, True
            )
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(x, y, sample_weight, y_pred, penalty, total)

    def test_step(self, data):
        return self._update_metrics(*self._regularized_losses(data, False))

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
        self._check_data(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y)
        return super().evaluate(x, y, *args, **kwargs)

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
