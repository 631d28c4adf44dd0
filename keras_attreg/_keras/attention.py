"""MultiHeadAttention run with its attention probabilities replaced.

Reads Keras internals (`_softmax`, `_compute_attention`, `_flash_attention`): the
CP-LRP rule of `keras_attreg.relevance.attention` needs the layer's own
forward with softmax(QK^T) given from outside, which Keras does not expose.
"""

from __future__ import annotations

import contextlib
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

    def explicit(query, key, value, mask, training, scores, **kwargs):
        # asking for the scores selects Keras's explicit softmax path
        return compute(query, key, value, mask, training, True, **kwargs)

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
