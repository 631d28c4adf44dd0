"""The pre-softmax score S_c(x) of a Keras model: shared by every module.

Attribution maps and attribution penalties are defined on the logit of the
target class, never on the softmax probability. `split_logits` finds the logit
inside a Keras model once, and returns a callable that gives, from one forward
pass, both the logits `z` and the model's own output `y = head(z)`.

Supported endings (checked in this order):
- `logits_layer="name"`: the output of that layer is the logit.
- A `Softmax` layer or `Activation("softmax")`: the logit is its input.
- A layer built with `activation="softmax"` (e.g. `Dense`): the logit is that
  layer's pre-activation, computed with the same weights.
- A nested functional/Sequential model as last layer: searched recursively.
- Anything else: the output is taken as the logit.

Token ids (text): `keras_attreg._tokens` (the logits as a function of the
Embedding output).
"""

from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from keras_attreg._inputs import EmbeddedInputs, input_embeddings
from keras_attreg._keras.graph import (
    applies_softmax,
    call_layer,
    graph_output,
    is_graph_model,
    linear_call,
    producer,
)
from keras_attreg._tokens import (
    TokenSplit,
    declares_integer_input,
    find_embedding,
    model_input,
)

_FIX_HINT = (
    "Make the model return logits (end in a linear layer) and use "
    "`from_logits=True` in the loss, or pass `logits_layer=<name of the layer "
    "whose output is the logit>`."
)


def unwrap(model):
    """The model that attributions, metrics and analyses work on.

    A model with an `attributed_model` attribute (a training wrapper such as
    `AttributionRegularizedModel`, whose `attributed_model` is its base model)
    stands for that model: every public function and callback that takes a
    model passes it through `unwrap` first, so the wrapper and its base model
    give the same numbers. Any other model is returned as it is. The check is
    by attribute, so attributions, relevance and evaluation need not import
    training.
    """
    inner = getattr(model, "attributed_model", None)
    return model if inner is None else inner


def attributed_embedding(model, embedding_layer: str | None) -> str | None:
    """`embedding_layer`; when None, the Embedding layer a training wrapper
    was given (its `attributed_embedding_layer`), so that attributions of the
    wrapper are taken at the embedding its penalty was taken at. Like
    `unwrap`, by attribute."""
    if embedding_layer is None:
        return getattr(model, "attributed_embedding_layer", None)
    return embedding_layer


def _inputs(model: keras.Model):
    """The model's inputs, unwrapped when single (as the model is called)."""
    inputs = model.inputs
    return inputs[0] if len(inputs) == 1 else inputs


class LogitSplit:
    """`model(x)` split into `(logits, outputs)` from a single forward pass.

    Args:
        model: a built Keras model with one output.
        logits_layer: optional name of the layer whose output is the logit.
        embedding_layer: optional name of the Embedding layer whose output is
            the input of the attributions when the model takes token ids.
    """

    def __init__(
        self,
        model: keras.Model,
        logits_layer: str | None = None,
        embedding_layer: str | None = None,
    ):
        self.model = model
        self.logits_layer = logits_layer
        self.embedding_layer = embedding_layer
        self._embedding = None
        self.inner = None
        self.ends_in_softmax = False
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Expected a `keras.Model`. Received: model={model!r} "
                f"of type {type(model).__name__}"
            )
        if not is_graph_model(model):
            self._init_subclassed(model)
            return
        output = graph_output(model)
        if logits_layer is not None:
            try:
                layer = model.get_layer(logits_layer)
            except ValueError:
                raise ValueError(
                    f"No layer named {logits_layer!r} in model {model.name!r}. "
                    f"Received: logits_layer={logits_layer!r}"
                ) from None
            self.mode = "named"
            self.trunk = keras.Model(_inputs(model), [layer.output, output])
            return
        last = producer(output)
        if isinstance(
            last, keras.layers.Softmax | keras.layers.Activation
        ) and applies_softmax(last):
            self.mode = "softmax_layer"
        elif applies_softmax(last):
            self.mode = "softmax_activation"
        elif is_graph_model(last):
            self.mode = "nested"
            self.inner = split_logits(last)
            if self.inner.mode == "identity":
                self.mode, self.trunk = "identity", model
                return
        else:
            self.mode, self.trunk = "identity", model
            return
        self.ends_in_softmax = self.mode != "nested" or self.inner.ends_in_softmax
        self.last = last
        try:
            trunk_out = last.input
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Cannot reach the logit of model {model.name!r}: its last layer "
                f"{last.name!r} ({type(last).__name__}) applies a softmax but its "
                f"input is ambiguous ({error}). {_FIX_HINT}"
            ) from None
        self.trunk = keras.Model(_inputs(model), trunk_out)

    def _init_subclassed(self, model):
        layers = getattr(model, "layers", [])
        last = layers[-1] if layers else None
        if applies_softmax(last):
            raise ValueError(
                f"Cannot reach the logit of the subclassed model {model.name!r}: "
                f"its last layer {last.name!r} applies a softmax inside `call()`. "
                "Return logits from `call()` and use `from_logits=True` in the loss."
            )
        if self.logits_layer is not None:
            raise ValueError(
                "`logits_layer` needs a functional or Sequential model. "
                f"Received: logits_layer={self.logits_layer!r} for the subclassed "
                f"model {model.name!r}"
            )
        self.mode, self.trunk = "identity", model

    def __call__(self, x, training: bool = False):
        """Returns `(logits, outputs)`; `outputs` equals `model(x, training)`."""
        if self.mode == "identity":
            z = call_layer(self.trunk, x, training)
            return z, z
        if self.mode == "named":
            z, y = self.trunk(x, training=training)
            return z, y
        h = call_layer(self.trunk, x, training)
        if self.mode == "softmax_layer":
            return h, call_layer(self.last, h, training)
        if self.mode == "softmax_activation":
            z = linear_call(self.last, h, training)
            return z, self.last.activation(z)
        return self.inner(h, training=training)

    def num_classes(self, input_shape=None) -> int:
        """Number of classes (last axis of the logits)."""
        if self.mode == "named":
            return int(self.trunk.outputs[0].shape[-1])
        if is_graph_model(self.model):
            return int(self.model.outputs[0].shape[-1])
        spec = keras.KerasTensor(
            (None, *tuple(input_shape)[1:]), self.model.input_dtype
        )
        return int(self.model.compute_output_spec(spec).shape[-1])

    def logits(self, x, training: bool = False):
        """Returns the pre-softmax scores of `x`."""
        return self(x, training=training)[0]

    def rows(self, indices):
        """The split for the samples `indices` of the batch (itself: no state)."""
        del indices
        return self

    def fix_padding(self, delta):
        """`delta` (a change of the input), as is: images have no padding."""
        return delta

    @property
    def tokens(self) -> TokenSplit | None:
        """The `TokenSplit` of a model on token ids, None for other models.

        Raises:
            ValueError: the model declares an integer input but has no
                Embedding layer to attribute at.
        """
        if self._embedding is None:
            self._embedding = find_embedding(self.model, self.embedding_layer) or False
        if not self._embedding and declares_integer_input(self.model):
            raise ValueError(
                f"Model {self.model.name!r} takes integer inputs (token ids) but "
                "has no `keras.layers.Embedding` layer: attributions on token "
                "ids are computed at the Embedding output. Add an Embedding "
                "layer after the input, or give the model a float input."
            )
        return TokenSplit(self, self._embedding) if self._embedding else None


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_logits(
    model: keras.Model,
    logits_layer: str | None = None,
    embedding_layer: str | None = None,
) -> LogitSplit:
    """Returns the (cached) `LogitSplit` of `model`."""
    key = (logits_layer, embedding_layer)
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = LogitSplit(model, logits_layer, embedding_layer)
    return per_model[key]


