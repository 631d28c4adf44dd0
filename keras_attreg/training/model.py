"""`AttributionRegularizedModel`: a Keras model trained with an attribution penalty."""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf

from keras_attreg import _guard, annotations
from keras_attreg._inputs import model_inputs
from keras_attreg._keras.distribute import MultiWorkerFitMixin
from keras_attreg._keras.metrics import lower_is_better
from keras_attreg._keras.second_order import second_order_layers
from keras_attreg._keras.steps import (
    LabelsOnlyBuildMixin,
    apply_if,
    compiled_step,
)
from keras_attreg._logits import split_logits
from keras_attreg._validation import (
    check_choice,
    check_int,
    check_targets,
    labels_to_targets,
)
from keras_attreg.serving import export_with_explanations
from keras_attreg.training.regularizers import AttributionRegularizer


def _replica_scale(value: tf.Tensor) -> tf.Tensor:
    """Divides by the number of replicas, as Keras does for its own losses.

    Each replica averages over its local batch; the optimizer sums the replica
    gradients, so dividing by the replica count gives the global-batch mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


class _PenaltyMean(keras.metrics.Mean):
    """Mean of the penalty over the batches where it was computed; NaN (no
    value) when none was, e.g. while `DelayedActivation` holds it off."""

    def result(self):
        return tf.where(self.count > 0, super().result(), float("nan"))


def _all_finite(x: tf.Tensor) -> tf.Tensor:
    """True when `x` holds no NaN or Inf (always for token ids)."""
    if not x.dtype.is_floating:
        return tf.constant(True)
    return tf.reduce_all(tf.math.is_finite(x))


@keras.saving.register_keras_serializable(package="keras_attreg")
class AttributionRegularizedModel(
    LabelsOnlyBuildMixin, MultiWorkerFitMixin, keras.Model
):
    """Wraps a Keras classifier and trains it with an attribution regulariser.

    The training step nests two `tf.GradientTape`s: the inner one gives what the
    regulariser needs from the forward pass (e.g. dS_c(x)/dx, the input gradient
    of the true-class logit, S_c the pre-softmax score), the outer one
    differentiates `regularizer.combine(task_loss, penalty, weight)` with
    respect to the weights. The penalty is logged under `regularizer.name` in
    `fit` and `evaluate`. `fit`, `evaluate`, `tf.data`, `tf.distribute`, mixed
    precision, XLA (`jit_compile=True`) and `.keras` saving work as for any
    Keras model; masked penalties take `fit(x, y, annotation_mask=masks)`;
    `predict` and `export` see `x` only. How the step is built (the plain step
    while `DelayedActivation` holds the penalty off, lazy regularisation,
    exact second derivatives through BatchNorm and max pooling, the run-time
    checks): docs/training.md.

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
        every: run the regularised step on every `every`-th optimizer step
            only, with the regulariser weight times `every`, and plain steps
            in between (1, the default: every step is regularised). Needs
            `steps_per_execution=1` when above 1.
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

    Lazy regularisation: the penalised step on every 4th batch only, its
    weight x 4, plain steps in between.

    >>> lazy = kar.AttributionRegularizedModel(
    ...     base, regularizer=kar.L1GradientPenalty(alpha=1e-3), every=4)
    >>> lazy.get_config()["every"]
    4
    """

    def __init__(
        self,
        base_model: keras.Model,
        regularizer: AttributionRegularizer,
        logits_layer: str | None = None,
        nonfinite: str = "raise",
        every: int = 1,
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
        self.every = check_int("every", every, low=1)
        self._split = split_logits(base_model, logits_layer, embedding_layer)
        # The steps' run-time checks (labels, masks, finite values) count their
        # failures here and the host raises after each compiled call, so the
        # steps compile with XLA (`jit_compile=True`, or "auto" on a GPU).
        self._guard = _guard.StepGuard()
        # Switch of the regulariser, driven by `DelayedActivation`: the weight in
        # [0, 1] and the epoch from which it is on (-1: not yet). Variables, so
        # a ramp never retraces a step and both are saved with the model; at 0
        # `fit` runs the plain step (see `make_train_function`).
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
        trackers = [_PenaltyMean(name=regularizer.name)]
        if self.nonfinite == "skip":
            trackers.append(keras.metrics.Sum(name="skipped_batches"))
        # One group, so that callbacks infer "min" for them (mode="auto").
        self.attribution_metrics = lower_is_better(trackers, "attribution_metrics")
        self.built = True

    @functools.cached_property  # not an attribute Keras tracks (no weights)
    def attributed_model(self) -> keras.Model:
        """What attributions, metrics and analyses explain: the base model, or
        with `logits_layer` the base model up to that layer (its output is the
        logit S_c the penalty was taken on).

        Every `keras_attreg` function or callback given this wrapper works on
        `attributed_model` instead.
        """
        if self.logits_layer is None:
            return self.base_model
        return keras.Model(
            self.base_model.inputs,
            self.base_model.get_layer(self.logits_layer).output,
            name=f"{self.base_model.name}_to_{self.logits_layer}",
        )

    @property
    def attributed_embedding_layer(self) -> str | None:
        """The Embedding layer that attributions of this wrapper are taken
        at when they are given none: the wrapper's `embedding_layer`."""
        return self.embedding_layer

    def call(self, inputs, training=None):
        return self.base_model(inputs, training=training)

    @staticmethod
    def _unpack(data):
        """`(x, labels, sample_weight, mask)` of a batch whose `y` may carry
        annotation masks (`mask` None when it does not). Keras spreads a
        sample weight given with arrays over the structure of `y`, one copy
        per key: it is taken once."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y, mask = annotations.split_annotations(y)
        sample_weight, _ = annotations.split_annotations(sample_weight)
        return x, y, sample_weight, mask

    @classmethod
    def _labels_only(cls, data):
        """The batch `data` with its annotation masks dropped."""
        x, y, sample_weight, _ = cls._unpack(data)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _prepare(self, data):
        """Unpacks a batch; checks the input rank, the labels and the
        annotation mask; labels to class indices.

        Returns:
            `(x, y, sample_weight, targets, mask)`: `y` the labels alone,
            `mask` the checked annotation mask shaped for the penalty's input
            (None when the batch carries none).
        """
        x, y, sample_weight, mask = self._unpack(data)
        several = model_inputs(self.base_model)
        tokens = False
        if several is not None:
            # Several inputs (a list or dict, as `fit` takes them): each is
            # given as the model declares it (token ids stay integer).
            x = tf.nest.map_structure(tf.convert_to_tensor, several.standardize(x))
            for index, tensor in enumerate(tf.nest.flatten(x)):
                self._check_rank(tensor.shape, index, several.names[index])
        else:
            x = tf.convert_to_tensor(x)
            self._check_rank(x.shape)
            tokens = self._split.tokens is not None
            if tokens:
                x = tf.cast(x, tf.int32)  # token ids: the penalty is taken at e
            elif not x.dtype.is_floating:
                x = tf.cast(x, self.compute_dtype)
        with self._guard.active():
            if mask is not None:
                self._check_takes_mask()
                if several is not None:
                    raise ValueError(
                        "Invalid value for argument annotation_mask: annotation "
                        "masks are drawn on one input, and model "
                        f"{self.base_model.name!r} has inputs {several.names}. "
                        "Received: annotation masks with several inputs"
                    )
                mask = annotations.mask_for(mask, x.shape, tokens, "float32")
            classes = self._split.num_classes(tf.nest.flatten(x)[0].shape)
            targets = check_targets(labels_to_targets(y, "y"), classes, name="y")
        # A batch that failed a check is not trained on (and its error is
        # raised after the step): the loss and the penalty see valid stand-ins.
        valid = tf.logical_not(self._guard.tripped())

        def stand_in(value):
            return tf.where(valid, value, tf.zeros_like(value))

        y, targets = tf.nest.map_structure(stand_in, (y, targets))
        if mask is not None:
            mask = stand_in(mask)
        return x, y, sample_weight, targets, mask

    def _check_takes_mask(self):
        if not self.regularizer.takes_mask:
            raise ValueError(
                "Invalid value for argument annotation_mask: "
                f"{type(self.regularizer).__name__} takes no annotation mask; "
                "use a masked penalty (e.g. `kar.RRRPenalty`, "
                "`kar.MaskedGradientPenalty`) or drop the masks. Received: "
                f"annotation masks with regularizer={self.regularizer!r}"
            )

    def _require_mask(self, mask):
        if mask is None and self.regularizer.takes_mask:
            raise ValueError(
                f"Invalid value for argument y: {type(self.regularizer).__name__} "
                "needs annotation masks with the training data: pass "
                "`fit(x, y, annotation_mask=masks)`, or y=kar.annotate(y, masks) "
                "(an all-zero mask means no annotation). Received: y without "
                "annotation masks"
            )

    def _check_rank(self, shape, index: int = 0, name: str | None = None):
        """Checks the rank of `x` (of its input `name`, the `index`-th of
        `model.inputs`, for several inputs)."""
        inputs = getattr(self.base_model, "inputs", None)
        if not inputs:
            return  # a subclassed model declares no input shape
        argument = "x" if name is None else f"x[{name!r}]"
        expected = inputs[index].shape
        if len(shape) != len(expected):
            raise ValueError(
                f"Invalid value for argument {argument}: expected rank "
                f"{len(expected)} (batch included), like the base model's input "
                f"{tuple(expected)}. Received: {argument} with shape {tuple(shape)}"
            )

    def _penalty(self, per_sample, sample_weight):
        """Batch mean of the per-sample penalty (weighted like Keras losses)."""
        if sample_weight is not None:
            weights = tf.reshape(tf.cast(sample_weight, "float32"), [-1])
            per_sample = per_sample * weights
        return _replica_scale(tf.reduce_mean(per_sample))

    def _step_losses(self, x, y, sample_weight, targets, training, weight, mask):
        """Outputs, task loss, batch penalty and total loss of one batch.

        `weight` is the regulariser weight the penalty enters the total with;
        `None` gives the plain step: the model's own forward pass, no penalty
        (`None`), the task loss as total. `mask` is the annotation mask, for
        a regulariser that takes one.
        """
        # `targets` carries the labels' range check: it runs before the loss.
        with tf.control_dependencies([targets]):
            x = tf.nest.map_structure(tf.identity, x)
        if weight is None:
            y_pred = self(x, training=training)
        else:
            masked = {"mask": mask} if self.regularizer.takes_mask else {}
            y_pred, per_sample = self.regularizer(
                self._split, x, targets, training, **masked
            )
        task = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if weight is None:
            return y_pred, task, None, task
        penalty = self._penalty(tf.cast(per_sample, "float32"), sample_weight)
        total = self.regularizer.combine(task, penalty, weight)
        return y_pred, task, penalty, total

    def _update_metrics(self, x, y, sample_weight, y_pred, penalty, total, ok=True):
        """Updates the trackers; a skipped batch (`ok` false) counts for nothing,
        nor does a batch without a penalty (`None`) in the penalty's mean."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        first = tf.nest.flatten(x)[0]
        batch = tf.cast(tf.shape(first)[0], "float32") * tf.cast(ok, "float32")
        trackers = [(self._loss_tracker, total)]
        if penalty is not None:
            trackers.append((self.attribution_metrics.metrics[0], penalty))
        for tracker, value in trackers:
            value = tf.where(ok, tf.cast(value, "float32") * replicas, 0.0)
            tracker.update_state(value, sample_weight=batch)
        if ok is not True:
            if sample_weight is None:
                sample_weight = tf.ones(tf.shape(first)[:1])
            sample_weight = tf.where(ok, sample_weight, tf.zeros_like(sample_weight))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _finite_terms(self, x, task, penalty, gradients) -> tf.Tensor:
        """True when the batch passed its checks and every term of the step is
        finite; in "raise" mode a non-finite term is counted by the guard
        (the host raises after the step).

        `penalty` is `None` on a plain step."""
        terms = {_guard.INPUTS: x, "task loss": task}
        if penalty is not None:
            terms[f"penalty ({self.regularizer.name})"] = penalty
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # With loss scaling, overflowing gradients are expected: the
            # optimizer skips those steps and lowers the scale itself.
            terms["gradients"] = [g for g in gradients if g is not None]
        ok = tf.logical_not(self._guard.tripped())
        for name, values in terms.items():
            finite = tf.reduce_all(
                [_all_finite(tf.convert_to_tensor(v)) for v in tf.nest.flatten(values)]
            )
            if self.nonfinite == "raise":
                self._guard.record(
                    finite,
                    finite,
                    kind=FloatingPointError,
                    message=_guard.NONFINITE,
                    name=name,
                    step=self.optimizer.iterations,
                )
            ok = tf.logical_and(ok, finite)
        return ok

    def train_step(self, data, regularized: bool = True):
        """One training step: regularised (the default), or plain
        (`regularized=False`: task loss only, no penalty computed).

        `fit` and `train_on_batch` run each kind compiled on its own, as
        `make_train_function` picks.
        """
        x, y, sample_weight, targets, mask = self._prepare(data)
        if regularized:
            self._require_mask(mask)
        weight = self.regularizer_weight * self.every if regularized else None
        state = [tf.identity(v) for v in self.base_model.non_trainable_variables]
        # Exact, cheaper second derivatives through BatchNormalization's batch
        # statistics and max pooling (see `keras_attreg._keras.second_order`).
        layers = (
            second_order_layers(self.base_model)
            if regularized
            else contextlib.nullcontext()
        )
        with tf.GradientTape() as tape, layers:
            y_pred, task, penalty, total = self._step_losses(
                x, y, sample_weight, targets, True, weight, mask
            )
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        ok = self._finite_terms(x, task, penalty, gradients)

        def apply(gradients, state):
            self.optimizer.apply(gradients, variables)

        def skip(gradients, state):
            # Undo what the forward pass wrote (e.g. BatchNorm moving statistics).
            for variable, value in zip(
                self.base_model.non_trainable_variables, state, strict=True
            ):
                variable.assign(value)

        # The same on every replica.
        skipped = apply_if(ok, apply, skip, args=(gradients, state))
        ok = tf.equal(skipped, 0.0)
        if self.nonfinite == "skip":
            # Summed over the replicas: each counts its share of the batch.
            skipped_batches = self.attribution_metrics.metrics[1]
            skipped_batches.update_state(_replica_scale(skipped))
        return self._update_metrics(x, y, sample_weight, y_pred, penalty, total, ok=ok)

    def test_step(self, data):
        """Task loss, metrics and, unless a masked penalty is given no masks
        (then only the task loss), the regularised loss and penalty."""
        x, y, sample_weight, targets, mask = self._prepare(data)
        unmasked = mask is None and self.regularizer.takes_mask
        y_pred, _, penalty, total = self._step_losses(
            x,
            y,
            sample_weight,
            targets,
            False,
            None if unmasked else self.regularizer_weight,
            mask,
        )
        return self._update_metrics(x, y, sample_weight, y_pred, penalty, total)

    def make_train_function(self, force: bool = False):
        """The train function of `fit` and `train_on_batch`.

        It holds two compiled steps, the regularised `train_step` and the plain
        one, each compiled at its first use, and runs on each call the one
        `_regularizes_next` picks from saved state. The plain step costs what
        a plain Keras step costs.
        """
        if self.train_function is not None and not force:
            return self.train_function
        if self.every > 1 and self.steps_per_execution > 1:
            raise ValueError(
                "Invalid value for argument steps_per_execution: "
                f"AttributionRegularizedModel(every={self.every}) chooses the "
                "step kind per batch and needs steps_per_execution=1. "
                f"Received: steps_per_execution={self.steps_per_execution}"
            )
        steps = {}

        def train_function(iterator):
            regularized = self._regularizes_next()
            if regularized not in steps:
                step = functools.partial(self.train_step, regularized=regularized)
                steps[regularized] = compiled_step(self, step)
            logs = steps[regularized](iterator)
            self._guard.raise_if_tripped()
            return logs

        self.train_function = train_function
        return train_function

    def make_test_function(self, force: bool = False):
        """Keras's test function, followed by the host's read of the step
        checks (a bad batch raises its error after the call)."""
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force=force)
        compiled = self.test_function

        def test_function(iterator):
            logs = compiled(iterator)
            self._guard.raise_if_tripped()
            return logs

        self.test_function = test_function
        return test_function

    def _regularizes_next(self) -> bool:
        """Whether the next step is regularised: the switch is on and, with
        `every=k`, the optimizer's step counter is a multiple of k."""
        if float(self.regularizer_weight.numpy()) == 0.0:
            return False
        return (
            self.every == 1 or int(self.optimizer.iterations.numpy()) % self.every == 0
        )

    def _check_data(self, x, y):
        """Eager checks of array inputs at the `fit`/`evaluate` boundary."""
        y, mask = annotations.split_annotations(y)
        if mask is not None:
            self._check_takes_mask()
        if isinstance(x, tf.data.Dataset):
            if x.cardinality() == 0:
                raise ValueError(
                    "Invalid value for argument x: Received: x=an empty "
                    "tf.data.Dataset (no batches)."
                )
            return
        several = model_inputs(self.base_model)
        if several is not None:
            several.standardize(x)  # a list or dict of one array per input
        elif isinstance(x, (np.ndarray, tf.Tensor)):
            self._check_rank(x.shape)
        if isinstance(x, (np.ndarray, tf.Tensor)) and len(x) == 0:
            raise ValueError(
                f"Invalid value for argument x: Received: x with shape {x.shape} "
                "(no samples)."
            )
        if isinstance(y, (np.ndarray, tf.Tensor)) and len(y):
            classes = self._split.num_classes(None if several else np.shape(x))
            check_targets(labels_to_targets(y, "y"), classes, name="y")
        if isinstance(mask, (np.ndarray, tf.Tensor)):
            mask = annotations.check_mask_values(mask)
            if isinstance(x, (np.ndarray, tf.Tensor)):
                tokens = self._split.tokens is not None
                annotations.check_mask_shape(mask.shape, np.shape(x), tokens)

    @staticmethod
    def _annotated(x, y, annotation_mask):
        """`y` with the masks given as `annotation_mask=` (arrays only)."""
        if annotation_mask is None:
            return y
        if isinstance(x, tf.data.Dataset) or y is None:
            raise ValueError(
                "Invalid value for argument annotation_mask: it goes with array "
                "data (x and y); a dataset or generator carries its masks in y "
                "(`kar.annotate(y, masks)`). Received: annotation_mask with "
                f"x of type {type(x).__name__}"
            )
        if annotations.split_annotations(y)[1] is not None:
            raise ValueError(
                "Invalid value for argument annotation_mask: y already carries "
                "annotation masks. Received: both"
            )
        return annotations.annotate(y, annotation_mask)

    def train_on_batch(self, x, y=None, *args, annotation_mask=None, **kwargs):
        """`keras.Model.train_on_batch`; `annotation_mask` as in `fit`."""
        y = self._annotated(x, y, annotation_mask)
        self._check_data(x, y)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y=None, *args, annotation_mask=None, **kwargs):
        """`keras.Model.test_on_batch`; `annotation_mask` as in `evaluate`."""
        y = self._annotated(x, y, annotation_mask)
        self._check_data(x, y)
        return super().test_on_batch(x, y, *args, **kwargs)

    def fit(self, x=None, y=None, *args, annotation_mask=None, **kwargs):
        """`keras.Model.fit`, with the data checked first.

        `annotation_mask` (arrays, one mask per example of `x`) is the same
        as `y=kar.annotate(y, annotation_mask)`; datasets and generators
        yield `(x, kar.annotate(y, masks))` themselves, and so does
        `validation_data` (with or without masks).

        `DelayedActivation` callbacks are moved to the front of `callbacks`, so
        that each epoch's switch decision is taken before any other callback
        (e.g. `BackupAndRestore`) saves the epoch. Only a `_RequireBatches`
        goes before them: an epoch (or a validation run) that saw no batch (a
        pipeline empty at run time) stops `fit` with a `ValueError`.
        """
        y = self._annotated(x, y, annotation_mask)
        self._check_data(x, y)
        kwargs["callbacks"] = [
            _RequireBatches(),
            *sorted(
                kwargs.get("callbacks") or (),
                # The switch callbacks (`DelayedActivation`) say so by an
                # attribute, so that training need not import the callbacks.
                key=lambda c: not getattr(c, "drives_regularizer", False),
            ),
        ]
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, annotation_mask=None, **kwargs):
        """`keras.Model.evaluate`, with the data checked first; data that
        yields no batch (a pipeline empty at run time) raises a `ValueError`.

        With annotation masks (`annotation_mask=` or `kar.annotate`), a masked
        penalty is computed and logged; without, a masked penalty logs NaN and
        the loss is the task loss."""
        y = self._annotated(x, y, annotation_mask)
        self._check_data(x, y)
        callbacks = kwargs.get("callbacks") or ()
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            # (`fit` validates through `evaluate` with its own callback list,
            # which holds the `_RequireBatches` of the `fit`.)
            kwargs["callbacks"] = [_RequireBatches(), *callbacks]
        return super().evaluate(x, y, *args, **kwargs)

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=None,
        explanations=None,
        **kwargs,
    ):
        """Exports the base model for inference (TF Serving, TFLite, ...).

        The artifact holds the base model's forward pass only: its `serve`
        endpoint returns the base model's outputs, with no training graph.
        Arguments are those of `keras.Model.export`, and `explanations`:
        attribution methods (names, or a dict of names to options) served
        beside it as SavedModel signatures, computed in the graph (see
        `kar.export_with_explanations`; format "tf_saved_model" only).
        """
        if explanations is not None:
            if format != "tf_saved_model" or kwargs:
                raise ValueError(
                    "Invalid value for argument explanations: served "
                    'explanations are written with format="tf_saved_model" and '
                    "the model's own input signature only. Received: "
                    f"explanations={explanations!r}, format={format!r}, "
                    f"other arguments {sorted(kwargs)}"
                )
            return export_with_explanations(
                self, filepath, explanations, verbose=verbose
            )
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
                "every": self.every,
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


class _RequireBatches(keras.callbacks.Callback):
    """Stops `fit` or `evaluate` with a `ValueError` when the data (training
    data per epoch, validation or evaluation data per run) yields no batch.

    A `tf.data` pipeline of unknown cardinality can turn out empty only when
    it runs (e.g. a `filter` that drops every element); Keras would then end
    `fit` with an empty history, having trained nothing, or `evaluate` with no
    metrics. Added by `AttributionRegularizedModel.fit` and `evaluate`, never
    by hand.
    """

    in_fit = False

    def on_train_begin(self, logs=None):
        self.in_fit = True

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if not self.batches:
            raise _no_batch("x", f"in epoch {epoch + 1}")

    def on_test_begin(self, logs=None):
        self.test_batches = 0

    def on_test_batch_end(self, batch, logs=None):
        self.test_batches += 1

    def on_test_end(self, logs=None):
        if not self.test_batches:
            raise _no_batch("validation_data" if self.in_fit else "x", "")


def _no_batch(argument: str, when: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument {argument}: expected data that yields at "
        f"least one batch{' per epoch' if when else ''}. Received: {argument} "
        f"yielded no batch{' ' + when if when else ''} (an empty pipeline, e.g. "
        "a `filter` that drops every element)."
    )
