"""Model-parameter randomisation test (Adebayo et al., NeurIPS 2018, "Sanity
Checks for Saliency Maps", Sec. 3.1, cascading randomisation).

A copy of the model has the weights of its layers re-initialised one layer
after another, from the logits towards the input, cumulatively: after step k
the k layers nearest the output are random. After each step the attribution
maps of the randomised copy are compared with those of the original model.
A method whose maps explain the model must give dissimilar maps once the
weights it explains are gone; a method whose maps stay similar (an edge
detector, the input itself) fails the sanity check.

For layers L_1, ..., L_K (L_1 nearest the output), parameters theta and
theta^(k) = theta with the variables of L_1, ..., L_k re-initialised:

    s_k(x) = rho( |R(theta, x)|, |R(theta^(k), x)| )

over the features of one sample's map (its elements; for token ids, its real
tokens), with rho Spearman's rank correlation (the Pearson correlation of the
average ranks, ties sharing their mean rank) or Pearson's, and the absolute
value dropped when `absolute=False`. The curve is the mean of s_k over the
samples whose correlation is defined (neither map constant, both finite).
There is no step 0: the unrandomised model's similarity with itself is 1 by
construction for a deterministic method, so `similarity[k - 1]` is s_k.

Re-initialisation rule (reproducible; the model passed in is never changed):
the copy is `keras.models.clone_model(model)` with `model.get_weights()`. The
variables re-initialised in a layer are those it creates as trainable
(kernels, biases, embeddings, recurrent kernels, BatchNormalization's and
LayerNormalization's gamma and beta), also when the layer is frozen; its
non-trainable state (BatchNormalization's moving mean and variance, seed
states) is left unchanged. The i-th of them (0-based, in `layer.weights`
order) is drawn by the layer's own initializer for it (the attribute
`<variable name>_initializer`, or `<name>_initializer` for a variable
`<name>_kernel`, e.g. `recurrent_initializer`; looked up on the sublayer that
owns the variable), re-created from its config with the seed

    zlib.crc32(f"{seed}/{layer.name}/{i}".encode()) % 2**31

and called with the variable's shape and dtype; a variable without such an
initializer (or one that cannot be re-created from its config) gets
`keras.initializers.GlorotUniform` with that seed. Biases thus go back to
their initial value (usually zeros). The seed depends on the layer's name, not
on its step, so a layer gets the same random weights whatever the cascade.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._keras.graph import is_graph_model
from keras_attreg._keras.variables import owned_trainable_variables
from keras_attreg._logits import attributed_embedding, split_logits, unwrap
from keras_attreg._validation import check_choice, check_int, check_targets
from keras_attreg.attributions._utils import DEFAULT_BATCH_SIZE
from keras_attreg.evaluation._batches import (
    attributed_batches,
    data_source,
    json_list,
    label_of,
    measured_inputs,
    resolve_method,
    standard_error,
)

MEASURES = ("spearman", "pearson")

# Pearson on raw maps is undefined when a map is constant up to float32
# round-off: std <= _CONSTANT_TOLERANCE * max|value| (as in Sensitivity-n).
_CONSTANT_TOLERANCE = 1e-6


@dataclasses.dataclass
class RandomisationResult:
    """The similarity curve of a cascading model-parameter randomisation.

    Attributes:
        layers: names of the layers randomised, in randomisation order (step k
            has randomised `layers[:k]`).
        similarity: mean similarity over the samples where it is defined,
            after each step, shape (K,) (NaN where no sample has one).
        per_sample: similarity of each sample after each step, shape
            (samples, K); NaN where undefined (a constant or non-finite map).
        undefined: number of samples with an undefined similarity, per step.
        measure: "spearman" or "pearson".
        absolute: whether |maps| were compared.
        label: the name of the attribution method (or the label given).
    """

    layers: list
    similarity: np.ndarray
    per_sample: np.ndarray
    undefined: np.ndarray
    measure: str = "spearman"
    absolute: bool = True
    label: str = ""

    @property
    def method(self) -> str:
        """The attribution method's name (same as `label`)."""
        return self.label

    def standard_error(self) -> np.ndarray:
        """Standard error of `similarity` across samples, per step, shape (K,).

            SE_k = std(s_k, ddof=1) / sqrt(m_k)

        over the m_k samples whose similarity is defined (NaN where m_k < 2).
        """
        return standard_error(self.per_sample)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN written as None)."""

        return {
            "layers": list(self.layers),
            "similarity": json_list(self.similarity),
            "standard_error": json_list(self.standard_error()),
            "undefined": [int(u) for u in self.undefined],
            "num_samples": int(self.per_sample.shape[0]),
            "measure": self.measure,
            "absolute": bool(self.absolute),
            "label": self.label,
        }

    def plot(self, path, *others: RandomisationResult, label: str | None = None):
        """Writes this curve, and `others` for comparison, to one image file.

        The x axis is the cascade (tick k: `layers[:k]` randomised), the y axis
        the mean similarity, with a band of one standard error across samples.
        Each curve is labelled with its result's `label` (`label` renames this
        one). `others` must have randomised the same layers.

        Returns:
            The `matplotlib.figure.Figure`.

        Raises:
            ValueError: a result of `others` randomised other layers.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        for other in others:
            if list(other.layers) != list(self.layers):
                raise ValueError(
                    "Invalid value for argument others: expected results that "
                    f"randomised the same layers {list(self.layers)}. Received: "
                    f"a result for layers {list(other.layers)}"
                )
        this = self if label is None else dataclasses.replace(self, label=label)
        steps = np.arange(1, len(self.layers) + 1)
        figure = Figure(figsize=(max(5.0, 0.6 * len(steps) + 2.0), 3.8))
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        for result in (this, *others):
            (line,) = ax.plot(
                steps, result.similarity, marker="o", ms=3, label=result.label
            )
            error = result.standard_error()
            ax.fill_between(
                steps,
                result.similarity - error,
                result.similarity + error,
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(steps)
        ax.set_xticklabels(
            [f"+{name}" for name in self.layers], rotation=45, ha="right", fontsize=8
        )
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("layers randomised (cumulative, from the output)")
        measure = "Spearman" if self.measure == "spearman" else "Pearson"
        ax.set_ylabel(f"mean {measure} of {'|maps|' if self.absolute else 'maps'}")
        ax.set_title("Cascading randomisation (bands: ±1 standard error)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return figure


def _all_layers(model) -> list:
    """Every layer of `model`, pre-order, nested functional/Sequential models
    listed and then walked into (the same order for a model and its clone)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if is_graph_model(layer):
            found.extend(_all_layers(layer))
    return found


def _initializer(owner, variable):
    """The initializer `owner` holds for `variable`, else None."""
    name = variable.name
    names = [f"{name}_initializer"]
    if name.endswith("_kernel"):
        names.append(f"{name[: -len('_kernel')]}_initializer")
    for attribute in names:
        initializer = getattr(owner, attribute, None)
        if isinstance(initializer, keras.initializers.Initializer):
            return initializer
    return None


def variable_seed(seed: int, layer_name: str, index: int) -> int:
    """The seed of the `index`-th re-initialised variable of a layer."""
    return zlib.crc32(f"{seed}/{layer_name}/{index}".encode()) % 2**31


def _seeded(initializer, seed: int):
    """`initializer` re-created with `seed`; Glorot uniform when it has none."""
    if initializer is None:
        return keras.initializers.GlorotUniform(seed=seed)
    config = initializer.get_config()
    if "seed" not in config:
        return initializer  # deterministic (Zeros, Ones, Constant, ...)
    try:
        return type(initializer).from_config({**config, "seed": seed})
    except (TypeError, ValueError):
        return keras.initializers.GlorotUniform(seed=seed)


def randomise_layer(layer, seed: int) -> None:
    """Re-initialises, in place, the variables of `layer` created as trainable
    (the rule of the module docstring)."""
    for index, (owner, variable) in enumerate(owned_trainable_variables(layer)):
        initializer = _seeded(
            _initializer(owner, variable), variable_seed(seed, layer.name, index)
        )
        variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))


def _chosen_layers(model, layers) -> list[int]:
    """Positions in `_all_layers(model)` of the layers to randomise, in order."""
    every = _all_layers(model)
    if layers is None:
        units = [
            position
            for position, layer in enumerate(every)
            if not is_graph_model(layer) and owned_trainable_variables(layer)
        ]
        if not units:
            raise ValueError(
                f"Invalid value for argument model: expected a model with weights "
                f"to randomise. Received: model {model.name!r} without weights"
            )
        return units[::-1]
    if isinstance(layers, str):
        layers = [layers]
    if (
        not isinstance(layers, Sequence)
        or not layers
        or not all(isinstance(name, str) for name in layers)
    ):
        raise ValueError(
            "Invalid value for argument layers: expected a non-empty list of "
            f"layer names, or None. Received: layers={layers!r}"
        )
    named = {}
    for position, layer in enumerate(every):
        named.setdefault(layer.name, position)
    candidates = [layer.name for layer in every if owned_trainable_variables(layer)]
    positions = []
    for name in layers:
        if name not in named or not owned_trainable_variables(every[named[name]]):
            raise ValueError(
                "Invalid value for argument layers: expected names of layers of "
                f"model {model.name!r} that have weights (one of {candidates}). "
                f"Received: layers={list(layers)!r} (with {name!r})"
            )
        if named[name] in positions:
            raise ValueError(
                "Invalid value for argument layers: expected each layer once. "
                f"Received: layers={list(layers)!r} ({name!r} repeated)"
            )
        positions.append(named[name])
    return positions


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties sharing their mean rank) along axis 1."""
    rows, count = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    index = np.broadcast_to(np.arange(count), (rows, count))
    starts = np.ones((rows, count), bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones((rows, count), bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, index, count - 1)[:, ::-1], axis=1)[
        :, ::-1
    ]
    ranks = np.empty((rows, count))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _correlation(a: np.ndarray, b: np.ndarray, measure: str) -> np.ndarray:
    """Row-wise Spearman or Pearson correlation of (rows, features) arrays;
    NaN for rows with a constant or non-finite map."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = np.where(finite[:, None], a, 0.0), np.where(finite[:, None], b, 0.0)
    if measure == "spearman":
        constant_a = (a == a[:, :1]).all(axis=1)
        constant_b = (b == b[:, :1]).all(axis=1)
        a, b = _ranks(a), _ranks(b)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    std_a, std_b = np.sqrt((a**2).mean(axis=1)), np.sqrt((b**2).mean(axis=1))
    if measure == "pearson":
        constant_a = std_a <= _CONSTANT_TOLERANCE * np.abs(a).max(axis=1)
        constant_b = std_b <= _CONSTANT_TOLERANCE * np.abs(b).max(axis=1)
    undefined = constant_a | constant_b | ~finite | (std_a == 0) | (std_b == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = (a * b).mean(axis=1) / (std_a * std_b)
    return np.where(undefined, np.nan, np.clip(correlation, -1.0, 1.0))


def _batch_similarity(x, original, randomised, measure: str, tokens: bool):
    """Similarity of each sample's two maps in one batch, shape (batch,)."""
    if not tokens:
        size = original.shape[0]
        return _correlation(
            original.reshape(size, -1), randomised.reshape(size, -1), measure
        )
    real = x != 0
    return np.array(
        [
            _correlation(o[r][None], m[r][None], measure)[0]
            for o, m, r in zip(original, randomised, real, strict=True)
        ]
    )


def model_randomisation(
    model: keras.Model,
    data,
    method,
    similarity: str = "spearman",
    absolute: bool = True,
    layers=None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 0,
    label: str | None = None,
    embedding_layer: str | None = None,
    input_name: str | None = None,
) -> RandomisationResult:
    """Cascading model-parameter randomisation test (Adebayo et al. 2018).

    The layers L_1, ..., L_K are re-initialised one after another in a copy of
    `model` (cumulatively: step k has L_1..L_k random), and after each step

        s_k(x) = rho( |R(theta, x)|, |R(theta^(k), x)| )

    is taken for every sample, with R the maps of `method` and rho Spearman's
    rank correlation (or Pearson's) over the features of a sample's map. The
    re-initialisation rule (each variable's own initializer, seeded from
    `seed` and the layer's name; BatchNormalization's moving statistics left
    as they are) is in the module docstring. `model` itself is never changed.
    A faithful method's similarity falls towards 0 as the cascade proceeds;
    one that stays near 1 does not depend on the weights it claims to explain.

    Args:
        model: a functional or Sequential Keras model ending in logits (or
            softmax: the maps are taken on the logit as everywhere in this
            package). An `AttributionRegularizedModel` stands for its base
            model.
        data: `(x, targets)` arrays, a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a generator of `(x, targets)` batches.
            It is read once and its batches are kept for every step.
        method: an attribution method `method(model, x, targets)` or its name
            (`"saliency"`, ...). Precomputed maps are refused: every
            randomised copy needs maps of its own.
        similarity: "spearman" (rank correlation, ties averaged) or "pearson".
        absolute: compare |maps| (as Adebayo et al. do for most methods).
        layers: names of the layers to randomise, in the order they are
            randomised (a nested model's name randomises all its layers in
            one step); default: every layer with weights, nested
            functional/Sequential models walked into, from the output
            towards the input.
        seed: seed of the re-initialisation.
        batch_size: samples per call of `method`.
        verbose: 1 shows a progress bar over the steps, 0 is silent.
        label: the name of the method in results; default: its `__name__`.
        embedding_layer: for token ids, the name of the Embedding layer at
            which the maps are taken (as in `kar.attributions.saliency`). The
            maps are then one value per token, compared over each sample's
            real tokens (non-zero ids).

        input_name: for a model with several inputs (data's x a list or dict
            of arrays, as `fit` takes it), the input whose maps are compared
            (the method's map of that input). None for a model with one input.

    Returns:
        A `RandomisationResult`, with `similarity[k - 1]` the mean of s_k.

    Raises:
        ValueError: an invalid argument, named with the value received.

    Example:
        >>> from keras_attreg.attributions import saliency
        >>> result = model_randomisation(model, (x_test[:8], y_test[:8]), saliency)
        >>> result.layers
        ['logits', 'conv2', 'conv1']
        >>> result.similarity.shape, result.per_sample.shape
        ((3,), (8, 3))
        >>> bool(result.similarity[-1] < 0.9)
        True
        >>> figure = result.plot("randomisation.png")
    """
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    if not is_graph_model(model):
        raise ValueError(
            "Invalid value for argument model: expected a functional or "
            "Sequential keras.Model (it is copied with "
            "`keras.models.clone_model`). Received: model of type "
            f"{type(model).__name__}"
        )
    if not (isinstance(method, str) or callable(method)):
        raise ValueError(
            "Invalid value for argument method: expected an attribution method "
            "`method(model, x, targets)` or a method's name; precomputed maps "
            "cannot be used, since every randomised copy needs its own maps. "
            f"Received: method of type {type(method).__name__} with shape "
            f"{tuple(np.shape(method))}"
        )
    measure = check_choice("similarity", similarity, MEASURES)
    if not isinstance(absolute, (bool, np.bool_)):
        raise ValueError(
            "Invalid value for argument absolute: expected a boolean. "
            f"Received: absolute={absolute!r}"
        )
    seed = check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, low=1)
    verbose = check_int("verbose", verbose, low=0)
    inputs = measured_inputs(model, input_name, "model randomisation")
    positions = _chosen_layers(model, layers)
    split = split_logits(model, embedding_layer=embedding_layer)
    tokens = inputs is None and split.tokens is not None
    method, _ = resolve_method(model, method, tokens, embedding_layer, "method")
    label = label_of(method, label)

    source = data_source(data, tokens, inputs, input_name)
    stored = list(source.batches(batch_size))
    classes = split.num_classes(tf.nest.flatten(stored[0][0])[0].shape)
    for _, t_batch in stored:
        check_targets(t_batch, classes)

    def maps_of(copy):
        source = data_source(iter(stored), tokens, inputs, input_name)
        return [
            np.abs(m.numpy()) if absolute else m.numpy()
            for _, _, m in attributed_batches(
                copy, source, method, None, batch_size, name="method"
            )
        ]

    original = maps_of(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy_layers = _all_layers(copy)
    progress = keras.utils.Progbar(len(positions), verbose=verbose, unit_name="step")
    columns = []
    for step, position in enumerate(positions):
        randomise_layer(copy_layers[position], seed)
        randomised = maps_of(copy)
        columns.append(
            np.concatenate(
                [
                    _batch_similarity(
                        np.asarray(source.measured(x)), o, r, measure, tokens
                    )
                    for (x, _), o, r in zip(stored, original, randomised, strict=True)
                ]
            )
        )
        progress.update(step + 1)
    per_sample = np.stack(columns, axis=1)
    undefined = np.isnan(per_sample).sum(axis=0)
    defined = per_sample.shape[0] - undefined
    sums = np.nansum(per_sample, axis=0)
    mean = np.where(defined > 0, sums / np.maximum(defined, 1), np.nan)
    every = _all_layers(model)
    return RandomisationResult(
        layers=[every[position].name for position in positions],
        similarity=mean,
        per_sample=per_sample,
        undefined=undefined,
        measure=measure,
        absolute=bool(absolute),
        label=label,
    )
