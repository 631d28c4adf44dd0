"""Deletion and insertion curves (Petsiuk et al., BMVC 2018; pixel flipping,
Samek et al., IEEE TNNLS 2017).

Features are ranked by their attribution, largest first (pixels: summed over
channels; ties to the lower index). For fractions f_0 = 0 < f_1 < ... < f_K = 1
of the features:

    deletion:  s_k = score(x with its top round(f_k * d) features set to the baseline)
    insertion: s_k = score(the baseline with x's top round(f_k * d) features put back)

with score the target class's softmax probability (Petsiuk et al.) or its
logit S_c. The area under the curve over f (trapezoid rule) summarises it: a
faithful map gives a low deletion area (the score falls as soon as the
relevant features go) and a high insertion area. Deletion with a constant
baseline is Samek et al.'s pixel flipping.

Token ids: the features are each sample's real tokens (d = its length;
padding is never ranked, removed or inserted); removing a token sets its
embedding to the baseline, as in `sensitivity_n`.

All K + 1 perturbed inputs of a batch are built on the device from one
ranking and scored in chunks of `batch_size` model inputs inside one traced
loop, like `sensitivity_n`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_attreg._logits import (
    attributed_embedding,
    split_logits,
    target_scores,
    unwrap,
)
from keras_attreg._validation import check_choice, check_float, check_int
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    for_each_chunk,
    traced,
)
from keras_attreg.evaluation._batches import (
    PRECOMPUTED,
    data_source,
    json_list,
    label_of,
    measured_inputs,
    resolve_method,
    scored_batches,
    standard_error,
    traced_measure,
)
from keras_attreg.evaluation.sensitivity_n import num_features, replace_tokens

MODES = ("deletion", "insertion")
SCORES = ("probability", "logit")


@dataclasses.dataclass
class PerturbationCurveResult:
    """A deletion or insertion curve and its per-sample values.

    Attributes:
        fractions: the fractions f_k of the features removed (deletion) or
            inserted (insertion), from 0 to 1, shape (K + 1,).
        curve: the mean score over the samples, per fraction, shape (K + 1,).
        per_sample: the score of each sample, shape (samples, K + 1).
        mode: "deletion" or "insertion".
        score: "probability" or "logit".
        label: the name of the attributions (for plots and `to_dict`).
    """

    fractions: np.ndarray
    curve: np.ndarray
    per_sample: np.ndarray
    mode: str
    score: str
    label: str = PRECOMPUTED

    def areas(self) -> np.ndarray:
        """The area under each sample's curve over the fractions, (samples,)."""
        widths = np.diff(self.fractions)
        heights = (self.per_sample[:, 1:] + self.per_sample[:, :-1]) / 2
        return (heights * widths).sum(axis=1)

    def area(self) -> float:
        """The mean area under the curve (AUC): low is faithful for deletion,
        high for insertion."""
        return float(self.areas().mean())

    def standard_error(self) -> np.ndarray:
        """Standard error of `curve` across samples, per fraction."""
        return standard_error(self.per_sample)

    def area_standard_error(self) -> float:
        """Standard error of `area()` across samples."""
        return float(standard_error(self.areas()[:, None])[0])

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "mode": self.mode,
            "score": self.score,
            "label": self.label,
            "fractions": [float(f) for f in self.fractions],
            "curve": [float(v) for v in self.curve],
            "standard_error": json_list(self.standard_error()),
            "area": self.area(),
            "area_standard_error": json_list([self.area_standard_error()])[0],
            "num_samples": int(self.per_sample.shape[0]),
        }

    def plot(self, path, *others: PerturbationCurveResult, label: str | None = None):
        """Writes this curve, and `others` for comparison, to one image file.

        Each curve is labelled with its `label` and area, with a band of one
        standard error across samples.

        Returns:
            The `matplotlib.figure.Figure`.
        """
        from keras_attreg.plotting import plot_perturbation_curves

        this = self if label is None else dataclasses.replace(self, label=label)
        return plot_perturbation_curves([this, *others], path)


def _check_step(step, count: int | None) -> float:
    """The step as a fraction of the features: a float in (0, 1], or an int
    number of features (images and element features only)."""
    if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
        if count is None:
            raise ValueError(
                "Invalid value for argument step: token models take the step as "
                "a fraction in (0, 1] (their samples differ in length). "
                f"Received: step={step!r}"
            )
        step = check_int("step", step, low=1)
        if step > count:
            raise ValueError(
                f"Invalid value for argument step: expected at most {count} "
                f"features. Received: step={step!r}"
            )
        return step / count
    return check_float("step", step, low=0.0, high=1.0, low_inclusive=False)


