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

import collections
import dataclasses

import keras
import tensorflow as tf

from keras_attreg._inputs import EmbeddedInputs, model_inputs
from keras_attreg._keras.embedding import embedding_output
from keras_attreg._keras.graph import graph_output, is_graph_model, producer, run_graph
from keras_attreg._logits import LogitSplit, split_logits, target_scores, unwrap
from keras_attreg._tokens import TokenSplit, declares_integer_input
from keras_attreg._validation import check_float, check_targets, renamed_argument
from keras_attreg.relevance.canonizers import KERNEL_LAYERS, batch_norm_fold, can_fold
from keras_attreg.relevance.composites import epsilon_composite
from keras_attreg.relevance.rules import AffinePropagation, Call, Propagation

DEFAULT_EPSILON = 1e-2
"""Default stabiliser eps of the z / epsilon rule (see docs/fbi.md)."""

LAYERS_IN_K = KERNEL_LAYERS
"""The layers i = 1..K of Eq. 3: the paper's f, a layer with a kernel w_i
(BatchNormalization folded in; a separable convolution counts once). Pooling,
reshaping, merging, normalisation and activation layers are not counted."""

POOLING_LAYERS = tuple(
    getattr(keras.layers, f"{kind}Pooling{rank}D")
    for kind in ("Max", "Average", "GlobalMax", "GlobalAverage")
    for rank in (1, 2, 3)
)
"""The pooling layers, counted in K beside `LAYERS_IN_K` when a reading of
Eq. 3 takes every layer of the network (`FBILoss(layers="kernel_and_pooling")`)."""

START_SCORES = ("target", "all")
"""Where the pass starts: the target logit S_c alone (Eq. 2 with the true
class, the default) or every logit (the relevance of the logit layer is S)."""


@dataclasses.dataclass(frozen=True)
class Relevance:
    """The result of one relevance pass over a batch.

    Attributes:
        outputs: the model's outputs (equal to `model(x, training)`).
        logits: the pre-softmax scores.
        layers: the K counted layers (with a kernel), in graph order.
        forward_inputs: a+_{i-1}, the input tensor of each counted layer.
        backward_maps: a-_i, the relevance of that tensor (the sum over all
            its consumers; same shapes).
        input_relevance: the relevance of the model input (shape of `x`), the
            epsilon-LRP map; for token ids, of the Embedding output; for a
            model with several inputs, one map per input in x's structure.
    """

    outputs: tf.Tensor
    logits: tf.Tensor
    layers: list
    forward_inputs: list
    backward_maps: list
    input_relevance: tf.Tensor


@dataclasses.dataclass
class _Record:
    call: Call
    propagation: Propagation
    outputs: list


def _forward(split, x, composite, training):
    """Runs the graph, each call through its rule; the records in graph order.

    For a `TokenSplit` (a model on token ids, bound to them) `x` is the
    Embedding output e: the graph runs on the ids with the Embedding's output
    replaced by e (its mask still derived from the ids).
    """
    if isinstance(split, TokenSplit):
        with embedding_output(split.embedding, x):
            return _forward(split.split, split.ids, composite, training)
    if isinstance(split, EmbeddedInputs):
        # several inputs, some token ids: each of their Embeddings returns its
        # e_k of `x`, the graph runs on the ids and the float inputs of `x`
        with split.feeding(x) as fed:
            return _forward(split.split, fed, composite, training)
    records, producers = [], {}

    def producer_of(tensor):
        record = producers.get(tensor.ref())
        return None if record is None else record.call

    def run(operation, *args, **kwargs):
        call = Call(operation, args, kwargs, training, producer_of)
        propagation = composite.rule_for(operation).forward(call)
        record = _Record(call, propagation, tf.nest.flatten(propagation.outputs))
        records.append(record)
        for tensor in record.outputs:
            producers[tensor.ref()] = record
        return propagation.outputs

    outputs = run_graph(split.model, x, run, composite.enters, training)
    return outputs, records, producers


