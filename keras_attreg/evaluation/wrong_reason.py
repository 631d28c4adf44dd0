"""Finding a shortcut: the share of attribution mass inside an annotated region.

The "wrong reason" score of the explanatory-interactive-learning literature
(Ross et al. 2017; Schramowski et al. 2020): for each example with a region
that must not be the reason (its annotation mask, 1 inside),

    share = sum_p |A_p| * m_p / sum_p |A_p|

with A the attribution map of the true class and |A_p| summed over the
channels of pixel p (over nothing else for one value per token). A model that
reads only the region scores 1, one that ignores it 0; an attribution spread
evenly scores the region's area fraction (reported as `chance`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from keras_attreg import annotations
from keras_attreg._validation import check_int, labels_to_targets
from keras_attreg.attributions import get
from keras_attreg.attributions._utils import method_name
from keras_attreg.evaluation.localisation import share_inside


@dataclasses.dataclass(frozen=True)
class WrongReasonResult:
    """Per-example shares of attribution mass inside the annotated region.

    Attributes:
        per_sample: float64 `(n,)`, the share of each annotated example
            (examples with an all-zero mask or an all-zero map are left out).
        labels: int `(n,)`, their true classes.
        chance: float64 `(n,)`, the region's share of the pixels (tokens).
        label: the name of the attributions (the method's name).
    """

    per_sample: np.ndarray
    labels: np.ndarray
    chance: np.ndarray
    label: str

    @property
    def overall(self) -> float:
        """Mean share over the examples."""
        return float(np.mean(self.per_sample)) if self.per_sample.size else np.nan

    def standard_error(self) -> float:
        """std(share, ddof=1) / sqrt(n); NaN below two examples."""
        n = self.per_sample.size
        if n < 2:
            return np.nan
        return float(np.std(self.per_sample, ddof=1) / np.sqrt(n))

    def per_class(self) -> dict[int, float]:
        """Mean share per true class, for the classes present."""
        return {
            int(c): float(self.per_sample[self.labels == c].mean())
            for c in np.unique(self.labels)
        }

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "label": self.label,
            "overall": self.overall,
            "standard_error": self.standard_error(),
            "chance": float(np.mean(self.chance)) if self.chance.size else None,
            "per_class": {str(c): v for c, v in self.per_class().items()},
            "num_samples": int(self.per_sample.size),
        }

    def plot(self, path, *others: WrongReasonResult, names=None):
        """Bar chart of the share per class (and overall), one bar group per
        result: this one and `others` (e.g. a baseline and a fixed model),
        named by `names` (default: each result's `label`).

        Returns:
            The `matplotlib.figure.Figure`.
        """
        from keras_attreg.plotting import plot_wrong_reason

        results = [self, *others]
        names = [r.label for r in results] if names is None else list(names)
        if len(names) != len(results):
            raise ValueError(
                f"Invalid value for argument names: expected {len(results)} "
                f"names, one per result. Received: names={names!r}"
            )
        return plot_wrong_reason(results, names, path)


def _batches(data, annotation_mask, batch_size):
    """`(x, y, mask)` NumPy batches from arrays, or from a `tf.data.Dataset`,
    `keras.utils.PyDataset` or generator of `(x, kar.annotate(y, masks))`."""
    if isinstance(data, keras.utils.PyDataset):
        data = map(data.__getitem__, range(len(data)))
    if not isinstance(data, (tuple, list)):  # a dataset or a generator
        if annotation_mask is not None:
            raise ValueError(
                "Invalid value for argument annotation_mask: a dataset carries "
                "its masks as (x, kar.annotate(y, masks)). Received: both"
            )
        for element in data:
            x, y = element[:2]
            y, mask = annotations.split_annotations(y)
            if mask is None:
                raise ValueError(
                    "Invalid value for argument data: expected a dataset of "
                    "(x, kar.annotate(y, masks)). Received: elements without "
                    "annotation masks"
                )
            yield np.asarray(x), np.asarray(y), np.asarray(mask)
        return
    if len(data) != 2:
        raise ValueError(
            "Invalid value for argument data: expected (x, y) arrays, or a "
            "tf.data.Dataset, keras.utils.PyDataset or generator of (x, "
            f"kar.annotate(y, masks)) batches. Received: data with {len(data)} "
            "parts"
        )
    x, y = data
    y, mask = annotations.split_annotations(y)
    if annotation_mask is not None:
        mask = annotation_mask
    if mask is None:
        raise ValueError(
            "Invalid value for argument annotation_mask: expected one mask per "
            "example of x. Received: annotation_mask=None"
        )
    x, y, mask = np.asarray(x), np.asarray(y), np.asarray(mask)
    if len(mask) != len(x) or len(y) != len(x):
        raise ValueError(
            "Invalid value for argument annotation_mask: expected one mask and "
            f"one label per example of x ({len(x)}). Received: "
            f"{len(mask)} masks and {len(y)} labels"
        )
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        yield x[start:stop], y[start:stop], mask[start:stop]


def wrong_reason_score(
    model,
    data,
    annotation_mask=None,
    method: str | Callable = "saliency",
    batch_size: int = 256,
) -> WrongReasonResult:
    """Share of the attribution mass inside each example's annotated region.

    Args:
        model: a Keras classifier (or an `AttributionRegularizedModel`).
        data: `(x, y)` arrays, or a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a generator of
            `(x, kar.annotate(y, masks))` batches (the forms `evaluate` takes).
        annotation_mask: with arrays, the masks (1: the region that must not
            be the reason), of the shape `fit` accepts (`kar.annotate`); or
            carried in `y` as `kar.annotate(y, masks)`.
        method: an attribution method or its name (`kar.attributions.get`),
            explaining the true class.
        batch_size: examples per attribution call (arrays).

    Returns:
        A `WrongReasonResult`.

    Example:

    >>> import keras, numpy as np, keras_attreg as kar
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> x, y = np.ones((3, 4), "float32"), np.zeros(3, "int64")
    >>> mask = np.array([[1, 0, 0, 0]] * 3)
    >>> result = kar.evaluation.wrong_reason_score(model, (x, y), mask)
    >>> result.per_sample.shape
    (3,)
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    method = get(method)
    shares, labels, chances = [], [], []
    for x, y, mask in _batches(data, annotation_mask, batch_size):
        mask = annotations.check_mask_values(mask).numpy().astype(np.float64)
        annotations.check_mask_shape(mask.shape, x.shape, tokens=False)
        targets = labels_to_targets(y, "y").numpy()
        maps = np.abs(np.asarray(method(model, x, targets), dtype=np.float64))
        # Magnitude per mask cell: summed over the axes the mask broadcasts on.
        if mask.ndim < maps.ndim:
            maps = maps.sum(axis=tuple(range(mask.ndim, maps.ndim)))
        elif mask.shape[-1] == 1 and maps.shape[-1] != 1:
            maps = maps.sum(axis=-1, keepdims=True)
        share = share_inside(maps, mask)
        area = mask.sum(axis=tuple(range(1, mask.ndim)))
        keep = (area > 0) & np.isfinite(share)
        shares.append(share[keep])
        labels.append(targets[keep])
        chances.append(area[keep] / np.prod(mask.shape[1:]))
    return WrongReasonResult(
        per_sample=np.concatenate(shares) if shares else np.zeros(0),
        labels=np.concatenate(labels) if labels else np.zeros(0, int),
        chance=np.concatenate(chances) if chances else np.zeros(0),
        label=method_name(method),
    )
