"""Machinery shared by the attribution methods: input handling, batching, tracing.

Every method is written as a *kernel* `kernel(split, x, targets, *tensors,
**static)` working on one batch inside a `tf.function`; `attribute` feeds it
batches of numpy arrays, tensors or `tf.data` datasets and caches one traced
function per (model, kernel, static options). Called while another function is
being traced (SmoothGrad's fast path), `attribute` loops over the symbolic
tensor it is given inside that graph, so built-in methods compose.

Several inputs: for a model with several inputs (`keras_attreg._inputs`), x
is a list or dict of arrays; the kernel sees them in the model's structure
and returns one map per input in it (`tf.nest`), and `attribute` returns them
in the structure the user gave.

Token ids: for a model on integer token ids (it has an Embedding layer, see
`keras_attreg._logits.find_embedding`), the kernel runs on e = Embedding(ids)
with a `TokenSplit` bound to the ids, and its embedding-level map is reduced
to one value per token (summed over the embedding axis), 0 at padding (id 0).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from keras_attreg._inputs import (
    EmbeddedInputs,
    ModelInputs,
    input_embeddings,
    model_inputs,
)
from keras_attreg._logits import LogitSplit, attributed_embedding, split_logits, unwrap
from keras_attreg._tokens import TokenSplit
from keras_attreg._validation import (
    check_int,
    check_targets,
    labels_to_targets,
    require,
)

DEFAULT_BATCH_SIZE = 256

_EMPTY = "Invalid value for argument x: expected at least one sample. Received: no data"
_NONFINITE = "Invalid value for argument x: expected finite inputs (no NaN or Inf)."
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def method_name(method: Callable) -> str:
    """The name of an attribution method: its `__name__`, that of the function
    of a `functools.partial`, else its type's name."""
    return getattr(method, "__name__", None) or getattr(
        getattr(method, "func", None), "__name__", type(method).__name__
    )


