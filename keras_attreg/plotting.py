"""Figures: attribution map grids and Sensitivity-n curves, written to image files.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no
display needed) and saved with `savefig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def map_image(attribution: np.ndarray) -> np.ndarray:
    """2-D display of one map: mean of |R| over the channel axis if any."""
    magnitude = np.abs(attribution)
    return magnitude.mean(axis=-1) if magnitude.ndim == 3 else magnitude


def plot_attribution_maps(
    maps: Mapping[str, np.ndarray],
    path,
    images: np.ndarray | None = None,
    cmap: str = "inferno",
    cell_size: float = 1.6,
) -> None:
    """Grid of attribution maps: rows = samples, columns = methods.

    Each cell shows mean_c |R_{h,w,c}| (Ancona et al.'s display), scaled to its
    own maximum.

    Args:
        maps: method name -> attributions of shape (samples, H, W[, C]), all
            with the same number of samples.
        path: output file (the format follows the suffix, e.g. ".png").
        images: optional inputs (samples, H, W[, C]) shown in a first column.
        cmap: matplotlib colour map of the maps.
        cell_size: size of one cell in inches.

    Example:
        >>> s = kar.attributions.saliency(model, x_test[:4], y_test[:4])
        >>> ig = kar.attributions.integrated_gradients(model, x_test[:4], y_test[:4])
        >>> plot_attribution_maps({"saliency": s, "IG": ig}, "maps.png",
        ...                       images=x_test[:4])
    """
    arrays = {name: np.asarray(values) for name, values in maps.items()}
    if not arrays:
        raise ValueError(
            "Invalid value for argument maps: expected at least one method."
        )
    counts = {name: values.shape[0] for name, values in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(
            "Invalid value for argument maps: expected the same number of samples "
            f"for every method. Received: {counts}"
        )
    rows = next(iter(counts.values()))
    columns = [("input", None)] if images is not None else []
    columns += list(arrays.items())
    figure = Figure(figsize=(cell_size * len(columns), cell_size * rows))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for row in range(rows):
        for column, (name, values) in enumerate(columns):
            ax = axes[row, column]
            if values is None:
                image = np.asarray(images[row], dtype=float)
                if image.ndim == 3 and image.shape[-1] == 1:
                    image = image[..., 0]
                low, high = image.min(), image.max()
                image = (image - low) / (high - low) if high > low else image * 0
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            else:
                ax.imshow(map_image(values[row]), cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_sensitivity_n(results, path) -> Figure:
    """Sensitivity-n curves in one figure: mean correlation against n (log n).

    Each curve is the mean over samples, drawn with a band of one standard
    error across samples (mean +- std / sqrt(samples), over the samples whose
    correlation is defined) when the result holds per-sample values.

    Args:
        results: a sequence of `SensitivityNResult`s, each labelled with its
            `label` (the method's name), or a mapping label -> result. A
            result is any object with `n_values`, `correlation` and `absolute`
            (a band needs `standard_error()`).
        path: output file (the format follows the suffix, e.g. ".png").

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> from keras_attreg.attributions import gradient_x_input, saliency
        >>> from keras_attreg.evaluation import sensitivity_n
        >>> data = (x_test[:4], y_test[:4])
        >>> results = [sensitivity_n(model, data, m, n_values=[1, 10],
        ...                          num_subsets=8, verbose=0)
        ...            for m in (gradient_x_input, saliency)]
        >>> figure = plot_sensitivity_n(results, "sn.png")
        >>> figure.axes[0].get_legend_handles_labels()[1]
        ['gradient_x_input', 'saliency']
    """
    if isinstance(results, Mapping):
        results = results.items()
    else:
        results = [(result.label, result) for result in results]
    figure = Figure(figsize=(5, 3.5))
    ax = figure.subplots()
    absolute = False
    for label, result in results:
        (line,) = ax.plot(
            result.n_values, result.correlation, marker="o", ms=3, label=label
        )
        if hasattr(result, "standard_error"):
            error = result.standard_error()
            ax.fill_between(
                result.n_values,
                result.correlation - error,
                result.correlation + error,
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        absolute = absolute or result.absolute
    ax.set_xscale("log")
    ax.set_xlabel("n (features removed)")
    ax.set_ylabel("mean |Pearson|" if absolute else "mean Pearson correlation")
    ax.set_title("Sensitivity-n (bands: ±1 standard error)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return figure


def plot_perturbation_curves(results, path) -> Figure:
    """Deletion or insertion curves in one figure: mean score against the
    fraction of features removed or inserted, bands of one standard error.

    Args:
        results: a sequence of `PerturbationCurveResult`s (one mode), each
            labelled with its `label` and its area under the curve.
        path: output file (the format follows the suffix).

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> from keras_attreg.evaluation import deletion
        >>> results = [deletion(model, (x_test[:4], y_test[:4]), m, step=0.5)
        ...            for m in ("gradient_x_input", "saliency")]
        >>> figure = plot_perturbation_curves(results, "deletion.png")
        >>> labels = figure.axes[0].get_legend_handles_labels()[1]
        >>> [label.split(" (area")[0] for label in labels]
        ['gradient_x_input', 'saliency']
    """
    figure = Figure(figsize=(5, 3.5))
    ax = figure.subplots()
    for result in results:
        (line,) = ax.plot(
            result.fractions,
            result.curve,
            marker="o",
            ms=3,
            label=f"{result.label} (area {result.area():.3f})",
        )
        error = result.standard_error()
        ax.fill_between(
            result.fractions,
            result.curve - error,
            result.curve + error,
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    modes = sorted({result.mode for result in results})
    verb = {"deletion": "removed", "insertion": "inserted"}
    ax.set_xlabel(
        "fraction of features " + (verb[modes[0]] if len(modes) == 1 else "changed")
    )
    ax.set_ylabel(results[0].score if results else "score")
    ax.set_title(f"{' / '.join(modes)} (bands: ±1 standard error)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return figure


def plot_wrong_reason(results, names, path) -> Figure:
    """Share of attribution mass inside the annotated region, per class.

    One group of bars per class and one for all examples ("all", with one
    standard error), one bar per result; a dashed line at the region's mean
    share of the input (chance: an attribution spread evenly).

    Args:
        results: `WrongReasonResult`s (`kar.evaluation.wrong_reason_score`).
        names: one name per result (the legend).
        path: output file (the format follows the suffix, e.g. ".png").

    Returns:
        The `matplotlib.figure.Figure`.

    Example:
        >>> from keras_attreg.evaluation import wrong_reason_score
        >>> masks = np.zeros((8, 28, 28))
        >>> masks[:, :4, :4] = 1  # a corner that must not be the reason
        >>> data = (x_test[:8], y_test[:8])
        >>> saliency = wrong_reason_score(model, data, masks)
        >>> gxi = wrong_reason_score(model, data, masks, method="gradient_x_input")
        >>> figure = plot_wrong_reason([saliency, gxi], ["saliency", "grad x input"],
        ...                            "wrong_reason.png")
        >>> len(figure.axes)
        1
    """
    classes = sorted({c for result in results for c in result.per_class()})
    groups = [str(c) for c in classes] + ["all"]
    width = 0.8 / max(len(results), 1)
    inches = min(14.0, max(5.0, 0.16 * len(groups) * len(results) + 2))
    figure = Figure(figsize=(inches, 3.5))
    ax = figure.subplots()
    for i, (result, name) in enumerate(zip(results, names, strict=True)):
        per_class = result.per_class()
        values = [per_class.get(c, np.nan) for c in classes] + [result.overall]
        errors = [0.0] * len(classes) + [result.standard_error()]
        positions = np.arange(len(groups)) + (i - (len(results) - 1) / 2) * width
        ax.bar(positions, values, width, yerr=errors, label=name)
    chance = np.mean(np.concatenate([r.chance for r in results]))
    ax.axhline(chance, color="k", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_xlabel("true class")
    ax.set_ylabel("share of |attribution| in region")
    tallest = max(
        [
            chance,
            *(r.overall for r in results),
            *(v for r in results for v in r.per_class().values()),
        ]
    )
    ax.set_ylim(0, min(1.0, 1.25 * tallest) if tallest > 0 else 1.0)
    ax.set_title("Attribution mass on the annotated region", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return figure


def token_heatmap_figure(
    words: Sequence[Sequence[str]],
    maps: Mapping[str, np.ndarray],
    line_chars: int = 80,
    max_tokens: int = 80,
) -> Figure:
    """Texts coloured by token attribution: one panel per (sample, method).

    Each word's background is R_t / max_t |R_t| of its sample on a blue (< 0),
    white (0), red (> 0) scale; words are set in a monospaced font and
    wrapped at `line_chars` characters.

    Args:
        words: the tokens of each sample, as strings (padding left out).
        maps: method name -> token attributions, shape (samples, seq_len),
            aligned with `words`.
        line_chars: characters per line.
        max_tokens: the first tokens shown per sample.

    Returns:
        The figure.

    Example:
        >>> figure = token_heatmap_figure(
        ...     [["not", "bad"]], {"saliency": np.array([[-0.5, 1.0]])})
        >>> len(figure.axes[0].texts)  # the title and two words
        3
    """
    from matplotlib import colormaps

    colours = colormaps["bwr"]
    panels = [(i, name) for i in range(len(words)) for name in maps]
    layouts = []
    for sample, name in panels:
        tokens = list(words[sample])[:max_tokens]
        values = np.asarray(maps[name][sample][: len(tokens)], "float64")
        peak = np.abs(values).max() if values.size else 0.0
        scaled = values / peak if peak > 0 else values
        lines, column = 0, 0
        placed = []
        for token, value in zip(tokens, scaled, strict=True):
            if column and column + len(token) > line_chars:
                lines, column = lines + 1, 0
            placed.append((column, lines, token, value))
            column += len(token) + 1
        layouts.append((sample, name, placed, lines + 1))
    height = sum(rows + 1.6 for *_, rows in layouts) * 0.22
    figure = Figure(figsize=(line_chars * 0.062, max(height, 1.0)))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    total = sum(rows + 1.6 for *_, rows in layouts)
    axes.set_xlim(0, line_chars)
    axes.set_ylim(total, 0)
    top = 0.0
    for sample, name, placed, rows in layouts:
        axes.text(0, top + 0.5, f"sample {sample}: {name}", fontsize=8, weight="bold")
        for column, line, token, value in placed:
            axes.text(
                column,
                top + 1.5 + line,
                token,
                family="monospace",
                fontsize=7,
                bbox={
                    "facecolor": colours(0.5 + 0.5 * value),
                    "edgecolor": "none",
                    "pad": 0.5,
                },
            )
        top += rows + 1.6
    return figure


def plot_token_heatmaps(
    words: Sequence[Sequence[str]], maps: Mapping[str, np.ndarray], path, **options
) -> None:
    """Writes `token_heatmap_figure(words, maps, **options)` to an image file.

    Example:
        >>> plot_token_heatmaps([["a", "fine", "film"]],
        ...                     {"saliency": np.array([[0.1, 0.9, -0.3]])},
        ...                     "tokens.png")
    """
    token_heatmap_figure(words, maps, **options).savefig(path, dpi=120)
