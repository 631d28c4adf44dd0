"""Running a model from its Embedding output e instead of its token ids.

`embedding_output(layer, e)` makes `layer(ids)` return `e` for the duration of
a forward pass: the model is then called on its token ids as usual, so every
graph (functional, Sequential, nested, subclassed) runs unchanged after the
Embedding, and Keras still derives the Embedding's mask (`mask_zero`) from
the ids and hands it to the layers downstream (e.g. an LSTM). This replaces
the layer's `call` on the instance, which relies on `Layer.__call__` looking
`call` up on the instance each time.
"""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def embedding_output(layer: keras.layers.Layer, value):
    """Within the block, calling `layer` returns `value` (shape checked)."""

    def call(inputs, *args, **kwargs):
        expected = (*inputs.shape, layer.output_dim)
        if tuple(value.shape) != tuple(expected) and None not in expected:
            raise ValueError(
                f"Embedding output of shape {tuple(value.shape)} given for token "
                f"ids of shape {tuple(inputs.shape)} (expected {expected})."
            )
        return value

    if "call" in vars(layer):
        raise RuntimeError(
            f"The Embedding layer {layer.name!r} is already being replaced: "
            "nested runs from its output are not supported."
        )
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        object.__delattr__(layer, "call")
