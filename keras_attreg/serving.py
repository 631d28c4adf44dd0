"""Explanations at serving time: SavedModel signatures of the attribution methods.

`export_with_explanations` writes a SavedModel that serves, beside the model's
own forward pass (`serve`, aliased `serving_default`, as `keras.Model.export`
writes it), two signatures per attribution method M:

- `M(x)` explains the predicted class c = argmax_k y_k, y = model(x);
- `M_target(x, target)` explains the class `target` (int32, one per sample).

Both return `{"prediction": y, "attribution": R, "target": c}`, R computed in
the graph by the package's own attribution function (`kar.attributions.M`,
traced on the symbolic batch), so TF Serving, or any `tf.saved_model.load`,
runs it without this package. A SavedModel signature has no optional inputs
(TF Serving requires every input of the signature it runs), hence the pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from keras_attreg import attributions
from keras_attreg._logits import unwrap

DEFAULT_METHODS = (
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "epsilon_lrp",
)
SERVING_ENDPOINT = "serve"
TARGET_SUFFIX = "_target"

# Arguments of every attribution method that the signature itself supplies.
_SUPPLIED = frozenset({"model", "x", "targets", "embedding_layer"})


def _method_options(methods) -> dict[str, dict]:
    """`methods` (names, or a mapping name -> options) as {name: options},
    each name a built-in method and each option one of its arguments."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = [(name, options or {}) for name, options in methods.items()]
    elif isinstance(methods, Sequence):
        items = [(name, {}) for name in methods]
    else:
        items = None
    if not items:
        raise ValueError(
            "Invalid value for argument methods: expected a non-empty list of "
            f"method names from {list(attributions.METHOD_NAMES)}, or a dict "
            f"mapping such names to their options. Received: methods={methods!r}"
        )
    chosen = {}
    for name, options in items:
        if not isinstance(name, str) or name not in attributions.METHOD_NAMES:
            raise ValueError(
                "Invalid value for argument methods: expected method names from "
                f"{list(attributions.METHOD_NAMES)}. Received: methods={methods!r}"
            )
        accepted = set(inspect.signature(attributions.get(name)).parameters)
        accepted -= _SUPPLIED
        unknown = (
            sorted(set(options) - accepted)
            if isinstance(options, Mapping)
            else [options]
        )
        if unknown or name in chosen:
            raise ValueError(
                f"Invalid value for argument methods: the options of {name!r} "
                f"must be given once, as a dict with keys from {sorted(accepted)}. "
                f"Received: methods={methods!r}"
            )
        chosen[name] = dict(options)
    return chosen


def _input_spec(model: keras.Model) -> tf.TensorSpec:
    """The model's one input as a `tf.TensorSpec` with a free batch size."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Invalid value for argument model: expected a built functional or "
            "Sequential Keras model with one input and one output (an "
            "`AttributionRegularizedModel` stands for its base model). "
            f"Received: model={model.name!r} of type {type(model).__name__}"
        )
    if len(outputs[0].shape) != 2:
        raise ValueError(
            "Invalid value for argument model: expected an output of class "
            "scores, shape (batch, classes). Received: model with output shape "
            f"{tuple(outputs[0].shape)}"
        )
    tensor = inputs[0]
    return tf.TensorSpec(
        (None, *tensor.shape[1:]),
        keras.backend.standardize_dtype(tensor.dtype),
        name=tensor.name,
    )


def _signatures(model, name: str, options: dict, embedding_layer):
    """The two functions served for method `name`: `(explain, explain_target)`,
    each returning the prediction, the attribution and the explained class."""
    method = attributions.get(name)

    def outputs(x, prediction, target):
        attribution = method(
            model, x, target, embedding_layer=embedding_layer, **options
        )
        return {"prediction": prediction, "attribution": attribution, "target": target}

    def explain(x):
        prediction = model(x, training=False)
        return outputs(
            x, prediction, tf.argmax(prediction, axis=-1, output_type=tf.int32)
        )

    def explain_target(x, target):
        return outputs(x, model(x, training=False), target)

    return explain, explain_target


def export_with_explanations(
    model: keras.Model,
    filepath,
    methods: Sequence[str] | Mapping[str, Mapping] = DEFAULT_METHODS,
    embedding_layer: str | None = None,
    verbose: bool | None = None,
) -> None:
    """Exports `model` as a SavedModel that serves attribution maps.

    The SavedModel holds the model's forward pass (`serve`, also
    `serving_default`, as `model.export` writes it) and, for each method M,

        M(x)                -> {"prediction": y, "attribution": R, "target": c}
        M_target(x, target) -> the same, c = target

    with y = model(x) (inference mode), c = argmax y when not given, and R the
    map of `kar.attributions.M(model, x, c, **options)` computed in the graph:
    of x's shape, or (batch, seq_len), one value per token, for a model on
    token ids. x keeps the model input's name, dtype and sample shape, with a
    free batch size; `target` is int32 of shape (batch,), and a class out of
    range fails the call. SmoothGrad draws its noise with the seed
    `(seed, 0)` for the whole request (see `kar.attributions.smoothgrad`).

    Args:
        model: a functional or Sequential Keras classifier with one input and
            one output, or an `AttributionRegularizedModel` (its base model is
            served and explained as every function of the package explains
            the wrapper: at its `logits_layer` and `embedding_layer`).
        filepath: the folder to write the SavedModel to.
        methods: names of attribution methods (see
            `kar.attributions.METHOD_NAMES`), or a dict mapping names to their
            options, e.g. `{"integrated_gradients": {"steps": 32}}` (any
            argument of the method but `model`, `x`, `targets` and
            `embedding_layer`, checked as the method checks it).
        embedding_layer: for token ids, the Embedding layer to explain at (as
            in `kar.attributions.saliency`).
        verbose: print the endpoints written (as `keras.Model.export`;
            default True).

    Raises:
        ValueError: an unknown method or option, a bad option value (e.g.
            `steps=0`), or a model with several inputs or outputs.

    Example:
        >>> kar.export_with_explanations(
        ...     model, "served", {"integrated_gradients": {"steps": 16}}, verbose=False
        ... )
        >>> served = tf.saved_model.load("served")
        >>> out = served.integrated_gradients_target(x_test[:4], y_test[:4])
        >>> tuple(out["attribution"].shape)
        (4, 28, 28, 1)
    """
    chosen = _method_options(methods)
    explained = unwrap(model)
    spec = _input_spec(explained)
    target_spec = tf.TensorSpec((None,), tf.int32, name="target")
    archive = keras.export.ExportArchive()
    archive.track(explained)
    archive.add_endpoint(
        SERVING_ENDPOINT, lambda x: model(x, training=False), input_signature=[spec]
    )
    for name, options in chosen.items():
        explain, explain_target = _signatures(model, name, options, embedding_layer)
        archive.add_endpoint(name, explain, input_signature=[spec])
        archive.add_endpoint(
            name + TARGET_SUFFIX, explain_target, input_signature=[spec, target_spec]
        )
    archive.write_out(filepath, verbose=True if verbose is None else bool(verbose))