def target_scores(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """S_c: the logit of class `targets[b]` for each sample b, shape (batch,)."""
    return tf.gather(logits, targets, axis=-1, batch_dims=1)


FLOAT16_GRADIENT_SCALE = 2.0**12


def input_gradient(split: LogitSplit, x, targets, training: bool = False, score=None):
    """Forward pass plus dS_c(x)/dx, kept differentiable for an outer tape.

    For token ids `x` (a model with an Embedding, see `model_input`) the
    gradient is dS_c/de at the Embedding output e, 0 at padding positions
    (token id 0: padding is not a feature, so no method or penalty counts it).

    Args:
        split: the model split into logits and outputs.
        x: the input batch (float, or token ids).
        targets: int32 class indices, shape `(batch,)`.
        training: forwarded to the layers.
        score: optional `score(logits, targets) -> (batch,)` to differentiate
            in place of S_c (`target_scores`), e.g. the sum of the
            log-probabilities for the RRR penalty.

    Returns:
        `(outputs, gradient)` with `gradient` of the shape of `x` (of e for
        token ids; one gradient per input, in x's structure, for a model
        with several inputs).
    """
    split, x = model_input(split, x)
    return gradient_at(split, x, targets, training, score)


def inputs_gradient(split: LogitSplit, inputs, x, targets, names, training=False):
    """`(outputs, [dS_c/dx_k for k in names])` for a model with several
    inputs (`inputs`, its `ModelInputs`; `x` in its structure): at a float
    input its gradient, at an input of token ids the gradient at the output
    e_k of the Embedding that reads it (0 at padding, token id 0), computed
    under the caller's tapes (so the weights' gradients reach the Embedding).

    Raises:
        ValueError: naming an input of token ids that no Embedding reads
            directly.
    """
    tokens = [name for name in names if name not in inputs.floats]
    bound = EmbeddedInputs(split, inputs, x, input_embeddings(inputs, tokens))
    x_e = bound.embed()
    flat = tf.nest.flatten(x_e)
    indices = [inputs.names.index(name) for name in names]
    outputs, gradients = gradient_at(
        bound, x_e, targets, training, wrt=[flat[i] for i in indices]
    )
    return outputs, [
        g if i not in bound.layers else tf.where(bound.padding(i)[..., None], 0.0, g)
        for g, i in zip(gradients, indices, strict=True)
    ]


def gradient_at(split, x, targets, training: bool = False, score=None, wrt=None):
    """`(outputs, d score / dx)` for a split already bound to its input
    (`model_input`): `x` is the float input, or e for token ids.

    The forward pass runs at `x`, so `x` may be any point of the input space
    (an interpolation between a sample and a reference, for expected
    gradients). `score` as in `input_gradient`; `wrt`: the tensors to
    differentiate with respect to, in place of `x` (for several inputs; no
    padding is zeroed then).
    """
    sources = x if wrt is None else wrt
    score = target_scores if score is None else score
    # float16 backprop flushes small gradients to zero: the score is scaled
    # by a power of two (exact) and the gradient, of x's dtype (float32 under a
    # mixed policy), unscaled.
    with tf.GradientTape() as tape:
        tape.watch(sources)
        logits, outputs = split(x, training=training)
        scores = score(logits, targets)
        scale = FLOAT16_GRADIENT_SCALE if scores.dtype == tf.float16 else 1.0
        if scale != 1.0:
            scores = scores * tf.constant(scale, scores.dtype)
    gradient = tape.gradient(
        scores, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    if wrt is None:  # padding is fixed on x's structure
        gradient = split.fix_padding(gradient)
    if scale != 1.0:
        gradient = tf.nest.map_structure(lambda g: g / scale, gradient)
    return outputs, gradient
