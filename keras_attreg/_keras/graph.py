"""Walking and running Keras functional graphs (the Keras internals it needs).

Everything that reads private Keras attributes to follow a model's layer graph
lives here: which models have a known graph, their output tensor, the run of a
graph with each operation's call replaced (nested functional and Sequential
models entered, so the caller sees leaf operations only; custom layers and
subclassed models entered by tracing their `call` into a graph of their
sublayers), and how to call a layer with its `training` argument or without
its activation.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import keras
import tensorflow as tf
from keras.src.models.functional import Functional


def applies_softmax(operation_or_activation) -> bool:
    """True for a `Softmax` layer, a layer whose activation is a softmax or a
    log-softmax (`Dense(..., activation="softmax")`, `Activation("softmax")`),
    or such an activation function itself: the one test of "this applies a
    softmax" of the package (the logit split and the relevance rules)."""
    activation = getattr(operation_or_activation, "activation", operation_or_activation)
    return isinstance(operation_or_activation, keras.layers.Softmax) or getattr(
        activation, "__name__", ""
    ) in ("softmax", "log_softmax")


def is_graph_model(model) -> bool:
    """True for functional and Sequential models (their layer graph is known)."""
    return isinstance(model, (Functional, keras.Sequential))


def graph_output(model: keras.Model):
    """The single symbolic output of a built functional/Sequential model."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        raise ValueError(
            f"The base model {model.name!r} is not built, so its logit cannot be "
            "found. Give it an `keras.Input` (or call `model.build(shape)`) "
            "before wrapping it."
        )
    if len(outputs) != 1:
        raise ValueError(
            "The base model must have a single output (the class scores). "
            f"Received: a model with {len(outputs)} outputs."
        )
    return outputs[0]


def sublayers(layer) -> list:
    """The layers `layer` holds directly: a model's layers, and those a custom
    layer keeps as attributes (e.g. an Embedding inside a token-and-position
    embedding layer)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def producer(tensor) -> keras.Operation:
    """The operation that computed a symbolic (Keras) tensor."""
    return tensor._keras_history.operation


def call_layer(layer, inputs, training):
    """`layer(inputs)`, passing `training` when the layer's call takes it."""
    if getattr(layer, "_call_has_training_arg", False):
        return layer(inputs, training=training)
    return layer(inputs)


def takes_training(operation) -> bool:
    """Whether `operation.call` has a `training` argument."""
    return bool(getattr(operation, "_call_has_training_arg", False))


def linear_call(layer, inputs, training):
    """Calls `layer` on `inputs` with its activation replaced by identity."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        return call_layer(layer, inputs, training)
    finally:
        layer.activation = activation


def run_graph(
    model: keras.Model,
    inputs,
    call_fn: Callable,
    enter: Callable = lambda operation: False,
    training: bool | None = None,
):
    """Runs the graph of `model` with every operation call replaced.

    Nested functional and Sequential models are entered, and so are the layers
    `enter` picks and any subclassed model: their `call` is traced into a graph
    of their sublayers (`traced_call`). `call_fn` sees only the leaf
    operations, in a topological order of the flattened graph.

    Args:
        model: a Keras model (functional, Sequential or subclassed).
        inputs: the input tensor(s), structured as the model's inputs.
        call_fn: `call_fn(operation, *args, **kwargs)` returning the
            operation's outputs; `args`/`kwargs` are the node's arguments with
            its input tensors filled in.
        enter: `enter(layer)`, whether a layer that is no functional or
            Sequential model is entered through its traced `call`.
        training: the training flag that traced calls are given (their
            Python branches on it are taken at tracing time).

    Returns:
        The model's outputs, structured as the model returns them.
    """

    def dispatch(operation, *args, **kwargs):
        if is_graph_model(operation):
            return run_graph(operation, args[0], call_fn, enter, training)
        if isinstance(operation, keras.layers.Layer) and enter(operation):
            graph, tensors = traced_call(operation, args, kwargs, training)
            try:
                return run_graph(graph, tensors, call_fn, enter, training)
            except ValueError as error:
                kind = type(operation).__name__
                raise ValueError(
                    f"In layer {operation.name!r} of type {kind} (entered through "
                    "its call(), having no rule of its own; `keras_attreg."
                    f"relevance.register_rule({kind}, rule)` gives it one): {error}"
                ) from error
        return call_fn(operation, *args, **kwargs)

    if isinstance(model, keras.Sequential):
        functional = model._functional
        if functional is None:
            outputs = inputs
            for layer in model.layers:
                outputs = dispatch(layer, outputs)
            return outputs
        model = functional
    if not isinstance(model, Functional):
        model, inputs = traced_call(model, (inputs,), {}, training)
    return model._run_through_graph(
        inputs, operation_fn=lambda operation: operation, call_fn=dispatch
    )


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def traced_call(layer: keras.layers.Layer, args: tuple, kwargs: dict, training=None):
    """`layer.call(*args, **kwargs)` as a functional graph of its sublayers.

    The call is run once on symbolic `keras.Input`s shaped like the tensor
    arguments (batch axis free), so every sublayer it calls becomes a node of
    a functional model over the same layer objects (the same weights); Python
    control flow is fixed at tracing time (`training` included). Cached per
    layer, argument shapes and dtypes.

    Args:
        layer: a built layer or subclassed model.
        args, kwargs: its call's arguments (tensors and constants).
        training: passed to the call when it takes a `training` argument.

    Returns:
        `(graph, tensors)`: the functional model and the tensor arguments to
        run it on (one tensor, or a list in `tf.nest.flatten` order).

    Raises:
        ValueError: naming the layer, where it holds weights of its own
            (outside its sublayers: raw operations on them have no rule) or
            its call cannot run on symbolic inputs (TensorFlow operations).
    """
    flat = tf.nest.flatten((args, kwargs))
    tensors = [value for value in flat if is_tensor(value)]
    signature = tf.nest.map_structure(
        lambda v: (tuple(v.shape[1:]), str(v.dtype)) if is_tensor(v) else v,
        (args, kwargs),
    )
    key = (training, repr(signature))
    per_layer = _TRACED.setdefault(layer, {})
    if key not in per_layer:
        per_layer[key] = _trace(layer, args, kwargs, training)
    return per_layer[key], tensors[0] if len(tensors) == 1 else tensors


def _trace(layer, args, kwargs, training):
    name = f"layer {layer.name!r} of type {type(layer).__name__}"
    hint = (
        f"Give it a rule with `keras_attreg.relevance.register_rule("
        f"{type(layer).__name__}, rule)` (see docs/relevance.md)."
    )
    own = [*layer._trainable_variables, *layer._non_trainable_variables]
    if own:
        raise ValueError(
            f"The relevance pass has no rule for {name}, and cannot enter it as "
            "a composition of known layers: it computes with weights of its own "
            f"({', '.join(v.path for v in own)}), outside any sublayer. {hint} "
            "Two common cases: weights added to the input as a bias (x + w, a "
            "learned position embedding) take `EpsilonRule(epsilon)`; weights "
            "concatenated to it (a ViT's class token) take `GradientRule()`, "
            "which routes relevance along the concatenation and drops the "
            "weights' share as a bias's."
        )
    flat = tf.nest.flatten((args, kwargs))
    symbols = [
        keras.Input(
            batch_shape=(None, *v.shape[1:]),
            dtype=keras.backend.standardize_dtype(v.dtype),
        )
        for v in flat
        if is_tensor(v)
    ]
    filled = iter(symbols)
    args, kwargs = tf.nest.pack_sequence_as(
        (args, kwargs), [next(filled) if is_tensor(v) else v for v in flat]
    )
    if training is not None and takes_training(layer):
        kwargs = {**kwargs, "training": training}
    try:
        outputs = layer.call(*args, **kwargs)
        return Functional(symbols[0] if len(symbols) == 1 else symbols, outputs)
    except (TypeError, ValueError, NotImplementedError, AttributeError) as error:
        raise ValueError(
            f"The relevance pass has no rule for {name}, and cannot enter it as "
            "a composition of known layers: its call() does not run on symbolic "
            f"inputs ({type(error).__name__}: {str(error).splitlines()[0]}). {hint}"
        ) from error


def keras_mask(tensor):
    """The Keras mask carried by a tensor (e.g. from `Embedding(mask_zero=True)`),
    or None."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


