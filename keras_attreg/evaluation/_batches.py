"""The data forms every evaluation function takes, and the maps beside them.

`evaluate` takes `(x, y)` arrays, a `tf.data.Dataset`, a
`keras.utils.PyDataset` or a generator of `(x, y)` batches; so does every
metric of this package. `DataSource` turns any of them into batches of at
most `batch_size` samples with the sample shape known before the first
batch is scored; `attributed_batches` adds the attribution maps of each
batch (a method called batch by batch, a method's name, or precomputed maps
sliced in step with the data).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._inputs import InputView, ModelInputs, model_inputs
from keras_attreg._tokens import method_at_embedding
from keras_attreg._validation import check_targets
from keras_attreg.attributions import get
from keras_attreg.attributions._utils import (
    batches,
    example_input,
    float_input,
    method_name,
    model_dtype_input,
    num_samples,
    reference,
    traced,
)

PRECOMPUTED = "precomputed maps"
_FORMS = (
    "a tuple (x, targets), or a tf.data.Dataset, keras.utils.PyDataset or "
    "generator of (x, targets) batches"
)


@dataclasses.dataclass
class DataSource:
    """Batches of `(x, targets)` from any data form `evaluate` takes.

    Attributes:
        x: the input array (arrays), or an iterable of `(x, y)` batches.
        targets: the targets (arrays), else None.
        sample_shape: the shape of one sample (of the input `input_name`).
        total: the number of samples when known (arrays), else None.
        tokens: the inputs are token ids.
        inputs: for a model with several inputs, its `ModelInputs`: batches
            come in the model's structure.
        input_name: with `inputs`, the input whose features are measured.
    """

    x: object
    targets: object
    sample_shape: tuple
    total: int | None
    tokens: bool
    inputs: ModelInputs | None = None
    input_name: str | None = None

    def batches(self, batch_size: int) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        """`(x, targets)` tensors of at most `batch_size` samples, checked."""
        options = {"name": "data", "tokens": self.tokens, "inputs": self.inputs}
        if isinstance(self.x, _Batches):
            for x, y in self.x:
                yield from batches(x, y, batch_size, **options)
            return
        yield from batches(self.x, self.targets, batch_size, **options)

    def measured(self, x):
        """The input of the batch `x` whose features are measured: `x`, or
        for several inputs the one named `input_name`."""
        if self.inputs is None:
            return x
        return self.inputs.select(x, [self.input_name], "input_name")[0]


def measured_inputs(model: keras.Model, input_name: str | None, metric: str):
    """The `ModelInputs` of a model with several inputs, whose input
    `input_name` a metric measures (None for a model with one input, or
    `input_name` None where the metric takes no `input_name`, then refused).

    Raises:
        ValueError: `input_name` missing or unknown for a model with several
            inputs, or given for a model with one.
    """
    inputs = model_inputs(model)
    if inputs is None and input_name is not None:
        raise ValueError(
            "Invalid value for argument input_name: expected None for model "
            f"{model.name!r}, which has one input. Received: "
            f"input_name={input_name!r}"
        )
    if inputs is not None and input_name not in inputs.names:
        raise ValueError(
            f"Invalid value for argument input_name: model {model.name!r} has "
            f"several inputs; {metric} removes the features of one, named by "
            f"`input_name` (one of {inputs.names}). Received: "
            f"input_name={input_name!r}"
        )
    return inputs


def on_input(split, x, *tensors, measure, input_name: str, **options):
    """`measure(split, x, *tensors, **options)`, the kernel of a single-input
    metric, run over the input `input_name` of a model with several inputs
    (`x` has them all), the others held at each sample's own values
    (`InputView`)."""
    view = InputView(split, model_inputs(split.model), x, input_name)
    return measure(view, view.value, *tensors, **options)


def traced_measure(model, measure, input_name: str | None, **options):
    """The traced `measure` kernel of a metric: on the model's one input, or
    (`input_name` given) `on_input` over that input of a model with several."""
    if input_name is None:
        return traced(model, measure, **options)
    return traced(
        model, on_input, None, None, measure=measure, input_name=input_name, **options
    )


def data_source(
    data,
    tokens: bool,
    inputs: ModelInputs | None = None,
    input_name: str | None = None,
) -> DataSource:
    """A `DataSource` for `data` (any of the forms `evaluate` takes); for a
    model with several `inputs`, x of each form a list or dict of arrays
    (as `fit` takes it) and `input_name` the input measured.

    Raises:
        ValueError: `data` is none of them, naming what was received.
    """

    def source(x, targets, first, total=None):
        """The source of `x`; `first` a batch of it (or its spec)."""
        made = DataSource(x, targets, (), total, tokens, inputs, input_name)
        if inputs is not None:
            first = made.measured(inputs.standardize(first, "data"))
        shape = first.shape if hasattr(first, "shape") else np.shape(first)
        made.sample_shape = tuple(shape[1:])
        return made

    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(
                f"Invalid value for argument data: expected {_FORMS}. Received: "
                f"a {type(data).__name__} of {len(data)} parts"
            )
        x = model_dtype_input(data[0], tokens, inputs)
        return source(x, data[1], x, num_samples(x))
    if isinstance(data, tf.data.Dataset):
        made = source(data, None, data.element_spec[0])
        if None not in made.sample_shape:
            return made
        iterator = iter(data)
    elif isinstance(data, keras.utils.PyDataset):
        iterator = (data[index] for index in range(len(data)))
    elif isinstance(data, Iterator):
        iterator = data
    else:
        raise ValueError(
            f"Invalid value for argument data: expected {_FORMS}. Received: "
            f"data of type {type(data).__name__}"
        )
    first = next(iterator, None)
    if first is None:
        raise ValueError(
            "Invalid value for argument data: expected at least one batch. "
            "Received: no data"
        )
    if not isinstance(first, (tuple, list)) or len(first) not in (2, 3):
        raise ValueError(
            "Invalid value for argument data: expected batches (x, targets) or "
            f"(x, targets, sample_weight). Received: a batch of type "
            f"{type(first).__name__}"
        )
    batch_iterable = ((b[0], b[1]) for b in itertools.chain([first], iterator))
    return source(_Batches(batch_iterable), None, first[0])


class _Batches:
    """An iterable of `(x, y)` batches (a PyDataset's or a generator's)."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)


