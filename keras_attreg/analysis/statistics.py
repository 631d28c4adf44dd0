"""Layer-wise activation statistics (Yoo et al., CVPR-W 2019, Table 1).

Per convolution layer, over the rectified activations a >= 0 of a dataset:

- `max`: the largest activation.
- `moment_skewness`: the skewness, read as the third standardised moment
  `E[(a - mu)^3] / sigma^3` (`scipy.stats.skew`). The primary reading of the
  paper's "skewness": it grows as the mass gathers at 0 under a long right
  tail (the paper: "more skewed to 0 ... the larger the skewness value is,
  the more skewed the distributions are") and, like the paper's Table 1
  values (0.603 to 2.576), it can fall below 1.
- `energy_skewness`: a documented alternative, the paper's wording read
  literally ("the inverse of the variance in the energy-normalized curves"):
  the activations divided by their root mean square, ã = a / sqrt(mean(a^2)),
  and `1 / Var(ã) = mean(a^2) / Var(a)`. For a >= 0 this is
  `1 + mean(a)^2 / Var(a) >= 1`, so it cannot give the paper's values below 1,
  and it falls as activations get sparser ([0, 0, 1, 1] gives 2, [0, 0, 0, 1]
  gives 4/3): the paper cannot have computed it.
- `squared_variation` (Var(a) / mean(a)^2) and `excess_kurtosis`: two more
  scale-free candidates that rise with sparsity, reported so that each
  reading can be held against Table 1's magnitudes (docs/fbi.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

from keras_attreg._keras.graph import run_graph, takes_training
from keras_attreg._logits import unwrap
from keras_attreg._validation import check_int
from keras_attreg.relevance import LAYERS_IN_K

_RECTIFIERS = (keras.layers.ReLU, keras.layers.Activation)
_PASSED_TO_RECTIFIER = (keras.layers.BatchNormalization, *_RECTIFIERS)


@dataclasses.dataclass(frozen=True)
class ActivationStatistics:
    """Table 1 statistics of one layer's activations.

    Attributes:
        layer: the convolution layer's name.
        max: the maximum activation.
        moment_skewness: the third standardised moment of a (the primary
            reading of the paper's skewness).
        energy_skewness: 1 / Var(a / sqrt(mean(a^2))) (the paper's wording
            read literally; >= 1, so not the paper's quantity).
        squared_variation: Var(a) / mean(a)^2.
        excess_kurtosis: E[(a - mu)^4] / sigma^4 - 3.
        zero_fraction: the share of activations that are exactly 0.
    """

    layer: str
    max: float
    moment_skewness: float
    energy_skewness: float
    squared_variation: float
    excess_kurtosis: float
    zero_fraction: float


_CONVOLUTIONS = tuple(layer for layer in LAYERS_IN_K if "Conv" in layer.__name__)


def _inference_calls(model: keras.Model, x) -> list[tuple]:
    """`model(x)` in inference mode, as `[(operation, inputs, outputs)]` in
    graph order (nested models entered)."""
    calls = []

    def run(operation, *args, **kwargs):
        if takes_training(operation):
            kwargs = {**kwargs, "training": False}
        outputs = operation(*args, **kwargs)
        inputs = [v for v in tf.nest.flatten((args, kwargs)) if tf.is_tensor(v)]
        calls.append((operation, inputs, tf.nest.flatten(outputs)))
        return outputs

    run_graph(model, x, run)
    return calls


def _observed(calls, names: list[str]) -> dict:
    """Maps each named convolution to the tensor where it is observed.

    A convolution with its own activation is observed at its output; one
    without at the output of the rectifier that follows it (after a
    BatchNormalization, if any, each the only reader of the tensor before),
    so that activations are rectified as in the paper's Fig. 3.
    """
    readers = {}
    for call in calls:
        for tensor in call[1]:
            readers.setdefault(tensor.ref(), []).append(call)
    observed = {}
    for operation, _, outputs in calls:
        if operation.name not in names:
            continue
        tensor = outputs[0]
        if operation.activation is keras.activations.linear:
            probe = tensor
            while len(readers.get(probe.ref(), [])) == 1:
                after, _, after_outputs = readers[probe.ref()][0]
                if not isinstance(after, _PASSED_TO_RECTIFIER):
                    break
                probe = after_outputs[0]
                if isinstance(after, _RECTIFIERS):
                    tensor = probe
                    break
        observed[operation.name] = tensor
    return observed


def layer_activations(
    model: keras.Model,
    x,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """The rectified activations of each convolution layer, in inference mode.

    Args:
        model: a functional or Sequential model (any graph, nested models
            included), or an `AttributionRegularizedModel` around one.
        x: inputs, shape `(samples, ...)`.
        layers: names of convolution layers (default: all, in graph order).
        batch_size: samples per forward pass.

    Returns:
        `{conv layer name: activations of shape (samples, ...)}`, in the
        order of the model.

    Example:

    >>> acts = layer_activations(model, x_test[:16])
    >>> {name: a.shape for name, a in acts.items()}
    {'conv1': (16, 26, 26, 4), 'conv2': (16, 11, 11, 8)}
    """
    model = unwrap(model)
    batch_size = check_int("batch_size", batch_size, low=1)
    x = np.asarray(x)
    collected = None
    for start in range(0, len(x), batch_size):
        h = tf.convert_to_tensor(x[start : start + batch_size], model.compute_dtype)
        calls = _inference_calls(model, h)
        if collected is None:
            convs = [op.name for op, _, _ in calls if isinstance(op, _CONVOLUTIONS)]
            names = convs if layers is None else list(layers)
            unknown = sorted(set(names) - set(convs))
            if unknown or not names:
                raise ValueError(
                    "Invalid value for argument layers: expected names of "
                    f"convolution layers of model {model.name!r} ({convs}). "
                    f"Received: layers={layers!r}"
                )
            collected = {name: [] for name in convs if name in names}
        for name, tensor in _observed(calls, list(collected)).items():
            collected[name].append(tensor.numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def energy_skewness(values) -> float:
    """1 / Var(ã) with ã = a / sqrt(mean(a^2)): the paper's wording, read literally.

    Not the paper's quantity (it is >= 1 for a >= 0 and falls with sparsity);
    kept as the documented alternative to `moment_skewness`.

    >>> round(energy_skewness(np.array([0.0, 0.0, 1.0, 1.0])), 12)
    2.0
    >>> round(energy_skewness(np.array([0.0, 0.0, 0.0, 1.0])), 12)
    1.333333333333
    """
    values = np.asarray(values, np.float64).ravel()
    normalized = values / np.sqrt(np.mean(values**2))
    return float(1.0 / np.var(normalized))


def activation_statistics(
    activations: Mapping[str, np.ndarray],
) -> list[ActivationStatistics]:
    """Table 1 of Yoo et al.: max and the skewness readings per layer.

    Args:
        activations: `{layer name: activations}` (e.g. `layer_activations`).

    Returns:
        One `ActivationStatistics` per layer, in the given order.

    Example:

    >>> stats = activation_statistics(layer_activations(model, x_test))
    >>> stats[0].layer, bool(stats[0].max > 0)
    ('conv1', True)
    """
    result = []
    for name, values in activations.items():
        flat = np.ravel(values).astype(np.float64)
        result.append(
            ActivationStatistics(
                layer=name,
                max=float(np.max(flat)),
                moment_skewness=float(scipy.stats.skew(flat)),
                energy_skewness=energy_skewness(flat),
                squared_variation=float(np.var(flat) / np.mean(flat) ** 2),
                excess_kurtosis=float(scipy.stats.kurtosis(flat)),
                zero_fraction=float(np.mean(flat == 0)),
            )
        )
    return result


def statistics_table(results: Mapping[str, Sequence[ActivationStatistics]]) -> str:
    """Table 1 layout: one column per layer, cells "model A / model B / ...".

    Layers are taken by position (conv1, conv2, ...), so models whose layers
    carry different names line up.

    Args:
        results: `{model label: statistics per layer}` (same number of layers).

    Returns:
        The table as text.
    """
    labels = list(results)
    rows = list(zip(*results.values(), strict=True))
    header = ["layer"] + [f"conv{i + 1}" for i in range(len(rows))]
    lines = [header]
    for title, field in (
        ("max", "max"),
        ("skewness (3rd moment)", "moment_skewness"),
        ("1/var, energy-normalised", "energy_skewness"),
        ("share of zeros", "zero_fraction"),
    ):
        cells = [" / ".join(f"{getattr(s, field):.3f}" for s in row) for row in rows]
        lines.append([title, *cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join([f"({' / '.join(labels)})", *text])
