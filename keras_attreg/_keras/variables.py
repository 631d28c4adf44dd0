"""Which (sub)layer created each trainable variable: Keras's private layer
tracking (`_flatten_layers`, `_trainable_variables`), read here only."""

from __future__ import annotations


def sublayers(layer) -> list:
    """`layer` and the layers it holds, pre-order (a parent before its own)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return [layer]
    return list(flatten(include_self=True, recursive=True))


def owned_trainable_variables(layer) -> list:
    """`(owner, variable)` for each variable of `layer` created as trainable,
    in `layer.weights` order; `owner` is the (sub)layer that created it."""
    owned = {}
    for sub in sublayers(layer):
        trainable = getattr(sub, "_trainable_variables", None)
        if trainable is None:  # not a Keras 3 layer: fall back on the flags
            trainable = [v for v in sub.weights if v.trainable]
        for variable in trainable:
            owned[id(variable)] = sub  # the deepest owner wins (pre-order)
    found, seen = [], set()
    for variable in layer.weights:
        if id(variable) in owned and id(variable) not in seen:
            seen.add(id(variable))
            found.append((owned[id(variable)], variable))
    return found