def _fold_batch_norms(records, producers, training):
    """BatchNormalizations folded into the affine layer whose output only they
    read (`can_fold`); the folded BatchNormalization passes relevance on."""
    consumers = collections.Counter(
        tensor.ref() for record in records for tensor in record.call.inputs
    )
    for record in records:
        batch_norm = record.call.operation
        if not isinstance(batch_norm, keras.layers.BatchNormalization):
            continue
        (tensor,) = record.call.inputs
        before = producers.get(tensor.ref())
        if (
            before is None
            or consumers[tensor.ref()] != 1
            or not isinstance(before.propagation, AffinePropagation)
            or not can_fold(before.call.operation, batch_norm)
        ):
            continue
        scale = batch_norm_fold(batch_norm, tensor, training)[0]
        before.propagation.fold(record.outputs[0], scale)
        record.propagation = Propagation(
            record.propagation.outputs,
            record.propagation.outputs,
            lambda relevances: list(relevances),
        )


def _propagate(records, seed, value, mode: str) -> dict:
    """The backward sweep: `{tensor.ref(): what reaches it}` from `value` at
    `seed`, each record's `mode` map ("backward": relevance; "multiplier":
    DeepLIFT) in reverse graph order, summed over each tensor's consumers."""
    reached = {seed.ref(): value}
    for record in reversed(records):
        upstream = [reached.get(tensor.ref()) for tensor in record.outputs]
        if all(r is None for r in upstream):
            continue
        upstream = [
            tf.zeros_like(tensor) if r is None else r
            for tensor, r in zip(record.outputs, upstream, strict=True)
        ]
        downstream = getattr(record.propagation, mode)(upstream)
        for tensor, r in zip(record.call.inputs, downstream, strict=True):
            if r is None:
                continue
            key = tensor.ref()
            reached[key] = r if key not in reached else reached[key] + r
    return reached


def _source(split, x, records):
    """The tensor that attributions are given to: `x` (for a model with
    several inputs, the float inputs in their structure), or for token ids
    the output of the model's Embedding (`find_embedding`); for several
    inputs some of which take token ids (`EmbeddedInputs`), the output of the
    Embedding that reads each of those."""
    if isinstance(split, EmbeddedInputs):
        flat = tf.nest.flatten(x)
        for index, layer in split.layers.items():
            flat[index] = _last_call(records, layer).outputs[0]
        return tf.nest.pack_sequence_as(x, flat)
    if not tf.is_tensor(x) or (
        x.dtype.is_floating and not isinstance(split, TokenSplit)
    ):
        return x
    tokens = split if isinstance(split, TokenSplit) else split.tokens
    if tokens is not None:
        return _last_call(records, tokens.embedding).outputs[0]
    raise ValueError(
        f"Invalid value for argument x: integer inputs (dtype {x.dtype.name}) "
        "need a model with an Embedding layer, whose output is then the input "
        "of the relevance pass. Received: a model without one; pass float "
        "inputs instead."
    )


def deeplift_pass(split: LogitSplit, x, reference, targets) -> tuple:
    """DeepLIFT-Rescale multipliers dS_c/da at the input (shape of `x`).

    One inference forward pass over the batch stacked as `[x; reference]`,
    then the multipliers of the same rules (`Propagation.multiplier`): each
    elementwise nonlinearity's derivative replaced by (f(z) - f(z_ref)) /
    (z - z_ref), linear maps by their Jacobian, gates held fixed.

    Returns:
        `(multipliers, source, source_reference)`: the multipliers at the
        source tensor (`x`, or the Embedding output for token ids) and the
        source on both halves.
    """
    stacked = tf.nest.map_structure(
        lambda a, b: tf.concat([a, b], axis=0), x, reference
    )
    stacked_split = split
    if isinstance(split, (TokenSplit, EmbeddedInputs)):
        # x and the reference hold embeddings of the bound ids: bind them twice
        rows = tf.range(tf.shape(tf.nest.flatten(x)[0])[0])
        stacked_split = split.rows(tf.concat([rows, rows], axis=0))
    outputs, records, _ = _forward(
        stacked_split, stacked, epsilon_composite(DEFAULT_EPSILON), False
    )
    logits, seed = _logit(split, records, outputs)
    batch = tf.shape(targets)[0]
    start = tf.one_hot(targets, tf.shape(logits)[-1], dtype=seed.dtype)
    start = tf.concat([start, tf.zeros_like(start)], axis=0)
    reached = _propagate(records, seed, start, "multiplier")

    sources = _source(split, stacked, records)

    def multipliers(source):
        found = reached.get(source.ref())
        return (tf.zeros_like(source) if found is None else found)[:batch]

    return (
        tf.nest.map_structure(multipliers, sources),
        tf.nest.map_structure(lambda source: source[:batch], sources),
        tf.nest.map_structure(lambda source: source[batch:], sources),
    )


