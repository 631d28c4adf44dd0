"""Models with several inputs: their inputs as the model takes them.

A user gives the inputs of `keras.Model([image, meta], ...)` the way `fit`
takes them: a list (or tuple) in the order of `model.inputs`, or a dict keyed
by the input names. Inside, every method works on one structure, the model's
own (`model.input`: a list, or a dict for a model built on a dict), through
`tf.nest`; the maps go back to the user in the structure they gave.
`EmbeddedInputs` takes token-id inputs at their Embedding outputs (as
`TokenSplit` does for one input); `InputView` makes S_c a function of one
input, the others held (what a metric perturbs).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._keras.embedding import embedding_output
from keras_attreg._tokens import input_embedding


class ModelInputs:
    """The inputs of a model with several inputs.

    Args:
        model: a built Keras model with more than one input.

    Attributes:
        names: the input names, in the order of `model.inputs` (for a model
            built on a dict of inputs, its keys).
        structure: the structure the model is called with (`model.input`).
        floats: the names of the float inputs (the others take token ids).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.structure = model.input
        self.names = [tensor.name for tensor in model.inputs]
        if isinstance(self.structure, dict):
            self.names = sorted(self.structure)  # `tf.nest`'s order
        self.dtypes = [
            keras.backend.standardize_dtype(tensor.dtype) for tensor in model.inputs
        ]
        self.floats = [
            name
            for name, dtype in zip(self.names, self.dtypes, strict=True)
            if dtype.startswith("float")
        ]

    def standardize(self, x, name: str = "x"):
        """`x` (a list or tuple in the order of `names`, or a dict keyed by
        them) in the model's own structure, its leaves as given."""
        if isinstance(x, dict):
            missing = [key for key in self.names if key not in x]
            unknown = [key for key in x if key not in self.names]
            if missing or unknown:
                raise ValueError(
                    f"Invalid value for argument {name}: expected a dict keyed by "
                    f"the input names of model {self.model.name!r} {self.names}. "
                    f"Received: {name} with keys {list(x)}"
                )
            flat = [x[key] for key in self.names]
        elif isinstance(x, (list, tuple)) and len(x) == len(self.names):
            flat = list(x)
        else:
            kind = type(x).__name__
            if isinstance(x, (list, tuple)):
                kind = f"{kind} of {len(x)} items"
            raise ValueError(
                f"Invalid value for argument {name}: model {self.model.name!r} has "
                f"{len(self.names)} inputs {self.names}, so expected a list of "
                f"{len(self.names)} arrays in that order or a dict keyed by those "
                f"names (as `fit` takes them). Received: {name} of type {kind}"
            )
        return tf.nest.pack_sequence_as(self.structure, flat)

    def convert(self, x, float_input, name: str = "x"):
        """`x` standardized (see `standardize`), each float input passed
        through `float_input` and each token-id input cast to int32."""
        x = self.standardize(x, name)
        flat = [
            float_input(value) if key in self.floats else tf.cast(value, tf.int32)
            for value, key in zip(tf.nest.flatten(x), self.names, strict=True)
        ]
        return tf.nest.pack_sequence_as(x, flat)

    def restore(self, maps, like):
        """`maps`, in the model's structure, in the structure of `like` (the
        user's `x`: a list, tuple or dict; for a dataset, its element's)."""
        flat = tf.nest.flatten(maps)
        if isinstance(like, dict):
            return {key: flat[self.names.index(key)] for key in like}
        return type(like)(flat) if isinstance(like, (list, tuple)) else maps

    def require_float(self, what: str):
        """Raises a ValueError naming the integer (token id) inputs: `what`
        (e.g. "saliency") is computed at float inputs only."""
        integer = [name for name in self.names if name not in self.floats]
        if integer:
            raise ValueError(
                f"Cannot attribute input(s) {integer} of model {self.model.name!r}: "
                f"they take {[self.dtypes[self.names.index(n)] for n in integer]} "
                f"values (token ids), and {what} of a model with several inputs "
                "is taken at its float inputs only (saliency, gradient_x_input, "
                "integrated_gradients, epsilon_lrp and deeplift_rescale take "
                "token ids at their Embedding)."
            )

    def chosen(
        self, names: list[str] | None, argument: str = "inputs", tokens=False
    ) -> list[str]:
        """`names` checked (default: every float input).

        Raises:
            ValueError: naming an unknown input, or one on integer values
                (token ids) unless `tokens`.
        """
        chosen = self.floats if names is None else list(names)
        unknown = [name for name in chosen if name not in self.names]
        if unknown:
            raise ValueError(
                f"Invalid value for argument {argument}: expected names of inputs "
                f"of model {self.model.name!r} (one of {self.names}); no input "
                f"is named {unknown}. Received: {argument}={names!r}"
            )
        integer = [name for name in chosen if name not in self.floats]
        if (integer and not tokens) or not chosen:
            raise ValueError(
                f"Invalid value for argument {argument}: expected float inputs of "
                f"model {self.model.name!r} (its float inputs: {self.floats}); "
                f"input(s) {integer} take integer values (token ids), where no "
                f"gradient is defined. Received: {argument}={names!r}"
            )
        return chosen

    def select(self, x, names: list[str] | None, argument: str = "inputs") -> list:
        """The tensors of `x` (in the model's structure) of the float inputs
        `names` (default: all), checked by `chosen`."""
        flat = tf.nest.flatten(x)
        return [flat[self.names.index(name)] for name in self.chosen(names, argument)]