def resolve_method(
    model: keras.Model,
    attributions,
    tokens: bool,
    embedding_layer: str | None,
    name: str = "attributions",
) -> tuple[Callable | None, object]:
    """`(method, maps)`: the method to call batch by batch (None for
    precomputed maps) and the precomputed maps as a float tensor (None for a
    method). A method's name is looked up in the attribution registry."""
    if isinstance(attributions, str):
        attributions = get(attributions, name=name)
    if callable(attributions):
        method = attributions
        if tokens and embedding_layer is not None:
            method = method_at_embedding(method, model, embedding_layer, name)
        return method, None
    return None, float_input(attributions)


def attributed_batches(
    model: keras.Model,
    source: DataSource,
    method: Callable | None,
    maps,
    batch_size: int,
    name: str = "attributions",
) -> Iterator[tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """`(x, targets, maps)` per batch of `source`.

    `maps` (precomputed, aligned with the data) are sliced in step with the
    batches; otherwise `method(model, x, targets)` is called per batch. For
    several inputs, the maps are those of the measured input
    (`DataSource.measured`), and `x` has them all.

    Raises:
        ValueError: maps of another shape than their inputs, another number
            of maps than samples, or a map holding NaN or an infinity (it has
            no ranking: every metric would return a silently wrong number).
    """
    if method is None and source.total is not None and maps.shape[0] != source.total:
        raise shape_error(maps.shape, (source.total, *source.sample_shape), name)
    offset = 0
    for x_batch, t_batch in source.batches(batch_size):
        size = num_samples(x_batch)
        if method is None:
            if offset + size > maps.shape[0]:
                raise _count_error(f"at least {offset + size}", maps.shape, name)
            batch_maps = maps[offset : offset + size]
        else:
            batch_maps = method(model, x_batch, t_batch)
            batch_maps = tf.convert_to_tensor(source.measured(batch_maps))
        measured = source.measured(x_batch)
        if batch_maps.shape != measured.shape:
            raise shape_error(batch_maps.shape, measured.shape, name)
        _check_finite(batch_maps, offset, name, method)
        offset += size
        yield x_batch, t_batch, batch_maps
    if method is None and offset != maps.shape[0]:
        raise _count_error(str(offset), maps.shape, name)


def _check_finite(batch_maps, offset: int, name: str, method) -> None:
    finite = np.isfinite(np.asarray(batch_maps)).reshape(len(batch_maps), -1)
    bad = np.flatnonzero(~finite.all(axis=1))
    if bad.size:
        origin = (
            f" returned by {getattr(method, '__name__', method)!r}" if method else ""
        )
        raise ValueError(
            f"Invalid value for argument {name}: every map must be finite (a "
            "map with NaN or an infinity ranks no feature). Received: "
            f"{bad.size} map(s){origin} with NaN or inf, the first at "
            f"sample {offset + int(bad[0])}"
        )


def _count_error(samples: str, shape, name: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument {name}: expected one map per sample of "
        f"data ({samples} samples). Received: {name} with shape {tuple(shape)}"
    )


def scored_batches(
    model: keras.Model,
    split,
    source: DataSource,
    method: Callable | None,
    maps,
    *,
    batch_size: int,
    baseline,
    verbose: int,
    baseline_token: int | None = None,
    embedding_layer: str | None = None,
) -> Iterator[tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]]:
    """`(x, targets, maps, sample_ids, baseline)` per batch, as the metrics'
    kernels take them: the targets checked against the model's classes, the
    maps (of the measured input, for several inputs) in the baseline's
    dtype, the samples' positions in the data (for stateless draws keyed by
    sample) and the baseline of one sample as the
    kernel sees it (`reference`, taken once); a progress bar with `verbose`.
    """
    progress = keras.utils.Progbar(source.total, verbose=verbose, unit_name="sample")
    offset, classes, base = 0, None, None
    for x_batch, t_batch, batch_maps in attributed_batches(
        model, source, method, maps, batch_size
    ):
        size = num_samples(x_batch)
        if classes is None:
            classes = split.num_classes(tf.nest.flatten(x_batch)[0].shape)
            measured = source.measured(x_batch)
            base = reference(
                model,
                baseline,
                baseline_token,
                measured if source.inputs else example_input(split, x_batch),
                embedding_layer,
            )
        check_targets(t_batch, classes)
        ids = tf.range(offset, offset + size)
        yield x_batch, t_batch, tf.cast(batch_maps, base.dtype), ids, base
        offset += size
        progress.update(offset)