def _last_call(records, operation):
    for record in reversed(records):
        if record.call.operation is operation:
            return record
    raise ValueError(f"Layer {operation.name!r} is not on the path to the output.")


def _logit(split: LogitSplit, records, outputs):
    """`(logits, seed)`: the logit tensor and the tensor its relevance is
    given to (the same, or the output of a last layer whose activation is the
    softmax, which passes relevance to its pre-activation unchanged)."""
    end = split.split if isinstance(split, (TokenSplit, EmbeddedInputs)) else split
    while end.mode == "nested":
        end = end.inner
    if end.mode == "identity":
        logits = tf.nest.flatten(outputs)[0]
        return logits, logits
    if end.mode == "named":
        layer = end.model.get_layer(end.logits_layer)
        while is_graph_model(layer):
            layer = producer(graph_output(layer))
        logits = _last_call(records, layer).outputs[0]
        return logits, logits
    record = _last_call(records, end.last)
    if end.mode == "softmax_layer":
        logits = record.call.inputs[0]
        return logits, logits
    record.propagation.activation = None  # the pass starts below the softmax
    return record.propagation.pre_activation, record.outputs[0]


def relevance_pass(
    split: LogitSplit,
    x: tf.Tensor,
    targets: tf.Tensor,
    epsilon: float = DEFAULT_EPSILON,
    training: bool = False,
    counted: tuple = LAYERS_IN_K,
    start: str = "target",
) -> Relevance:
    """Forward pass, then the relevance pass from the target logit to the input.

        R_logits = S_c * onehot(c)
        R_a = sum over the consumers of a of what each sends back to a
        a-_i = a+_{i-1} * W_i^T (a-_{i+1} / (z_i + eps * sign(z_i)))

    Walks any functional or Sequential graph (nested models included; custom
    layers without a rule and subclassed models entered through their traced
    `call`) in reverse topological order, one rule per operation (`epsilon_composite`
    and the rules given with `register_rule`), BatchNormalization folded into
    the affine layer before it where it can be. Works inside `tf.function`
    and under an outer `tf.GradientTape` (gradients of any function of the
    maps flow into the weights).

    Args:
        split: the model split into logits and outputs (`split_logits`), or
            a `TokenSplit` bound to token ids (then `x` is their embedding e).
        x: the input batch (float; or token ids for a model with an
            Embedding, whose output is then the input of the pass).
        targets: int class indices c, shape `(batch,)` (not checked here).
        epsilon: the stabiliser eps of the epsilon rule (validated by the
            callers).
        training: forwarded to the layers (BatchNormalization, Dropout).
        counted: the layer types whose input and relevance are returned
            (`LAYERS_IN_K`, optionally with `POOLING_LAYERS`).
        start: `"target"` (R_logits = S_c * onehot(c)) or `"all"`
            (R_logits = S, every logit); validated by the callers.

    Returns:
        A `Relevance` with the per-layer forward inputs and backward maps.
    """
    outputs, records, producers = _forward(
        split, x, epsilon_composite(epsilon), training
    )
    _fold_batch_norms(records, producers, training)
    logits, seed = _logit(split, records, outputs)
    if start == "all":
        initial = tf.cast(logits, seed.dtype)
    else:
        onehot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=seed.dtype)
        scores = tf.cast(target_scores(logits, targets), seed.dtype)
        initial = onehot * scores[:, None]
    relevance = _propagate(records, seed, initial, "backward")

    def relevance_of(tensor):
        found = relevance.get(tensor.ref())
        return tf.zeros_like(tensor) if found is None else found

    chosen = [
        record for record in records if isinstance(record.call.operation, counted)
    ]
    return Relevance(
        outputs=tf.nest.flatten(outputs)[0],
        logits=logits,
        layers=[record.call.operation for record in chosen],
        forward_inputs=[record.call.inputs[0] for record in chosen],
        backward_maps=[relevance_of(record.call.inputs[0]) for record in chosen],
        input_relevance=tf.nest.map_structure(relevance_of, _source(split, x, records)),
    )