class InputView:
    """S_c as a function of one input of a model with several inputs, the
    others held at the values of a bound batch (as `TokenSplit` makes S_c a
    function of the Embedding output): what a metric perturbs when it runs
    over the features of one input.

    Args:
        split: the model's `LogitSplit`.
        inputs: the model's `ModelInputs`.
        x: the bound batch, in the model's structure.
        name: the name of the input the view takes.
    """

    def __init__(self, split, inputs: ModelInputs, x, name: str):
        self.split, self.inputs, self.x, self.name = split, inputs, x, name
        self.value = inputs.select(x, [name], "input_name")[0]

    @property
    def model(self) -> keras.Model:
        return self.split.model

    def __call__(self, value, training: bool = False):
        """`(logits, outputs)` of the bound batch with input `name` = value."""
        flat = tf.nest.flatten(self.x)
        flat[self.inputs.names.index(self.name)] = value
        return self.split(tf.nest.pack_sequence_as(self.x, flat), training=training)

    def logits(self, value, training: bool = False):
        """The pre-softmax scores with input `name` = value."""
        return self(value, training=training)[0]

    def rows(self, indices) -> InputView:
        """The view bound to the samples `indices` (repeats allowed)."""
        rows = tf.nest.map_structure(lambda t: tf.gather(t, indices), self.x)
        return InputView(self.split.rows(indices), self.inputs, rows, self.name)

    def fix_padding(self, delta):
        """`delta`, as is: float inputs have no padding."""
        return delta

    def num_classes(self, input_shape=None) -> int:
        return self.split.num_classes(input_shape)


def input_embeddings(inputs: ModelInputs, names: list[str]) -> dict:
    """`{index in model.inputs: Embedding layer}` of the token-id inputs
    `names`, each read directly by one Embedding.

    Raises:
        ValueError: naming an input that no Embedding reads directly.
    """
    layers = {}
    for name in names:
        index = inputs.names.index(name)
        layer = input_embedding(inputs.model, inputs.model.inputs[index])
        if layer is None:
            raise ValueError(
                f"Cannot take the gradient at input {name!r} of model "
                f"{inputs.model.name!r}: it takes token ids, and no Embedding "
                "layer reads it directly (its gradient is taken at that layer's "
                "output)."
            )
        layers[index] = layer
    return layers


