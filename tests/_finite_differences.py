"""Central finite differences of a loss in one entry of a variable: the
independent oracle of the weight-gradient tests."""

from collections.abc import Callable

import numpy as np


def central_difference(
    loss: Callable[[], object], variable, index: tuple, h: float = 1e-6
) -> float:
    """(loss(w + h e_index) - loss(w - h e_index)) / 2h; `variable` restored."""
    start = variable.numpy()
    values = []
    for sign in (1, -1):
        shifted = start.copy()
        shifted[index] += sign * h
        variable.assign(shifted)
        values.append(float(np.asarray(loss())))
    variable.assign(start)
    return (values[0] - values[1]) / (2 * h)


def largest_and_median(gradient: np.ndarray) -> list[tuple]:
    """The indices of the largest |entry| and of one at the median (dead ReLU
    channels have exactly zero gradient: nothing to compare there)."""
    order = np.argsort(np.abs(gradient).ravel())
    return [
        np.unravel_index(flat, gradient.shape)
        for flat in (order[-1], order[len(order) // 2])
    ]