def relevance_map(
    model: keras.Model,
    x,
    targets,
    epsilon: float = DEFAULT_EPSILON,
    logits_layer: str | None = None,
    *,
    eps: float | None = None,
) -> tf.Tensor:
    """The epsilon-LRP map of `model` for class `targets`: R(x), shape of `x`.

        R_{i-1} = a_{i-1} * W_i^T (R_i / (z_i + eps * sign(z_i))),
        R_logits = S_c(x) * onehot(c)

    Inference mode (moving BatchNormalization statistics, no dropout). With
    eps -> 0 and no biases, sum(R(x)) = S_c(x) (conservation); eps and the
    biases absorb the rest.

    Args:
        model: a functional, Sequential or subclassed Keras model (any
            graph: residual, dense, nested models, custom layers composed of
            known layers) of the layers listed in `epsilon_composite` or given
            a rule with `register_rule`, or an
            `AttributionRegularizedModel` around one. It may end in a softmax:
            the pass starts at the logit.
        x: float input batch (for a model with several inputs, a list or
            dict of them, as `fit` takes them).
        targets: class indices, shape `(batch,)`.
        epsilon: the stabiliser eps >= 0.
        logits_layer: optional name of the layer whose output is the logit.
        eps: deprecated name of `epsilon`.

    Returns:
        A float tensor of the shape of `x` (several inputs: one per input, in
        the structure of `x`).

    Raises:
        ValueError: an unsupported layer (named with its type), eps < 0,
            targets out of range, a model on token ids (use `epsilon_lrp`).

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> relevance_map(model, tf.ones((1, 3)), [0]).shape
    TensorShape([1, 3])
    """
    epsilon = renamed_argument("eps", eps, "epsilon", epsilon, DEFAULT_EPSILON)
    epsilon = check_float("epsilon", epsilon, low=0.0)
    if declares_integer_input(unwrap(model)):
        # The pass would stop at the token lookup: a map of zeros.
        raise ValueError(
            "relevance_map takes models on float inputs; this one takes token "
            "ids. Use `keras_attreg.attributions.epsilon_lrp` (the same pass, "
            "one value per token at the Embedding output). Received: model with "
            f"inputs {[(t.name, t.dtype) for t in unwrap(model).inputs]}"
        )
    split = split_logits(unwrap(model), logits_layer)
    inputs = model_inputs(split.model)

    def as_float(tensor):
        tensor = tf.convert_to_tensor(tensor)
        if tensor.dtype.is_floating:
            return tensor
        return tf.cast(tensor, model.compute_dtype)

    given = x
    if inputs is None:
        x = as_float(x)
    else:
        x = tf.nest.map_structure(as_float, inputs.standardize(x))
    targets = tf.cast(tf.convert_to_tensor(targets), tf.int32)
    classes = split.num_classes(tf.nest.flatten(x)[0].shape)
    targets = check_targets(targets, classes, name="targets")
    maps = relevance_pass(split, x, targets, epsilon, training=False).input_relevance
    return maps if inputs is None else inputs.restore(maps, given)
