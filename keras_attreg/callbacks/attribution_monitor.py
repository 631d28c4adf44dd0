"""`AttributionMonitor`: attribution maps of a fixed validation batch while training.

It makes the effect of an attribution regulariser visible: the maps, epoch by
epoch, in TensorBoard (or as PNG grids), with optional scalar summaries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg

from keras_attreg import attributions as attribution_methods
from keras_attreg._inputs import one_array
from keras_attreg._keras.distribute import mean_over_workers
from keras_attreg._logits import attributed_embedding, split_logits, unwrap
from keras_attreg._tokens import method_at_embedding
from keras_attreg._validation import check_int, check_targets, labels_to_targets
from keras_attreg.attributions._utils import method_name
from keras_attreg.callbacks._summaries import (
    normalized_maps,
    write_images,
    write_scalar,
)
from keras_attreg.evaluation import sensitivity_n
from keras_attreg.plotting import plot_attribution_maps, token_heatmap_figure


def _resolve_methods(methods) -> dict[str, Callable]:
    """Name -> attribution method, from names of `kar.attributions` or callables."""
    if isinstance(methods, str) or callable(methods):
        methods = (methods,)
    resolved = {}
    for method in methods:
        if isinstance(method, str) and method in attribution_methods.METHOD_NAMES:
            method = attribution_methods.get(method, name="methods")
        if callable(method):
            name = method_name(method)
        else:
            raise ValueError(
                "Invalid value for argument methods: expected names among "
                f"{tuple(attribution_methods.METHOD_NAMES)} or callables "
                "`method(model, x, targets)`. Received: methods="
                f"{methods!r}"
            )
        if name in resolved:
            raise ValueError(
                "Invalid value for argument methods: expected distinct methods. "
                f"Received: {name!r} twice in methods={methods!r}"
            )
        resolved[name] = method
    if not resolved:
        raise ValueError(
            "Invalid value for argument methods: expected at least one method. "
            f"Received: methods={methods!r}"
        )
    return resolved


@keras.saving.register_keras_serializable(package="keras_attreg")
class AttributionMonitor(keras.callbacks.Callback):
    """Logs the attribution maps of a fixed validation batch during training.

    Every `every` epochs, at the epoch's end, each method's maps of `x_val`
    (for the classes `y_val`) are computed on the model being trained (the
    base model of an `AttributionRegularizedModel`: S_c is its pre-softmax
    logit) and shown as

        M_{h,w} = mean_c |R_{h,w,c}| / max_{h',w'} mean_c |R_{h',w',c}|  in [0, 1]

    one image per sample: TensorBoard image summaries `attributions/<method>`
    in `log_dir` (step = epoch index), and/or one PNG grid per epoch in
    `output_dir` (`maps_epoch_<epoch + 1>.png`, inputs in the first column,
    as grey channel means when they have neither 1, 3 nor 4 channels).
    For token ids (an integer `x_val` of shape (samples, seq_len), a model
    with an Embedding layer) the maps are per token and shown as the texts
    coloured by attribution (`kar.plotting.token_heatmap_figure`): one
    TensorBoard image `attributions/tokens` and `tokens_epoch_<epoch + 1>.png`.
    Optional scalars, in `log_dir` and in `history` (and in
    `output_dir/scalars.json`):

    - `attributions/mean_l1_input_gradient`: mean over the batch of
      ||dS_c(x)/dx||_1, the quantity the L1 gradient penalty lowers;
    - `attributions/sensitivity_n/<method>/n=<n>`: Sensitivity-n (Ancona et
      al. 2018) of each method at each n of `sensitivity_n_values`.

    Under `MultiWorkerMirroredStrategy` every worker computes the maps and
    scalars, each scalar is the mean over the workers (one all-reduce, so
    `history` is the same on every worker) and the chief alone writes.

    Args:
        x_val: a fixed batch of images, shape (samples, H, W[, C]).
        y_val: their classes (indices, or one-hot labels).
        methods: names of `kar.attributions` methods (e.g. `"saliency"`,
            `"integrated_gradients"`) or callables
            `method(model, x, targets) -> array of x's shape`.
        every: log every `every` epochs (epochs `every - 1`, `2 every - 1`, ...).
        log_dir: TensorBoard log folder (images and scalars).
        output_dir: folder for PNG grids and `scalars.json`. At least one of
            `log_dir` and `output_dir` must be given.
        gradient_norm: also log the mean L1 norm of the input gradient.
        sensitivity_n_values: subset sizes n for Sensitivity-n (None: skip).
        num_subsets: random subsets per (sample, n) for Sensitivity-n.
        seed: seed of the Sensitivity-n subsets (the same every epoch).
        vocabulary: for token ids, the word of each id (e.g. a
            `TextVectorization`'s `get_vocabulary()`), shown in the heatmaps.

    Attributes:
        history: scalar tag -> list of `(epoch, value)`.

    Example:

    >>> monitor = kar.callbacks.AttributionMonitor(
    ...     x_test[:8], y_test[:8], methods=("saliency", "gradient_x_input"),
    ...     log_dir="logs/maps", sensitivity_n_values=(1, 10, 100))
    >>> wrapped = kar.AttributionRegularizedModel(model, kar.L1GradientPenalty())
    >>> wrapped.compile(optimizer="adam", loss=keras.losses.
    ...                 SparseCategoricalCrossentropy(from_logits=True))
    >>> history = wrapped.fit(x_train, y_train, epochs=1, verbose=0,
    ...                       callbacks=[monitor])
    >>> sorted(monitor.history)[0]
    'attributions/mean_l1_input_gradient'

    View with `tensorboard --logdir logs` (IMAGES tab: attributions/saliency).
    """

    def __init__(
        self,
        x_val,
        y_val,
        methods: Sequence[str | Callable] = ("saliency",),
        every: int = 1,
        log_dir: str | None = None,
        output_dir: str | None = None,
        gradient_norm: bool = True,
        sensitivity_n_values: Sequence[int] | None = None,
        num_subsets: int = 32,
        seed: int = 0,
        vocabulary: Sequence[str] | None = None,
    ):
        super().__init__()
        x_val = one_array(x_val, "AttributionMonitor")
        self.tokens = x_val.ndim == 2 and np.issubdtype(x_val.dtype, np.integer)
        x_val = x_val.astype("int32" if self.tokens else keras.backend.floatx())
        if (x_val.ndim not in (3, 4) and not self.tokens) or x_val.shape[0] == 0:
            raise ValueError(
                "Invalid value for argument x_val: expected a non-empty batch of "
                "images of shape (samples, height, width[, channels]) or of "
                "integer token ids (samples, seq_len). "
                f"Received: x_val with shape {x_val.shape}"
            )
        targets = labels_to_targets(np.asarray(y_val), "y_val").numpy()
        if targets.shape != (x_val.shape[0],):
            raise ValueError(
                "Invalid value for argument y_val: expected one label per sample "
                f"of x_val ({x_val.shape[0]}). Received: y_val with shape "
                f"{np.shape(y_val)}"
            )
        if log_dir is None and output_dir is None:
            raise ValueError(
                "Invalid value for arguments log_dir and output_dir: expected a "
                "TensorBoard log folder, a PNG folder, or both. Received: "
                "log_dir=None, output_dir=None"
            )
        self.x_val = x_val
        self.y_val = np.asarray(y_val)
        self.targets = targets
        self.methods = _resolve_methods(methods)
        self.every = check_int("every", every, low=1)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.gradient_norm = bool(gradient_norm)
        self.sensitivity_n_values = (
            None
            if sensitivity_n_values is None
            else [
                check_int("sensitivity_n_values", n, low=1)
                for n in sensitivity_n_values
            ]
        )
        self.num_subsets = check_int("num_subsets", num_subsets, low=2)
        self.seed = check_int("seed", seed)
        self.vocabulary = None if vocabulary is None else [str(w) for w in vocabulary]
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._writer = None

    def set_model(self, model):
        super().set_model(model)
        classes = split_logits(self._scored_model).num_classes(self.x_val.shape)
        check_targets(tf.constant(self.targets), classes, name="y_val")

    @property
    def _scored_model(self) -> keras.Model:
        """The model whose logit is attributed (the wrapper's base model)."""
        return unwrap(self.model)

    @property
    def _embedding_layer(self) -> str | None:
        """The wrapper's own Embedding layer, for token ids (else None)."""
        return attributed_embedding(self.model, None) if self.tokens else None

    def _methods_at_embedding(self, model) -> dict[str, Callable]:
        """The methods, their maps taken at the wrapper's Embedding layer."""
        if self._embedding_layer is None:
            return self.methods
        return {
            name: method_at_embedding(method, model, self._embedding_layer, "methods")
            for name, method in self.methods.items()
        }

    @property
    def _writes(self) -> bool:
        """False on the non-chief workers of a multi-worker run."""
        return self.model.distribute_strategy.extended.should_checkpoint

    def on_train_begin(self, logs=None):
        if not self._writes:
            return
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        model = self._scored_model
        maps = {
            name: np.asarray(method(model, self.x_val, self.targets))
            for name, method in self._methods_at_embedding(model).items()
        }
        scalars = self._scalars(model, maps)
        if scalars:
            # The same history on every worker: the mean of their scalars.
            means = mean_over_workers(
                self.model.distribute_strategy, list(scalars.values())
            )
            scalars = dict(zip(scalars, means.tolist(), strict=True))
        for tag, value in scalars.items():
            self.history.setdefault(tag, []).append((epoch, value))
        if not self._writes:
            return
        if self.tokens:
            self._log_tokens(maps, epoch, scalars)
            return
        if self._writer is not None:
            with self._writer.as_default():
                for name, values in maps.items():
                    write_images(f"attributions/{name}", normalized_maps(values), epoch)
                for tag, value in scalars.items():
                    write_scalar(tag, value, epoch)
            self._writer.flush()
        if self.output_dir is not None:
            images = self.x_val
            if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):
                images = images.mean(axis=-1)  # not an image format: grey mean
            plot_attribution_maps(
                maps,
                os.path.join(self.output_dir, f"maps_epoch_{epoch + 1}.png"),
                images=images,
            )
            with open(os.path.join(self.output_dir, "scalars.json"), "w") as f:
                json.dump(self.history, f, indent=1)

    def _log_tokens(self, maps, epoch: int, scalars: dict[str, float]) -> None:
        """Token heatmaps (TensorBoard image and PNG) and the scalars."""
        words = [
            [
                self.vocabulary[t]
                if self.vocabulary and t < len(self.vocabulary)
                else str(t)
                for t in row[row != 0]
            ]
            for row in self.x_val
        ]
        kept = [row != 0 for row in self.x_val]
        shown = {
            name: [values[i][kept[i]] for i in range(len(words))]
            for name, values in maps.items()
        }
        figure = token_heatmap_figure(words, shown)
        if self._writer is not None:
            canvas = FigureCanvasAgg(figure)
            canvas.draw()
            image = np.asarray(canvas.buffer_rgba())[None, ..., :3] / 255.0
            with self._writer.as_default():
                write_images("attributions/tokens", image, epoch)
                for tag, value in scalars.items():
                    write_scalar(tag, value, epoch)
            self._writer.flush()
        if self.output_dir is not None:
            figure.savefig(
                os.path.join(self.output_dir, f"tokens_epoch_{epoch + 1}.png"), dpi=120
            )
            with open(os.path.join(self.output_dir, "scalars.json"), "w") as f:
                json.dump(self.history, f, indent=1)

    def _scalars(self, model, maps) -> dict[str, float]:
        scalars = {}
        if self.gradient_norm:
            gradient = np.asarray(
                attribution_methods.saliency(
                    model,
                    self.x_val,
                    self.targets,
                    embedding_layer=self._embedding_layer,
                )
            )
            per_sample = gradient.reshape(len(gradient), -1).sum(axis=1)
            scalars["attributions/mean_l1_input_gradient"] = float(per_sample.mean())
        if self.sensitivity_n_values is not None:
            for name, values in maps.items():
                result = sensitivity_n(
                    model,
                    (self.x_val, self.targets),
                    values,
                    n_values=self.sensitivity_n_values,
                    num_subsets=self.num_subsets,
                    seed=self.seed,
                    embedding_layer=self._embedding_layer,
                    verbose=0,
                )
                for n, score in zip(result.n_values, result.correlation, strict=True):
                    scalars[f"attributions/sensitivity_n/{name}/n={n}"] = float(score)
        return scalars

    def get_config(self) -> dict:
        return {
            "x_val": self.x_val.tolist(),
            "y_val": self.y_val.tolist(),
            "methods": [
                name
                if method is getattr(attribution_methods, name, None)
                else keras.saving.serialize_keras_object(method)
                for name, method in self.methods.items()
            ],
            "every": self.every,
            "log_dir": self.log_dir,
            "output_dir": self.output_dir,
            "gradient_norm": self.gradient_norm,
            "sensitivity_n_values": self.sensitivity_n_values,
            "num_subsets": self.num_subsets,
            "seed": self.seed,
            "vocabulary": self.vocabulary,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        config["methods"] = [
            method
            if isinstance(method, str)
            else keras.saving.deserialize_keras_object(
                method, custom_objects=custom_objects
            )
            for method in config["methods"]
        ]
        return cls(**config)
