"""The zero-pixel probe of Kiritoshi et al. (2019, Sec. 3.1, Fig. 2).

The L1 gradient penalty paper shows that BatchNormalization makes a model
react to pixels that carry nothing: for every test sample x and every pixel p
that is zero in x, set p to one, feed the model without its softmax (Model'),
and record the change of the output,

    d(x, p) = Model'(x with x_p = one) - Model'(x)      (one vector per probe)

The distribution of d over all (x, p) is wider for a model with BatchNorm.
On standardised inputs "zero" and "one" are the standardised images of the
pixel values 0 and 1, e.g. `kar.datasets.standardize(0.0, "mnist")`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._logits import unwrap
from keras_attreg._validation import check_float, check_int
from keras_attreg.attributions._utils import DEFAULT_BATCH_SIZE, float_input, traced

_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclasses.dataclass
class ZeroPixelProbeResult:
    """The output changes of all probes.

    Attributes:
        differences: `Model'(x with x_p = one) - Model'(x)`, shape
            `(probes, classes)`.
        sample_index: the sample of each probe, shape `(probes,)`.
        pixel_index: the pixel of each probe, a row-major index into the
            sample's pixels (`h * W + w` for images), shape `(probes,)`.
    """

    differences: np.ndarray
    sample_index: np.ndarray
    pixel_index: np.ndarray

    def to_dict(self) -> dict:
        """Summary of all differences (every probe, every class), JSON-ready."""
        values = self.differences.ravel()
        quantiles = np.quantile(values, _QUANTILES)
        return {
            "probes": int(self.differences.shape[0]),
            "samples": int(np.unique(self.sample_index).size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "mean_abs": float(np.abs(values).mean()),
            "quantiles": {
                str(q): float(v) for q, v in zip(_QUANTILES, quantiles, strict=True)
            },
        }


def _probe_kernel(split, x, pixels, base, one_value):
    """Logit changes of `x[b]` with pixel `pixels[b]` set to `one_value`."""
    image = x.shape.rank == 4
    count = int(np.prod(x.shape[1:-1])) if image else x.shape[1]
    mask = tf.one_hot(pixels, count, dtype=x.dtype)
    mask = tf.reshape(mask, [-1, *x.shape[1:-1], 1] if image else [-1, count])
    probed = x * (1 - mask) + one_value * mask
    return split.logits(probed) - base


def _logits_kernel(split, x):
    return split.logits(x)


def zero_pixel_probe(
    model: keras.Model,
    x,
    zero_value: float = 0.0,
    one_value: float = 1.0,
    atol: float = 1e-6,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 1,
) -> ZeroPixelProbeResult:
    """Output change of Model' when each zero pixel of each sample is set to one.

        d(x, p) = S(x with x_p = one) - S(x),  for every p with x_p = zero

    S is the model's pre-softmax output (all classes). A pixel of an image
    `(H, W, C)` is zero when all its channels are within `atol` of
    `zero_value`; probing sets all its channels to `one_value`. For inputs of
    rank 2 `(n, features)` each feature is a pixel. Probes are evaluated in
    batches of `batch_size` model inputs.

    Args:
        model: a Keras model (its softmax, if any, is left out), or an
            `AttributionRegularizedModel` (its base model is used).
        x: samples, `(n, H, W, C)` or `(n, features)`.
        zero_value: the value that marks an empty pixel.
        one_value: the value a probed pixel is set to.
        atol: tolerance of the comparison with `zero_value`.
        batch_size: model inputs per forward pass.
        verbose: 1 shows a progress bar, 0 is silent.

    Returns:
        A `ZeroPixelProbeResult` (one row per probe).

    Example:
        >>> zero, one = kar.datasets.standardize(np.float32([[0], [1]]), "mnist")[:, 0]
        >>> result = zero_pixel_probe(model, x_test[:8], zero, one, verbose=0)
        >>> summary = result.to_dict()
        >>> summary["samples"], summary["probes"] == int((x_test[:8] == zero).sum())
        (8, True)
    """
    model = unwrap(model)
    zero_value = check_float("zero_value", zero_value)
    one_value = check_float("one_value", one_value)
    atol = check_float("atol", atol, low=0.0)
    batch_size = check_int("batch_size", batch_size, low=1)
    x = float_input(x)
    if x.shape.rank not in (2, 4) or x.shape[0] == 0:
        raise ValueError(
            "Invalid value for argument x: expected a non-empty batch of images "
            "(n, H, W, C) or of feature vectors (n, features). "
            f"Received: x with shape {tuple(x.shape)}"
        )
    values = x.numpy()
    empty = np.abs(values - zero_value) <= atol
    if values.ndim == 4:
        empty = empty.all(axis=-1)
    sample_index, pixel_index = np.nonzero(empty.reshape(len(values), -1))
    if sample_index.size == 0:
        raise ValueError(
            "Invalid value for argument zero_value: expected a value that some "
            f"pixels of x hold (within atol={atol}). Received: "
            f"zero_value={zero_value}, with x in [{values.min()}, {values.max()}]"
        )
    base = tf.concat(
        [
            traced(model, _logits_kernel)(x[start : start + batch_size])
            for start in range(0, len(values), batch_size)
        ],
        axis=0,
    )
    probe = traced(model, _probe_kernel)
    one = tf.constant(one_value, x.dtype)
    progress = keras.utils.Progbar(
        len(sample_index), verbose=verbose, unit_name="probe"
    )
    chunks = []
    for start in range(0, len(sample_index), batch_size):
        samples = sample_index[start : start + batch_size]
        chunks.append(
            probe(
                tf.gather(x, samples),
                tf.constant(pixel_index[start : start + batch_size], tf.int32),
                tf.gather(base, samples),
                one,
            ).numpy()
        )
        progress.update(start + len(samples))
    return ZeroPixelProbeResult(np.concatenate(chunks), sample_index, pixel_index)