def fraction_grid(step: float) -> np.ndarray:
    """0, step, 2 step, ..., 1 (the last step may be shorter)."""
    grid = np.arange(0.0, 1.0, step)
    return np.append(grid, 1.0)


def _ranks(values: tf.Tensor) -> tf.Tensor:
    """Rank of each feature, 0 for the largest (ties to the lower index)."""
    order = tf.argsort(-values, axis=-1, stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def _score(logits, targets, score: str):
    if score == "probability":
        logits = tf.nn.softmax(tf.cast(logits, tf.float32))
    return tf.cast(target_scores(logits, targets), tf.float64)


def _kernel(
    split, x, attributions, targets, baseline, counts, *, mode, score, pixel, chunk
):
    """Scores of every (sample, fraction): (batch, K + 1)."""
    batch, steps = tf.shape(x)[0], tf.shape(counts)[0]
    if pixel:
        attributions = tf.reduce_sum(attributions, axis=-1)
    ranks = _ranks(tf.reshape(attributions, [batch, -1]))
    mask_shape = [-1, *x.shape[1:-1], 1] if pixel else [-1, *x.shape[1:]]

    def perturb(scores, indices):
        sample, step = indices // steps, indices % steps
        chosen = tf.gather(ranks, sample) < tf.gather(counts, step)[:, None]
        chosen = tf.reshape(chosen, mask_shape)
        original = tf.gather(x, sample)
        if mode == "deletion":
            inputs = tf.where(chosen, baseline, original)
        else:
            inputs = tf.where(chosen, original, baseline)
        value = _score(
            split.rows(sample).logits(inputs), tf.gather(targets, sample), score
        )
        return tf.tensor_scatter_nd_update(scores, indices[:, None], value)

    scores = for_each_chunk(
        batch * steps, chunk, perturb, tf.zeros([batch * steps], tf.float64)
    )
    return tf.reshape(scores, [batch, steps])


def _token_kernel(
    tokens, e, attributions, targets, baseline, fractions, *, mode, score, chunk
):
    """Scores of every (sample, fraction) of a token model: (batch, K + 1)."""
    batch, steps = tf.shape(e)[0], tf.shape(fractions)[0]
    real = tf.logical_not(tokens.padding())
    lengths = tf.reduce_sum(tf.cast(real, fractions.dtype), axis=1)
    # Padding ranks after every real token, whatever its attribution.
    lowest = tf.reduce_min(attributions) - 1.0
    ranks = _ranks(tf.where(real, attributions, lowest))

    def perturb(scores, indices):
        sample, step = indices // steps, indices % steps
        count = tf.round(tf.gather(lengths, sample) * tf.gather(fractions, step))
        chosen = tf.cast(tf.gather(ranks, sample), count.dtype) < count[:, None]
        replaced = chosen if mode == "deletion" else tf.logical_not(chosen)
        replaced = tf.logical_and(replaced, tf.gather(real, sample))
        inputs = replace_tokens(e, sample, replaced, baseline)
        logits = tokens.rows(sample).logits(inputs)
        value = _score(logits, tf.gather(targets, sample), score)
        return tf.tensor_scatter_nd_update(scores, indices[:, None], value)

    scores = for_each_chunk(
        batch * steps, chunk, perturb, tf.zeros([batch * steps], tf.float64)
    )
    return tf.reshape(scores, [batch, steps])


def _curve(
    mode,
    model,
    data,
    attributions,
    step,
    baseline,
    score,
    features,
    batch_size,
    verbose,
    label,
    embedding_layer,
    baseline_token,
    input_name,
) -> PerturbationCurveResult:
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    score = check_choice("score", score, SCORES)
    features = check_choice("features", features, ("pixel", "element"))
    batch_size = check_int("batch_size", batch_size, low=1)
    split = split_logits(model, embedding_layer=embedding_layer)
    inputs = measured_inputs(model, input_name, mode)
    tokens = inputs is None and split.tokens is not None
    source = data_source(data, tokens, inputs, input_name)
    shape = source.sample_shape
    count = None if tokens else num_features(shape, features)
    fractions = fraction_grid(_check_step(step, count))
    method, maps = resolve_method(model, attributions, tokens, embedding_layer)
    label = label_of(method, label)
    if tokens:
        steps = tf.constant(fractions, tf.float32)
        kernel = traced(
            model,
            _token_kernel,
            embedding_layer,
            None,
            mode=mode,
            score=score,
            chunk=batch_size,
        )
    else:
        steps = tf.constant(np.round(fractions * count).astype(np.int32))
        options = {"mode": mode, "score": score, "chunk": batch_size}
        options["pixel"] = features == "pixel" and len(shape) == 3
        kernel = traced_measure(model, _kernel, input_name, **options)
    rows = [
        kernel(x_batch, batch_maps, t_batch, base, steps)
        for x_batch, t_batch, batch_maps, _, base in scored_batches(
            model,
            split,
            source,
            method,
            maps,
            batch_size=batch_size,
            baseline=baseline,
            baseline_token=baseline_token,
            embedding_layer=embedding_layer,
            verbose=verbose,
        )
    ]
    per_sample = tf.concat(rows, axis=0).numpy()
    return PerturbationCurveResult(
        fractions=fractions,
        curve=per_sample.mean(axis=0),
        per_sample=per_sample,
        mode=mode,
        score=score,
        label=label,
    )


def deletion(
    model: keras.Model,
    data,
    attributions,
    step=0.05,
    baseline=0.0,
    score: str = "probability",
    features: str = "pixel",
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 0,
    label: str | None = None,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
    input_name: str | None = None,
) -> PerturbationCurveResult:
    """The deletion curve: the score as the top-ranked features are removed.

        s_k = score(x with its top round(f_k * d) features set to the baseline)

    for f_k = 0, step, 2 step, ..., 1 (Petsiuk et al. 2018; with a constant
    baseline, the pixel flipping of Samek et al. 2017). A lower area means a
    more faithful ranking.

    Args:
        model: a Keras model ending in logits or a softmax (S_c is its
            pre-softmax logit), or an `AttributionRegularizedModel`.
        data: `(x, targets)` arrays, or a `tf.data.Dataset`,
            `keras.utils.PyDataset` or generator of `(x, targets)` batches.
        attributions: maps aligned with x (one value per token for token
            ids), a method `method(model, x, targets)` called per batch, or a
            method's name (`"saliency"`, ...).
        step: the fraction of the features removed per step, in (0, 1], or
            (images) a number of features.
        baseline: the value of removed features: a scalar or one sample's
            array (for token ids, of the embedding; 0 is the zero vector).
        score: "probability" (softmax of the target, as Petsiuk et al.) or
            "logit" (S_c).
        features: "pixel" (channels ranked and removed together) or
            "element".
        batch_size: samples per traced call and model inputs per pass.
        verbose: 1 shows a progress bar.
        label: the name of the attributions in plots.
        embedding_layer: for token ids, the Embedding layer's name.
        baseline_token: for token ids, a token whose embedding is the baseline.
        input_name: for a model with several inputs (x a list or dict of
            arrays), the input whose features are ranked and removed, the
            others held at each sample's values (the maps are those of it).

    Returns:
        A `PerturbationCurveResult` (mode "deletion").

    Example:

    >>> result = deletion(model, (x_test, y_test), "gradient_x_input", step=0.25)
    >>> result.fractions.tolist(), result.per_sample.shape
    ([0.0, 0.25, 0.5, 0.75, 1.0], (32, 5))
    >>> bool(0.0 <= result.area() <= 1.0)
    True
    """
    return _curve(
        "deletion",
        model,
        data,
        attributions,
        step,
        baseline,
        score,
        features,
        batch_size,
        verbose,
        label,
        embedding_layer,
        baseline_token,
        input_name,
    )


def insertion(
    model: keras.Model,
    data,
    attributions,
    step=0.05,
    baseline=0.0,
    score: str = "probability",
    features: str = "pixel",
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 0,
    label: str | None = None,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
    input_name: str | None = None,
) -> PerturbationCurveResult:
    """The insertion curve: the score as the top-ranked features are put back.

        s_k = score(the baseline with x's top round(f_k * d) features inserted)

    for f_k = 0, step, 2 step, ..., 1 (Petsiuk et al. 2018, who use a blurred
    copy of the image as the baseline: pass it as `baseline`). A higher area
    means a more faithful ranking. Arguments as for `deletion`.

    Returns:
        A `PerturbationCurveResult` (mode "insertion").

    Example:

    >>> result = insertion(model, (x_test, y_test), "saliency", step=0.5,
    ...                    score="logit")
    >>> result.mode, result.per_sample.shape
    ('insertion', (32, 3))
    """
    return _curve(
        "insertion",
        model,
        data,
        attributions,
        step,
        baseline,
        score,
        features,
        batch_size,
        verbose,
        label,
        embedding_layer,
        baseline_token,
        input_name,
    )
