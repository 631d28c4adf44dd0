"""Deprecated home of `DelayedActivation`: use `keras_attreg.callbacks`.

Kept for one release; importing `DelayedActivation` from here warns.
"""

from __future__ import annotations

import warnings


def __getattr__(name: str):
    if name == "DelayedActivation":
        warnings.warn(
            "keras_attreg.training.callbacks.DelayedActivation moved to "
            "keras_attreg.callbacks.DelayedActivation (also kar.DelayedActivation); "
            "this import path will be removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        from keras_attreg.callbacks.delayed_activation import DelayedActivation

        return DelayedActivation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