def float_input(x) -> tf.Tensor:
    """`x` as a float tensor (kept in float64 when given so, else floatx)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.backend.floatx())
    return x


def finite_input(x) -> tf.Tensor:
    """`float_input(x)`, after checking it holds no NaN or Inf.

    A non-finite input would give a map that looks finite (a gradient can
    be finite where the input is not), so it is refused at the boundary.
    """
    x = float_input(x)
    finite = tf.math.is_finite(x)
    if not bool(tf.reduce_all(finite)):
        first = tf.where(tf.logical_not(finite))[0].numpy().tolist()
        count = int(tf.size(x)) - int(tf.math.count_nonzero(finite))
        raise ValueError(
            f"{_NONFINITE} Received: x with {count} non-finite values, the "
            f"first at index {tuple(first)}"
        )
    return x


def model_dtype_input(x, tokens: bool, inputs: ModelInputs | None = None):
    """`x` as int32 token ids (`tokens`) or as a finite float tensor; for a
    model with several `inputs`, in its structure, each input so."""
    if inputs is not None:
        return inputs.convert(x, finite_input)
    return tf.cast(x, tf.int32) if tokens else finite_input(x)


def num_samples(x) -> int:
    """The number of samples of a batch (of its first input)."""
    return int(tf.nest.flatten(x)[0].shape[0])


def sample_slice(x, start: int, stop: int):
    """Samples `start:stop` of a batch (of each of its inputs)."""
    return tf.nest.map_structure(lambda tensor: tensor[start:stop], x)


def batches(
    x,
    targets,
    batch_size: int,
    name: str = "targets",
    tokens: bool = False,
    inputs: ModelInputs | None = None,
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """Yields `(x, targets)` batches of at most `batch_size` samples.

    Inputs holding NaN or Inf and fractional labels raise a `ValueError`.

    Args:
        x: array or tensor of inputs, or a `tf.data.Dataset` of `(x, labels)`
            batches (then `targets` must be None); for a model with several
            inputs, a list or dict of them (see `ModelInputs.standardize`).
        targets: class indices, shape `(batch,)`, or one-hot labels.
        batch_size: the largest number of samples per batch.
        name: argument name used in error messages.
        tokens: the inputs are token ids (kept as int32, not made float).
        inputs: the inputs of a model with several inputs: batches come in
            its structure.
    """
    if isinstance(x, tf.data.Dataset):
        if targets is not None:
            raise ValueError(
                "When `x` is a `tf.data.Dataset` it must yield `(x, targets)` "
                f"batches and `{name}` must be None. Received: {name}={targets!r}"
            )
        empty = True
        for x_batch, y_batch in x:
            x_batch = model_dtype_input(x_batch, tokens, inputs)
            t_batch = labels_to_targets(y_batch, name)
            empty = empty and num_samples(x_batch) == 0
            for start in range(0, num_samples(x_batch), batch_size):
                yield (
                    sample_slice(x_batch, start, start + batch_size),
                    t_batch[start : start + batch_size],
                )
        if empty:
            raise ValueError(_EMPTY)
        return
    if targets is None:
        raise ValueError(
            f"Invalid value for argument {name}: expected class indices, one per "
            f"sample. Received: {name}=None"
        )
    x = model_dtype_input(x, tokens, inputs)
    targets = labels_to_targets(targets, name)
    shapes = [tensor.shape for tensor in tf.nest.flatten(x)]
    if any(s.rank < 2 or s[0] != targets.shape[0] for s in shapes):
        shown = shapes[0] if inputs is None else shapes
        raise ValueError(
            f"Invalid value for argument {name}: expected one class index per "
            f"sample of `x`. Received: x with shape {shown} and {name} with "
            f"shape {targets.shape}"
        )
    if num_samples(x) == 0:
        raise ValueError(_EMPTY)
    for start in range(0, num_samples(x), batch_size):
        yield (
            sample_slice(x, start, start + batch_size),
            targets[start : start + batch_size],
        )


def as_baseline(baseline, x: tf.Tensor, name: str = "baseline") -> tf.Tensor:
    """`baseline` (scalar or one sample's shape) as a tensor of x's sample shape."""
    value = tf.cast(tf.convert_to_tensor(baseline), x.dtype)
    try:
        return tf.broadcast_to(value, x.shape[1:])
    except (ValueError, tf.errors.InvalidArgumentError):
        raise ValueError(
            f"Invalid value for argument {name}: expected a scalar or an array "
            f"broadcastable to one sample's shape {tuple(x.shape[1:])}. "
            f"Received: {name} with shape {tuple(value.shape)}"
        ) from None


def for_each_chunk(total, chunk_size: int, body: Callable, initial):
    """Folds `body(state, indices)` over consecutive chunks of `range(total)`.

    Runs as one `tf.while_loop` with `parallel_iterations=1`, so that at most
    `chunk_size` work items (model inputs) are alive at a time.
    """
    total = tf.cast(total, tf.int32)

    def step(start, state):
        indices = tf.range(start, tf.minimum(start + chunk_size, total))
        return start + chunk_size, body(state, indices)

    _, state = tf.while_loop(
        lambda start, _: start < total,
        step,
        (tf.constant(0), initial),
        parallel_iterations=1,
    )
    return state


def token_split(model, embedding_layer: str | None = None) -> TokenSplit | None:
    """The `TokenSplit` of `model` (itself when given one), None without tokens."""
    if isinstance(model, TokenSplit):
        return model
    return split_logits(model, embedding_layer=embedding_layer).tokens


def reference(
    model, baseline, baseline_token, x: tf.Tensor, embedding_layer=None
) -> tf.Tensor:
    """The baseline of one sample: `baseline` (see `as_baseline`), or for token
    models the embedding of the token id `baseline_token` at every position.

    Args:
        model: the model (or `TokenSplit`) being attributed.
        baseline: scalar or array of one sample's shape (of e for token ids);
            for a model with several inputs, a scalar for all of them or a
            list or dict of one baseline per input.
        baseline_token: None, or a token id whose embedding is the baseline.
        x: a batch as the kernel sees it (e for token ids).
        embedding_layer: name of the model's Embedding layer, if chosen.
    """
    if baseline_token is None and not tf.is_tensor(x):
        if isinstance(model, EmbeddedInputs):  # inside SmoothGrad's trace
            inputs = model.inputs
        else:
            inputs = model_inputs(unwrap(model))
        if isinstance(baseline, (list, tuple, dict)):
            baseline = inputs.standardize(baseline, "baseline")
        else:
            baseline = tf.nest.map_structure(lambda _: baseline, x)
        names = tf.nest.pack_sequence_as(inputs.structure, inputs.names)
        return tf.nest.map_structure(
            lambda value, tensor, name: as_baseline(
                value, tensor, f"baseline[{name!r}]"
            ),
            baseline,
            x,
            names,
        )
    if baseline_token is None:
        return as_baseline(baseline, x)
    tokens = token_split(model, embedding_layer)
    if tokens is None:
        raise ValueError(
            "Invalid value for argument baseline_token: expected None for a "
            "model without an Embedding layer (token ids). Received: "
            f"baseline_token={baseline_token!r}"
        )
    vocabulary = int(tokens.embedding.input_dim)
    token = check_int("baseline_token", baseline_token, low=0)
    if token >= vocabulary:
        raise ValueError(
            "Invalid value for argument baseline_token: expected a token id in "
            f"[0, {vocabulary}). Received: baseline_token={baseline_token!r}"
        )
    vector = tf.cast(tokens.token_embedding(token), x.dtype)
    return tf.broadcast_to(vector, x.shape[1:])


def token_maps(maps: tf.Tensor, tokens: TokenSplit, per_token: str) -> tf.Tensor:
    """Embedding-level maps (batch, seq_len, dim) to token maps (batch, seq_len):
    summed (or averaged, `per_token="mean"`) over the embedding axis, 0 at
    padding positions."""
    reduce = tf.reduce_sum if per_token == "sum" else tf.reduce_mean
    values = reduce(maps, axis=-1)
    return tf.where(tokens.padding(), tf.zeros_like(values), values)


def _on_tokens(tokens, kernel, per_token, static, ids, targets, *tensors):
    bound = tokens.bind(ids)
    maps = kernel(bound, bound.embed(), targets, *tensors, **static)
    return maps if per_token is None else token_maps(maps, bound, per_token)


def _embedded(split: LogitSplit, x) -> EmbeddedInputs:
    """`split` bound to the batch `x` of a model with several inputs, its
    token-id inputs taken at their Embedding (`EmbeddedInputs`)."""
    inputs = model_inputs(split.model)
    tokens = [name for name in inputs.names if name not in inputs.floats]
    return EmbeddedInputs(split, inputs, x, input_embeddings(inputs, tokens))


def _on_inputs(split, kernel, per_token, static, x, targets, *tensors):
    bound = _embedded(split, x)
    maps = kernel(bound, bound.embed(), targets, *tensors, **static)
    return maps if per_token is None else bound.token_maps(maps, per_token)


def traced(
    model: keras.Model,
    kernel: Callable,
    embedding_layer: str | None = None,
    per_token: str = "sum",
    **static,
) -> Callable:
    """The cached `tf.function` of `kernel` bound to `model` and `static`.

    For a model on token ids the function takes the ids, runs `kernel` on
    their embedding e with a `TokenSplit` bound to them and returns token
    maps (see `token_maps`; the kernel's own output when `per_token` is None).
    For a model with several inputs of which some take token ids, the same
    with an `EmbeddedInputs` (maps of the float inputs as they are).
    """
    per_model = _TRACED.setdefault(model, {})
    key = (kernel, embedding_layer, per_token, tuple(sorted(static.items())))
    if key not in per_model:
        split = split_logits(model, embedding_layer=embedding_layer)
        inputs = model_inputs(model)
        if inputs is not None and inputs.floats != inputs.names:
            function = functools.partial(_on_inputs, split, kernel, per_token, static)
        elif inputs is not None or split.tokens is None:
            function = functools.partial(kernel, split, **static)
        else:
            function = functools.partial(
                _on_tokens, split.tokens, kernel, per_token, static
            )
        per_model[key] = tf.function(function, reduce_retracing=True)
    return per_model[key]


def example_input(split: LogitSplit, x_batch: tf.Tensor) -> tf.Tensor:
    """What the kernel sees for `x_batch`: e for token ids (the e_k of the
    token-id inputs among several), else `x_batch`."""
    inputs = model_inputs(split.model)
    if inputs is not None:
        return (
            x_batch
            if inputs.floats == inputs.names
            else _embedded(split, x_batch).embed()
        )
    tokens = split.tokens
    return x_batch if tokens is None else tokens.bind(x_batch).embed()


def graph_batch(split: LogitSplit, x, targets) -> tuple[tf.Tensor, tf.Tensor]:
    """`(x, targets)` of a symbolic batch of an outer trace (SmoothGrad's, a
    served signature): x cast as the model takes it (int32 token ids, or
    float checked finite; each input, in the model's structure, for a model
    with several inputs) and the targets checked, by run-time assertions."""

    def checked(tensor):
        tensor = float_input(tensor)
        return require(
            tf.math.is_finite(tensor),
            _NONFINITE,
            "x",
            tensor,
            lambda values: f"non-finite values {values[:8]}",
        )

    inputs = model_inputs(split.model)
    if inputs is not None:
        x = inputs.convert(x, checked)
    elif split.tokens is not None:
        x = tf.cast(x, tf.int32)
    else:
        x = checked(x)
    classes = split.num_classes(tf.nest.flatten(x)[0].shape)
    return x, check_targets(labels_to_targets(targets), classes)


def attribute(
    model: keras.Model,
    x,
    targets,
    kernel: Callable,
    batch_size: int,
    tensors: Callable = lambda x_batch: (),
    embedding_layer: str | None = None,
    per_token: str = "sum",
    **static,
) -> tf.Tensor:
    """Runs `kernel` over the batches of `(x, targets)` and concatenates.

    Args:
        model: a Keras model (a training wrapper stands for its base model),
            or (inside a traced SmoothGrad) the `TokenSplit` bound to the token
            ids of `x`, then an embedding-level input.
        x, targets: see `batches`.
        kernel: `kernel(split, x, targets, *tensors, **static)`, traced once.
        batch_size: the largest number of samples per kernel call.
        tensors: maps the first batch, as the kernel sees it (e for token
            ids), to the extra tensor arguments (baselines, masks) passed to
            every kernel call.
        embedding_layer: name of the Embedding layer of a model on token ids.
        per_token: how token maps reduce the embedding axis: "sum" or "mean".
        **static: hashable options fixed at trace time.

    Returns:
        The attributions, a tensor of the shape of the concatenated inputs
        (for token ids: (samples, seq_len); for a model with several inputs,
        one such tensor per input, in the structure `x` was given in: list,
        tuple or dict). Inside a traced function `x` is symbolic, fed to the
        kernel in chunks of `batch_size` by a graph loop (target checks become
        run-time assertions).
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    if isinstance(model, (TokenSplit, EmbeddedInputs)):
        return _attribute_embedded(
            model, x, targets, kernel, batch_size, tensors, static
        )
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    inputs = model_inputs(model)
    split = split_logits(model, embedding_layer=embedding_layer)
    function = traced(model, kernel, embedding_layer, per_token, **static)
    tokens = inputs is None and split.tokens is not None
    if not tf.executing_eagerly():
        like = x
        x, targets = graph_batch(split, x, targets)
        extra = tensors(example_input(split, x))

        def run(maps, indices):
            part = function(
                tf.nest.map_structure(lambda t: tf.gather(t, indices), x),
                tf.gather(targets, indices),
                *extra,
            )
            return tf.nest.map_structure(
                lambda m, p: tf.tensor_scatter_nd_update(m, indices[:, None], p),
                maps,
                part,
            )

        # Token maps (of token ids, alone or among several inputs) are float.
        initial = tf.nest.map_structure(
            lambda t: (
                tf.zeros(tf.shape(t), keras.backend.floatx())
                if t.dtype.is_integer
                else tf.zeros_like(t)
            ),
            x,
        )
        first = tf.nest.flatten(x)[0]
        maps = for_each_chunk(tf.shape(first)[0], batch_size, run, initial)
        return maps if inputs is None else inputs.restore(maps, like)
    outputs, extra, classes = [], None, None
    for x_batch, t_batch in batches(
        x, targets, batch_size, tokens=tokens, inputs=inputs
    ):
        if extra is None:
            extra = tensors(example_input(split, x_batch))
            classes = split.num_classes(tf.nest.flatten(x_batch)[0].shape)
        check_targets(t_batch, classes)
        outputs.append(function(x_batch, t_batch, *extra))
    return joined(outputs, x, inputs)


def joined(outputs: list, x, inputs: ModelInputs | None):
    """The maps of consecutive batches concatenated; for a model with several
    `inputs`, in the structure the user gave `x` in (a dataset: its
    element's)."""
    maps = tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *outputs)
    if inputs is None:
        return maps
    return inputs.restore(
        maps, x.element_spec[0] if isinstance(x, tf.data.Dataset) else x
    )


def _attribute_embedded(tokens, e, targets, kernel, batch_size, tensors, static):
    """Embedding-level maps of `e` in chunks, `tokens` bound to e's ids (a
    `TokenSplit`, or an `EmbeddedInputs` with e holding several inputs)."""
    extra = tensors(e)

    def run(maps, indices):
        part = kernel(
            tokens.rows(indices),
            tf.nest.map_structure(lambda t: tf.gather(t, indices), e),
            tf.gather(targets, indices),
            *extra,
            **static,
        )
        return tf.nest.map_structure(
            lambda m, p: tf.tensor_scatter_nd_update(m, indices[:, None], p),
            maps,
            part,
        )

    first = tf.nest.flatten(e)[0]
    initial = tf.nest.map_structure(tf.zeros_like, e)
    return for_each_chunk(tf.shape(first)[0], batch_size, run, initial)
