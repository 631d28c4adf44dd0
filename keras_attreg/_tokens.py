"""Token ids: attributions of text models are taken at the Embedding output.

For a model whose input is integer token ids, the input of every attribution
method, penalty and metric is e, the output of the model's Embedding layer
(found by `find_embedding`). `TokenSplit` computes the logits from a given e,
and `model_input` turns a batch of ids into the pair (split bound to those ids,
e) that the gradient code differentiates.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from keras_attreg._keras.embedding import embedding_output
from keras_attreg._keras.graph import is_graph_model, sublayers

if TYPE_CHECKING:
    from keras_attreg._logits import LogitSplit


def _walk(layer):
    yield layer
    for inner in sublayers(layer):
        yield from _walk(inner)


def declares_integer_input(model) -> bool:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return False
    return bool(inputs) and any(
        keras.backend.standardize_dtype(t.dtype).startswith(("int", "uint"))
        for t in inputs
    )


def _consumes_model_input(layer, models) -> bool:
    try:
        source = layer.input
    except (AttributeError, ValueError):
        return True  # shared between graphs: its input is ambiguous
    return any(source is tensor for model in models for tensor in (model.inputs or ()))


def find_embedding(model: keras.Model, embedding_layer: str | None = None):
    """The Embedding layer that consumes the model's token ids, or None.

    Nested models and the sublayers of custom layers are searched. With
    several Embedding layers, the one fed by a model input is taken;
    `embedding_layer` names one explicitly.

    Args:
        model: a Keras model.
        embedding_layer: optional name of the Embedding layer to use.

    Returns:
        A `keras.layers.Embedding`, or None when the model has none.
    """
    layers = [layer for layer in _walk(model) if layer is not model]
    embeddings = [
        layer for layer in layers if isinstance(layer, keras.layers.Embedding)
    ]
    if embedding_layer is not None:
        named = [layer for layer in embeddings if layer.name == embedding_layer]
        if not named:
            raise ValueError(
                "Invalid value for argument embedding_layer: expected the name of "
                f"an Embedding layer of model {model.name!r} (one of "
                f"{[layer.name for layer in embeddings]}). "
                f"Received: embedding_layer={embedding_layer!r}"
            )
        return named[0]
    if len(embeddings) > 1:
        graphs = [m for m in (model, *layers) if is_graph_model(m)]
        embeddings = [e for e in embeddings if _consumes_model_input(e, graphs)]
    if len(embeddings) > 1:
        raise ValueError(
            f"Model {model.name!r} has several Embedding layers fed by its inputs "
            f"({[layer.name for layer in embeddings]}): pass embedding_layer=<name> "
            "to choose the one whose output the attributions are taken at."
        )
    return embeddings[0] if embeddings else None


def input_embedding(model: keras.Model, tensor):
    """The Embedding layer that reads the model input `tensor` (token ids)
    directly, or None."""
    for layer in _walk(model):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            if layer.input is tensor:
                return layer
        except (AttributeError, ValueError):
            continue  # shared between graphs: not read from this input alone
    return None


def method_at_embedding(
    method, model: keras.Model, embedding_layer: str, argument: str
):
    """`method(model, x, targets)` with its maps taken at the Embedding layer
    named `embedding_layer`: given `embedding_layer=` when it takes that
    argument, as it is when that layer is the one it finds by itself, else a
    ValueError naming `argument` (its maps would be taken elsewhere)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "embedding_layer" in parameters:
        return functools.partial(method, embedding_layer=embedding_layer)
    try:
        found = find_embedding(model)
    except ValueError:
        found = None
    if found is not None and found.name == embedding_layer:
        return method
    raise ValueError(
        f"Invalid value for argument {argument}: on token ids with a chosen "
        f"Embedding layer ({embedding_layer!r}) an attribution method must take "
        "`embedding_layer`, so that its maps are taken there too. "
        f"Received: {argument}={method!r}"
    )


class TokenSplit:
    """S_c as a function of e, the Embedding output, for models on token ids.

    Bound to a batch of token ids (`bind`), `split(e)` returns `(logits,
    outputs)` of the model run on those ids with the Embedding's output
    replaced by `e` (same shape as `embed()`): the layers after the Embedding
    see `e`, and the Embedding's mask (`mask_zero`) still comes from the ids.

    Args:
        split: the model's `LogitSplit`.
        embedding: its Embedding layer.
        ids: the bound batch of token ids, shape (batch, seq_len), or None.
    """

    def __init__(self, split: LogitSplit, embedding, ids=None):
        self.split = split
        self.embedding = embedding
        self.ids = ids

    @property
    def model(self) -> keras.Model:
        return self.split.model

    def bind(self, ids) -> TokenSplit:
        """The same split bound to the token ids `ids` (cast to int32)."""
        return TokenSplit(self.split, self.embedding, tf.cast(ids, tf.int32))

    def rows(self, indices) -> TokenSplit:
        """The split bound to the ids of samples `indices` (repeats allowed)."""
        return self.bind(tf.gather(self.ids, indices))

    def embed(self) -> tf.Tensor:
        """e = Embedding(ids), shape (batch, seq_len, embedding dim)."""
        return self.embedding(self.ids)

    def token_embedding(self, token: int) -> tf.Tensor:
        """The embedding vector of token id `token`, shape (embedding dim,)."""
        return tf.convert_to_tensor(self.embedding.embeddings[token])

    def padding(self) -> tf.Tensor:
        """True at the padding positions (token id 0), shape (batch, seq_len)."""
        return tf.equal(self.ids, 0)

    def fix_padding(self, delta):
        """`delta`, a change of e (batch, seq_len, dim), zeroed at padding:
        padding is not a feature, so baselines and noise never move it."""
        return tf.where(self.padding()[..., None], tf.zeros_like(delta), delta)

    def __call__(self, e, training: bool = False):
        """Returns `(logits, outputs)` of the bound ids with Embedding output e."""
        with embedding_output(self.embedding, e):
            return self.split(self.ids, training=training)

    def logits(self, e, training: bool = False):
        """Returns the pre-softmax scores computed from e."""
        return self(e, training=training)[0]

    def num_classes(self, input_shape=None) -> int:
        return self.split.num_classes(input_shape)


def model_input(split: LogitSplit, x):
    """The differentiable input of `split` for the batch `x`.

    Returns:
        `(split, x)` for models on float inputs and for `x` holding several
        inputs (a list or dict: differentiated at its float inputs); for
        models on token ids, `(split.tokens bound to x, e)` with e =
        Embedding(x), computed under the caller's tapes (so gradients reach
        the embedding weights).
    """
    if not tf.is_tensor(x):
        return split, x
    tokens = getattr(split, "tokens", None)  # a bound TokenSplit has none
    if tokens is None:
        return split, x
    bound = tokens.bind(x)
    return bound, bound.embed()
