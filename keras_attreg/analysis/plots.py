"""Figures of the activation analysis: densities (Fig. 3), filter heatmaps (Fig. 2).

Drawn on `matplotlib.figure.Figure` objects (no pyplot state, no display
needed) and saved with `savefig`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from keras_attreg._validation import check_int

_MODEL_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:orange")


def _layers_of(activations_by_model: Mapping[str, Mapping[str, np.ndarray]]):
    """Number of layers, checked equal across models (layers go by position)."""
    counts = {label: len(layers) for label, layers in activations_by_model.items()}
    if not counts or len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(
            "Invalid value for argument activations_by_model: expected one or more "
            "models with the same (non-zero) number of layers. Received: "
            f"layer counts {counts}"
        )
    return next(iter(counts.values()))


def plot_activation_densities(
    activations_by_model: Mapping[str, Mapping[str, np.ndarray]],
    path,
    bins: int = 60,
) -> None:
    """Density of the activation values of each layer, one curve per model (Fig. 3).

    The density is a normalised histogram (`np.histogram(density=True)`) over a
    range shared by the models of a panel; the y axis is logarithmic so the
    tail stays visible next to the mass of rectified zeros.

    Args:
        activations_by_model: `{model label: {layer name: activations}}`, e.g.
            `{"conventional": layer_activations(a, x), "FBI": ...}`; layers are
            matched by position.
        path: output file (format from the suffix, e.g. ".png").
        bins: histogram bins per panel.

    Example:

    >>> from keras_attreg.analysis import layer_activations
    >>> acts = layer_activations(model, x_test)
    >>> plot_activation_densities({"conventional": acts, "FBI": acts},
    ...                           "densities.png")
    """
    bins = check_int("bins", bins, low=1)
    count = _layers_of(activations_by_model)
    figure = Figure(figsize=(3.2 * count, 2.8), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    models = {
        label: list(layers.items()) for label, layers in activations_by_model.items()
    }
    for index, axis in enumerate(axes):
        top = max(float(np.max(layers[index][1])) for layers in models.values())
        for color, (label, layers) in zip(_MODEL_COLORS, models.items(), strict=False):
            name, values = layers[index]
            density, edges = np.histogram(
                np.ravel(values), bins=bins, range=(0.0, max(top, 1e-12)), density=True
            )
            axis.plot(
                (edges[:-1] + edges[1:]) / 2,
                density,
                color=color,
                label=f"{label} ({name})",
            )
        axis.set_yscale("log")
        axis.set_title(f"conv{index + 1}")
        axis.set_xlabel("activation")
        axis.set_ylabel("density")
        axis.legend(fontsize="x-small")
    figure.savefig(path, dpi=100)


def tile_filters(maps: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tiles per-filter maps `(H, W, C)` into one image, filters row by row.

    Cells left over in the last row are NaN (drawn blank); a NaN line
    separates the cells.

    >>> tile_filters(np.ones((2, 2, 3)), columns=2).shape
    (5, 5)
    """
    height, width, filters = maps.shape
    rows = -(-filters // columns)
    columns = min(columns, filters)
    tiled = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for f in range(filters):
        r, c = divmod(f, columns)
        tiled[
            r * (height + 1) : r * (height + 1) + height,
            c * (width + 1) : c * (width + 1) + width,
        ] = maps[..., f]
    return tiled


def plot_filter_heatmaps(
    activations_by_model: Mapping[str, Mapping[str, np.ndarray]],
    path,
    columns: int = 8,
    cmap: str = "RdYlGn_r",
) -> None:
    """Mean activation map of every filter, per layer and model (Fig. 2).

    Each layer's activations `(samples, H, W, C)` are averaged over the
    samples (pass one image for the paper's figure) and tiled one cell per
    filter. Rows are layers, columns models; the colour range is shared by
    the models of a row ("normalized within same range"), red high, green 0.

    Args:
        activations_by_model: `{model label: {layer name: activations}}`,
            layers matched by position.
        path: output file (format from the suffix, e.g. ".png").
        columns: filters per row of a tile.
        cmap: matplotlib colour map.
    """
    columns = check_int("columns", columns, low=1)
    count = _layers_of(activations_by_model)
    tiles = {
        label: [tile_filters(np.mean(a, axis=0), columns) for a in layers.values()]
        for label, layers in activations_by_model.items()
    }
    figure = Figure(figsize=(4.5 * len(tiles), 1.8 * count + 0.6), layout="constrained")
    axes = figure.subplots(count, len(tiles), squeeze=False)
    for row in range(count):
        top = max(float(np.nanmax(images[row])) for images in tiles.values())
        for column, (label, images) in enumerate(tiles.items()):
            axis = axes[row, column]
            image = axis.imshow(images[row], cmap=cmap, vmin=0.0, vmax=max(top, 1e-12))
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(label)
            if column == 0:
                axis.set_ylabel(f"conv{row + 1}")
        figure.colorbar(image, ax=axes[row, :], shrink=0.8)
    figure.savefig(path, dpi=100)