def copy_with_mask(tensor):
    """A new tensor equal to `tensor`, carrying the same Keras mask (so that a
    tape can tell two reads of one tensor apart and the layer still sees the
    padding mask)."""
    from keras.src.backend.common.masking import get_keras_mask, set_keras_mask

    copy = tf.identity(tensor)
    mask = get_keras_mask(tensor)
    if mask is not None:
        set_keras_mask(copy, mask)
    return copy


def is_tensor(value) -> bool:
    """True for the tensor arguments of a node (constants are not)."""
    return isinstance(value, (tf.Tensor, tf.Variable)) or keras.ops.is_tensor(value)


def _ops(module, *names):
    return tuple(getattr(module, name) for name in names if hasattr(module, name))


def operation_types() -> dict[str, tuple]:
    """Keras operations (not layers) that appear in functional graphs when
    tensors are combined with `+`, `*`, `keras.ops`..., grouped by how
    relevance crosses them.

    Returns:
        `{"affine": ..., "product": ..., "routing": ..., "elementwise": ...,
        "comparison": ...}`: sums and arithmetic with constants; elementwise
        products; reshapes, slices and concatenations; elementwise
        activations; comparisons and logic (masks such as `ids != 0`).
    """
    from keras.src.ops import core, nn
    from keras.src.ops import numpy as knp

    return {
        "affine": _ops(
            knp, "Add", "Subtract", "Negative", "TrueDivide", "Divide", "Sum", "Mean"
        ),
        "product": _ops(knp, "Multiply"),
        "routing": _ops(
            knp,
            "Reshape",
            "Transpose",
            "Concatenate",
            "ExpandDims",
            "Squeeze",
            "GetItem",
            "Flip",
            "Moveaxis",
            "Swapaxes",
            "Ravel",
            "Pad",
            "Roll",
        )
        + _ops(core, "Cast", "Slice", "ConvertToTensor"),
        "elementwise": _ops(
            nn,
            "Relu",
            "Relu6",
            "Sigmoid",
            "Softplus",
            "Softsign",
            "Silu",
            "LeakyRelu",
            "HardSigmoid",
            "HardSilu",
            "Elu",
            "Selu",
            "Gelu",
            "Celu",
            "HardTanh",
        )
        + _ops(knp, "Tanh"),
        "comparison": _ops(
            knp,
            "Equal",
            "NotEqual",
            "Greater",
            "GreaterEqual",
            "Less",
            "LessEqual",
            "LogicalAnd",
            "LogicalOr",
            "LogicalNot",
            "LogicalXor",
            "Any",
            "All",
        ),
    }


def applications_layer_types() -> dict[str, tuple]:
    """The small custom layers of `keras.applications` (private classes):
    `{"scale": (ConvNeXt's LayerScale,), "identity": (StochasticDepth,)}`."""
    from keras.src.applications import convnext

    return {
        "scale": _ops(convnext, "LayerScale"),
        "identity": _ops(convnext, "StochasticDepth"),
    }