def label_of(method: Callable | None, label: str | None) -> str:
    """The name of the attributions in results: `label`, the method's name,
    or "precomputed maps"."""
    if label is not None:
        if not isinstance(label, str):
            raise ValueError(
                "Invalid value for argument label: expected a string. Received: "
                f"label={label!r}"
            )
        return label
    return PRECOMPUTED if method is None else method_name(method)


def shape_error(received, expected, name: str = "attributions") -> ValueError:
    return ValueError(
        f"Invalid value for argument {name}: expected maps of the shape of the "
        f"inputs {tuple(expected)}. Received: {name} with shape {tuple(received)}"
    )


def standard_error(per_sample: np.ndarray) -> np.ndarray:
    """Standard error of the mean across samples (axis 0), per column:

        SE_k = std(v_k, ddof=1) / sqrt(m_k)

    over the m_k samples whose value is defined (not NaN); NaN where m_k < 2.
    """
    defined = ~np.isnan(per_sample)
    count = defined.sum(axis=0)
    values = np.where(defined, per_sample, 0.0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    squares = (np.where(defined, values - mean, 0.0) ** 2).sum(axis=0)
    variance = squares / np.maximum(count - 1, 1)
    return np.where(count > 1, np.sqrt(variance / np.maximum(count, 1)), np.nan)


def json_list(values) -> list:
    """Floats for JSON, NaN written as None."""
    return [None if np.isnan(v) else float(v) for v in np.ravel(values)]
