"""MultiHeadAttention run with its attention probabilities replaced.

Reads Keras internals (`_softmax`, `_compute_attention`, `_flash_attention`): the
CP-LRP rule of `keras_attreg.relevance.attention` needs the layer's own
forward with softmax(QK^T) given from outside, which Keras does not expose.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable


@contextlib.contextmanager
def replaced_probabilities(layer, replace: Callable):
    """Within the block, `layer` (a MultiHeadAttention) computes its
    probabilities with its explicit softmax (never a fused dot-product or
    flash kernel) and uses `replace(probabilities)` in their place.

    Instance attributes are set past Keras's attribute tracking and removed
    afterwards, so the layer is left as it was."""
    softmax, compute = layer._softmax, layer._compute_attention

    def replaced(scores, mask=None):
        return replace(softmax(scores, mask=mask))

    takes_choice = "return_attention_scores" in inspect.signature(compute).parameters

    def explicit(query, key, value, mask=None, training=None, *rest, **kwargs):
        # Asking for the scores selects Keras's explicit softmax path: an
        # argument since Keras 3.9, the layer's attribute before.
        if takes_choice:
            kwargs.pop("return_attention_scores", None)
            return compute(query, key, value, mask, training, True, *rest[1:], **kwargs)
        asked = layer._return_attention_scores
        object.__setattr__(layer, "_return_attention_scores", True)
        try:
            return compute(query, key, value, mask, training)
        finally:
            object.__setattr__(layer, "_return_attention_scores", asked)

    flash = layer._flash_attention
    object.__setattr__(layer, "_softmax", replaced)
    object.__setattr__(layer, "_compute_attention", explicit)
    object.__setattr__(layer, "_flash_attention", False)
    try:
        yield
    finally:
        object.__setattr__(layer, "_softmax", softmax)
        object.__delattr__(layer, "_compute_attention")
        object.__setattr__(layer, "_flash_attention", flash)
