"""The relevance pass: forward activations a+_i and backward maps a-_i.

Yoo et al. (CVPR-W 2019), Eq. 1 and Eq. 2:

    a+_i = f(a+_{i-1}, w_i)                                   (forward pass)
    a-_i = a+_{i-1} * W_i^T (a-_{i+1} / (z_i + eps*sign(z_i)))  (relevance pass)

a-_i is the relevance of the input of layer i (epsilon-LRP, Bach et al. 2015),
so the same pass gives the epsilon-LRP attribution map of a model: the
relevance of the model input. The pass starts from the relevance of the logit
layer: S_c (the pre-softmax score of the target class c) on unit c, 0
elsewhere. Every step is differentiable with respect to the weights.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from keras_attreg._logits import (
    LogitSplit,
    call_layer,
    check_targets,
    graph_output,
    is_graph_model,
    split_logits,
    target_scores,
)
from keras_attreg._validation import check_float
from keras_attreg.relevance.canonizers import fold_batch_norm
from keras_attreg.relevance.composites import epsilon_composite

DEFAULT_EPSILON = 1e-2
"""Default stabiliser eps of the z / epsilon rule (see the README)."""

LAYERS_IN_K = (keras.layers.Conv2D, keras.layers.Dense)
"""The layers i = 1..K of Eq. 3: the paper's f, a convolution or a fully
connected layer (BatchNormalization folded in). Pooling, reshaping and
activation layers carry no kernel w_i and are not counted."""


@dataclasses.dataclass(frozen=True)
class Relevance:
    """The result of one relevance pass over a batch.

    Attributes:
        outputs: the model's outputs (equal to `model(x, training)`).
        logits: the pre-softmax scores.
        layers: the K counted layers (Conv2D, Dense), input to output.
        forward_inputs: a+_{i-1}, the input of each counted layer.
        backward_maps: a-_i, the relevance of that input (same shapes).
        input_relevance: the relevance of the model input (shape of `x`),
            the epsilon-LRP map.
    """

    outputs: tf.Tensor
    logits: tf.Tensor
    layers: list
    forward_inputs: list
    backward_maps: list
    input_relevance: tf.Tensor


def layer_chain(model: keras.Model) -> list:
    """The layers of a linear-chain model, input to output, nested models
    flattened.

    Raises:
        ValueError: for a subclassed model, or a layer with several inputs
            (branches, residual connections).
    """
    if not is_graph_model(model):
        raise ValueError(
            "The relevance pass needs a functional or Sequential model (its "
            f"layer graph). Received: the subclassed model {model.name!r} of "
            f"type {type(model).__name__}"
        )
    tensor = graph_output(model)
    layers = []
    while True:
        operation, node_index, _ = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            return layers[::-1]
        inputs = operation._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            raise ValueError(
                "The relevance pass needs a linear chain of layers. Received: "
                f"layer {operation.name!r} ({type(operation).__name__}) with "
                f"{len(inputs)} inputs in model {model.name!r}"
            )
        if is_graph_model(operation):
            layers.extend(layer_chain(operation)[::-1])
        else:
            layers.append(operation)
        tensor = inputs[0]


def _logit_end(split: LogitSplit, chain: list) -> tuple[int, bool]:
    """Where the logit sits in `chain`, following the split's decision.

    Returns:
        `(n, pre_activation)`: the logit is the output of `chain[n - 1]`, or its
        pre-activation when `pre_activation` (a last layer with a softmax
        activation); `chain[n:]` is the head applied to the logit.
    """
    if split.mode == "named":
        named = split.model.get_layer(split.logits_layer)
        last = layer_chain(named)[-1] if is_graph_model(named) else named
        return chain.index(last) + 1, False
    end = split
    while end.mode == "nested":
        end = end.inner
    if end.mode == "softmax_layer":
        return len(chain) - 1, False
    return len(chain), end.mode == "softmax_activation"


def relevance_pass(
    split: LogitSplit,
    x: tf.Tensor,
    targets: tf.Tensor,
    eps: float = DEFAULT_EPSILON,
    training: bool = False,
) -> Relevance:
    """Forward pass, then the relevance pass from the target logit to the input.

        R_logits = S_c * onehot(c)
        a-_i = a+_{i-1} * W_i^T (a-_{i+1} / (z_i + eps * sign(z_i)))

    One rule per layer type (`epsilon_composite`), BatchNormalization folded
    into the preceding Conv2D/Dense (`fold_batch_norm`). Works inside
    `tf.function` and under an outer `tf.GradientTape` (gradients of any
    function of the maps flow into the weights).

    Args:
        split: the model split into logits and outputs (`split_logits`).
        x: float input batch.
        targets: int class indices c, shape `(batch,)` (not checked here).
        eps: the stabiliser of the epsilon rule (validated by the callers).
        training: forwarded to the layers (BatchNormalization, Dropout).

    Returns:
        A `Relevance` with the per-layer forward inputs and backward maps.
    """
    chain = layer_chain(split.model)
    end, pre_activation = _logit_end(split, chain)
    composite = epsilon_composite(eps)
    steps = [
        (layer, batch_norm, composite.rule_for(layer))
        for layer, batch_norm in fold_batch_norm(chain[:end])
    ]
    activations, propagations = [], []
    h = x
    for layer, batch_norm, rule in steps:
        activations.append(h)
        propagations.append(rule.forward(layer, h, training, batch_norm))
        h = propagations[-1].outputs
    logits = propagations[-1].pre_activation if pre_activation else h
    for layer in chain[end:]:
        h = call_layer(layer, h, training)

    relevance = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
    relevance = relevance * target_scores(logits, targets)[:, None]
    forward_inputs, backward_maps, layers = [], [], []
    for (layer, _, _), a, propagation in zip(
        reversed(steps), reversed(activations), reversed(propagations), strict=True
    ):
        relevance = propagation.backward(relevance)
        if isinstance(layer, LAYERS_IN_K):
            layers.append(layer)
            forward_inputs.append(a)
            backward_maps.append(relevance)
    return Relevance(
        outputs=h,
        logits=logits,
        layers=layers[::-1],
        forward_inputs=forward_inputs[::-1],
        backward_maps=backward_maps[::-1],
        input_relevance=relevance,
    )


def relevance_map(
    model: keras.Model,
    x,
    targets,
    eps: float = DEFAULT_EPSILON,
    logits_layer: str | None = None,
) -> tf.Tensor:
    """The epsilon-LRP map of `model` for class `targets`: R(x), shape of `x`.

        R_{i-1} = a_{i-1} * W_i^T (R_i / (z_i + eps * sign(z_i))),
        R_logits = S_c(x) * onehot(c)

    Inference mode (moving BatchNormalization statistics, no dropout). With
    eps -> 0 and no biases, sum(R(x)) = S_c(x) (conservation); eps and the
    biases absorb the rest.

    Args:
        model: a functional or Sequential Keras model, a linear chain of the
            layers listed in `epsilon_composite` (and BatchNormalization after
            a Conv2D/Dense). It may end in a softmax: the pass starts at the
            logit.
        x: float input batch.
        targets: class indices, shape `(batch,)`.
        eps: the stabiliser eps >= 0.
        logits_layer: optional name of the layer whose output is the logit.

    Returns:
        A float tensor of the shape of `x`.

    Raises:
        ValueError: an unsupported layer (named with its type), eps < 0,
            targets out of range.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> relevance_map(model, tf.ones((1, 3)), [0]).shape
    TensorShape([1, 3])
    """
    eps = check_float("eps", eps, low=0.0)
    layer_chain(model)  # a clear error for models the pass cannot walk
    split = split_logits(model, logits_layer)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, model.compute_dtype)
    targets = tf.cast(tf.convert_to_tensor(targets), tf.int32)
    targets = check_targets(targets, split.num_classes(x.shape), name="targets")
    return relevance_pass(split, x, targets, eps, training=False).input_relevance
