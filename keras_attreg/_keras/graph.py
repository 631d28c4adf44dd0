"""Walking and running Keras functional graphs (the Keras internals it needs).

Everything that reads private Keras attributes to follow a model's layer graph
lives here: which models have a known graph, their output tensor, the run of a
graph with each operation's call replaced (nested functional and Sequential
models entered, so the caller sees leaf operations only), and how to call a
layer with its `training` argument or without its activation.
"""

from __future__ import annotations

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


def run_graph(model: keras.Model, inputs, call_fn: Callable):
    """Runs the graph of `model` with every operation call replaced.

    Nested functional and Sequential models are entered: `call_fn` sees only
    the leaf operations, in a topological order of the flattened graph.

    Args:
        model: a functional or Sequential model.
        inputs: the input tensor(s), structured as the model's inputs.
        call_fn: `call_fn(operation, *args, **kwargs)` returning the
            operation's outputs; `args`/`kwargs` are the node's arguments with
            its input tensors filled in.

    Returns:
        The model's outputs, structured as the model returns them.
    """

    def dispatch(operation, *args, **kwargs):
        if is_graph_model(operation):
            return run_graph(operation, args[0], call_fn)
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
        raise ValueError(
            "Expected a functional or Sequential model (its layer graph must be "
            f"known). Received: the subclassed model {model.name!r} of type "
            f"{type(model).__name__}"
        )
    return model._run_through_graph(
        inputs, operation_fn=lambda operation: operation, call_fn=dispatch
    )


def keras_mask(tensor):
    """The Keras mask carried by a tensor (e.g. from `Embedding(mask_zero=True)`),
    or None."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


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
        "affine": _ops(knp, "Add", "Subtract", "Negative", "TrueDivide", "Divide"),
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