class EmbeddedInputs:
    """S_c of a model with several inputs as a function of its float inputs
    and of the outputs e_k of the Embedding layers that read its token-id
    inputs `embedded` (as `TokenSplit` does for a model with one input).

    Bound to a batch `x` (the model's structure), `split(x_e)` runs the model
    on `x` with each embedded input's Embedding returning e_k (its mask still
    derived from the ids) and the float inputs taken from `x_e`.

    Args:
        split: the model's `LogitSplit`.
        inputs: its `ModelInputs`.
        x: the bound batch.
        layers: `{index of the input in model.inputs: its Embedding}`, from
            `input_embeddings`.
    """

    def __init__(self, split, inputs: ModelInputs, x, layers: dict):
        self.split, self.inputs, self.x, self.layers = split, inputs, x, layers

    @property
    def model(self) -> keras.Model:
        return self.split.model

    def embed(self):
        """`x` with each embedded input's ids replaced by e_k = Embedding(ids)."""
        flat = tf.nest.flatten(self.x)
        for index, layer in self.layers.items():
            flat[index] = layer(flat[index])
        return tf.nest.pack_sequence_as(self.x, flat)

    @contextlib.contextmanager
    def feeding(self, x_e):
        """The model's inputs for `x_e`: the bound ids and the float inputs of
        `x_e`, with each embedded input's Embedding returning its e_k of `x_e`
        while the context is open."""
        flat, ids = tf.nest.flatten(x_e), tf.nest.flatten(self.x)
        with contextlib.ExitStack() as stack:
            for index, layer in self.layers.items():
                stack.enter_context(embedding_output(layer, flat[index]))
                flat[index] = ids[index]
            yield tf.nest.pack_sequence_as(x_e, flat)

    def __call__(self, x_e, training: bool = False):
        """`(logits, outputs)` of the bound ids with the Embedding outputs and
        float inputs of `x_e`."""
        with self.feeding(x_e) as fed:
            return self.split(fed, training=training)

    def logits(self, x_e, training: bool = False):
        return self(x_e, training=training)[0]

    def rows(self, indices) -> EmbeddedInputs:
        """The split bound to the samples `indices` (repeats allowed)."""
        rows = tf.nest.map_structure(lambda t: tf.gather(t, indices), self.x)
        return EmbeddedInputs(self.split, self.inputs, rows, self.layers)

    def padding(self, index: int) -> tf.Tensor:
        """True at the padding positions (id 0) of the `index`-th input."""
        return tf.equal(tf.nest.flatten(self.x)[index], 0)

    def fix_padding(self, delta):
        """`delta` (of x_e's structure) zeroed at padding positions of each
        embedded input: padding is not a feature."""
        flat = tf.nest.flatten(delta)
        for index in self.layers:
            pad = self.padding(index)[..., None]
            flat[index] = tf.where(pad, tf.zeros_like(flat[index]), flat[index])
        return tf.nest.pack_sequence_as(delta, flat)

    def token_maps(self, maps, per_token: str):
        """Embedding-level maps of the embedded inputs reduced to one value
        per token (summed, or averaged with `per_token="mean"`, over the
        embedding axis; 0 at padding); the float inputs' maps as they are."""
        reduce = tf.reduce_sum if per_token == "sum" else tf.reduce_mean
        flat = tf.nest.flatten(maps)
        for index in self.layers:
            values = reduce(flat[index], axis=-1)
            flat[index] = tf.where(self.padding(index), tf.zeros_like(values), values)
        return tf.nest.pack_sequence_as(maps, flat)

    def num_classes(self, input_shape=None) -> int:
        return self.split.num_classes(input_shape)


def model_inputs(model) -> ModelInputs | None:
    """The `ModelInputs` of a model with several inputs, None otherwise
    (one input, or a subclassed model whose inputs are not known)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return ModelInputs(model) if inputs and len(inputs) > 1 else None


def one_array(x, owner: str, name: str = "x_val"):
    """`np.asarray(x)` for `owner`, which takes models with one input: inputs
    given per input (a dict, or a list of arrays of different shapes) are
    refused with a ValueError naming `owner`."""
    per_input = isinstance(x, dict) or (
        isinstance(x, (list, tuple)) and len({np.shape(value) for value in x}) > 1
    )
    if per_input:
        raise ValueError(
            f"Invalid value for argument {name}: {owner} takes a batch of one "
            "input (images or token ids), not the inputs of a model with several "
            "inputs. Attribute such a model with the functions of "
            f"`keras_attreg.attributions` instead. Received: {name} of type "
            f"{type(x).__name__}"
        )
    return np.asarray(x)
