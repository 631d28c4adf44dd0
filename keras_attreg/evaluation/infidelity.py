"""Infidelity (Yeh et al., NeurIPS 2019): how well a map predicts the change of
the score under random perturbations.

    INFD(Phi, x) = E_I[ (I . Phi(x) - (S_c(x) - S_c(x - I)))^2 ]

with S_c the target's pre-softmax logit and I a random perturbation:

- "gaussian": I ~ N(0, noise_std^2) in every input element;
- "square": a square of `square_size` x `square_size` pixels (all channels)
  at a uniformly random position is removed: I = (x - baseline) on the square,
  0 elsewhere, so x - I is the baseline there (Yeh et al.'s square removal).

For token ids, "square" removes a random run of `square_size` consecutive real
tokens (their embedding set to the baseline) and I . Phi is the sum of the
token map over the run; Gaussian noise is not defined for a map with one
value per token and is refused. `normalize=True` first rescales the map by
the beta minimising the expectation (Yeh et al., Sec. 3):
beta = E[(I . Phi) Delta] / E[(I . Phi)^2].

The expectation is a mean over `num_perturbations` draws per sample, taken
from stateless generators keyed by `seed` and the sample's position in the
data (so the value does not depend on `batch_size`), scored in chunks of
`batch_size` model inputs inside one traced loop.
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
    label_of,
    measured_inputs,
    resolve_method,
    scored_batches,
    traced_measure,
)
from keras_attreg.evaluation.sensitivity_n import replace_tokens

PERTURBATIONS = ("gaussian", "square")


@dataclasses.dataclass
class InfidelityResult:
    """Infidelity per sample and its mean.

    Attributes:
        per_sample: INFD of each sample, shape (samples,).
        perturbation: "gaussian" or "square".
        normalized: whether the map was rescaled by the optimal beta.
        label: the name of the attributions.
    """

    per_sample: np.ndarray
    perturbation: str
    normalized: bool
    label: str = PRECOMPUTED

    @property
    def value(self) -> float:
        """The mean infidelity over the samples (lower is more faithful)."""
        return float(self.per_sample.mean())

    def standard_error(self) -> float:
        """Standard error of `value` across samples (NaN for one sample)."""
        count = self.per_sample.shape[0]
        if count < 2:
            return float("nan")
        return float(self.per_sample.std(ddof=1) / np.sqrt(count))

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        error = self.standard_error()
        return {
            "label": self.label,
            "perturbation": self.perturbation,
            "normalized": self.normalized,
            "infidelity": self.value,
            "standard_error": None if np.isnan(error) else error,
            "num_samples": int(self.per_sample.shape[0]),
        }

    def plot(self, path, *others: InfidelityResult, label: str | None = None):
        """A bar per result (this one and `others`), with one standard error.

        Returns:
            The `matplotlib.figure.Figure`.
        """
        from matplotlib.figure import Figure

        results = [dataclasses.replace(self, label=label or self.label), *others]
        figure = Figure(figsize=(1.2 + 0.9 * len(results), 3.5))
        ax = figure.subplots()
        ax.bar(
            range(len(results)),
            [r.value for r in results],
            yerr=[np.nan_to_num(r.standard_error()) for r in results],
            capsize=3,
        )
        ax.set_xticks(range(len(results)), [r.label for r in results], fontsize=8)
        ax.set_ylabel(f"infidelity ({self.perturbation})")
        ax.set_title("Infidelity (lower is more faithful)", fontsize=10)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return figure


def _square_masks(positions, height: int, width: int, size: int) -> tf.Tensor:
    """Masks (items, height, width) of `size` x `size` squares whose top-left
    corners are `positions` (items, 2)."""
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    top, left = positions[:, 0, None, None], positions[:, 1, None, None]
    inside_rows = (rows >= top) & (rows < top + size)
    inside_cols = (cols >= left) & (cols < left + size)
    return inside_rows & inside_cols


def _uniform(seed: int, items, count: int) -> tf.Tensor:
    """`count` uniform draws in [0, 1) per item, keyed by (seed, item)."""
    return tf.map_fn(
        lambda i: tf.random.stateless_uniform([count], seed=tf.stack([seed, i])),
        items,
        fn_output_signature=tf.float32,
    )


def _expectation(dot, drop, steps, normalize: bool):
    """Mean over the perturbations of (beta I.Phi - Delta)^2, per sample."""
    dot = tf.reshape(tf.cast(dot, tf.float64), [-1, steps])
    drop = tf.reshape(tf.cast(drop, tf.float64), [-1, steps])
    if normalize:
        beta = tf.math.divide_no_nan(
            tf.reduce_mean(dot * drop, 1), tf.reduce_mean(dot * dot, 1)
        )
        dot = beta[:, None] * dot
    return tf.reduce_mean((dot - drop) ** 2, axis=1)


def _kernel(
    split,
    x,
    maps,
    targets,
    sample_ids,
    baseline,
    *,
    perturbation,
    steps,
    noise_std,
    square_size,
    seed,
    normalize,
    chunk,
):
    batch = tf.shape(x)[0]
    scores = target_scores(split.logits(x), targets)
    height, width = (x.shape[1], x.shape[2]) if perturbation == "square" else (0, 0)

    def perturb(state, indices):
        dots, drops = state
        sample = indices // steps
        item = tf.gather(sample_ids, sample) * steps + indices % steps
        original = tf.gather(x, sample)
        if perturbation == "gaussian":
            change = tf.map_fn(
                lambda i: tf.random.stateless_normal(
                    x.shape[1:], seed=tf.stack([seed, i]), dtype=x.dtype
                ),
                item,
                fn_output_signature=x.dtype,
            ) * tf.cast(noise_std, x.dtype)
        else:
            places = tf.constant([height, width], tf.float32) - square_size + 1
            corner = tf.cast(_uniform(seed, item, 2) * places, tf.int32)
            mask = _square_masks(corner, height, width, square_size)
            mask = tf.reshape(mask, [-1, height, width, *([1] * (x.shape.rank - 3))])
            change = tf.where(mask, original - baseline, tf.zeros_like(original))
        dot = tf.reduce_sum(
            tf.reshape(change * tf.gather(maps, sample), [tf.shape(indices)[0], -1]), 1
        )
        drop = tf.gather(scores, sample) - target_scores(
            split.rows(sample).logits(original - change), tf.gather(targets, sample)
        )
        return (
            tf.tensor_scatter_nd_update(dots, indices[:, None], dot),
            tf.tensor_scatter_nd_update(drops, indices[:, None], drop),
        )

    zeros = tf.zeros([batch * steps], x.dtype)
    dots, drops = for_each_chunk(batch * steps, chunk, perturb, (zeros, zeros))
    return _expectation(dots, drops, steps, normalize)


def _token_kernel(
    tokens,
    e,
    maps,
    targets,
    sample_ids,
    baseline,
    *,
    steps,
    square_size,
    seed,
    normalize,
    chunk,
):
    batch = tf.shape(e)[0]
    real = tf.logical_not(tokens.padding())
    lengths = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
    scores = target_scores(tokens.logits(e), targets)
    # The i-th real token of a row sits at position rank^-1(i): real tokens
    # first, in order.
    slots = tf.argsort(tf.cast(tf.logical_not(real), tf.int32), axis=1, stable=True)

    def perturb(state, indices):
        dots, drops = state
        sample = indices // steps
        item = tf.gather(sample_ids, sample) * steps + indices % steps
        length = tf.gather(lengths, sample)
        span = tf.minimum(square_size, length)
        places = tf.cast(length - span + 1, tf.float32)
        start = tf.cast(_uniform(seed, item, 1)[:, 0] * places, tf.int32)
        order = tf.range(tf.shape(e)[1])[None, :]
        chosen = (order >= start[:, None]) & (order < (start + span)[:, None])
        positions = tf.gather(slots, sample)
        removed = tf.scatter_nd(
            tf.stack(
                [
                    tf.repeat(tf.range(tf.shape(indices)[0]), tf.shape(e)[1]),
                    tf.reshape(positions, [-1]),
                ],
                axis=1,
            ),
            tf.reshape(chosen, [-1]),
            tf.shape(positions),
        )
        dot = tf.reduce_sum(tf.where(removed, tf.gather(maps, sample), 0.0), 1)
        masked = replace_tokens(e, sample, removed, baseline)
        drop = tf.gather(scores, sample) - target_scores(
            tokens.rows(sample).logits(masked), tf.gather(targets, sample)
        )
        return (
            tf.tensor_scatter_nd_update(dots, indices[:, None], dot),
            tf.tensor_scatter_nd_update(drops, indices[:, None], drop),
        )

    zeros = tf.zeros([batch * steps], e.dtype)
    dots, drops = for_each_chunk(batch * steps, chunk, perturb, (zeros, zeros))
    return _expectation(dots, drops, steps, normalize)


def infidelity(
    model: keras.Model,
    data,
    attributions,
    perturbation: str = "gaussian",
    num_perturbations: int = 64,
    noise_std: float = 0.1,
    square_size: int = 4,
    baseline=0.0,
    normalize: bool = False,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 0,
    label: str | None = None,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
    input_name: str | None = None,
) -> InfidelityResult:
    """Infidelity of attributions (Yeh et al. 2019, Eq. 2).

        INFD(Phi, x) = E_I[ (I . Phi(x) - (S_c(x) - S_c(x - I)))^2 ]

    The exact attribution of a linear model (its gradient w_c, `saliency`
    with `absolute=False`) has infidelity 0 under any perturbation.

    Args:
        model: a Keras model (S_c is its pre-softmax logit), or an
            `AttributionRegularizedModel`.
        data: `(x, targets)` arrays, or a `tf.data.Dataset`,
            `keras.utils.PyDataset` or generator of `(x, targets)` batches.
        attributions: maps aligned with x (one value per token for token
            ids), a method `method(model, x, targets)`, or a method's name.
        perturbation: "gaussian" or "square" (see the module docstring).
        num_perturbations: draws of I per sample, >= 1.
        noise_std: the std of the Gaussian perturbation (input units).
        square_size: the side of the removed square (pixels), or the length
            of the removed run of tokens.
        baseline: what a removed square or token becomes (scalar or one
            sample's array; for token ids, of the embedding).
        normalize: rescale the map by the optimal beta first.
        seed: seed of the perturbations.
        batch_size: samples per traced call and model inputs per pass.
        verbose: 1 shows a progress bar.
        label: the name of the attributions.
        embedding_layer: for token ids, the Embedding layer's name.
        baseline_token: for token ids, a token whose embedding is the baseline.
        input_name: for a model with several inputs (x a list or dict of
            arrays), the float input perturbed, the others held at each
            sample's values (the maps are those of it).

    Returns:
        An `InfidelityResult`.

    Example:

    >>> result = infidelity(model, (x_test, y_test), "gradient_x_input",
    ...                     perturbation="square", num_perturbations=8)
    >>> result.per_sample.shape, bool(result.value >= 0)
    ((32,), True)
    """
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    perturbation = check_choice("perturbation", perturbation, PERTURBATIONS)
    steps = check_int("num_perturbations", num_perturbations, low=1)
    noise_std = check_float("noise_std", noise_std, low=0.0, low_inclusive=False)
    square_size = check_int("square_size", square_size, low=1)
    seed = check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, low=1)
    if not isinstance(normalize, bool):
        raise ValueError(
            "Invalid value for argument normalize: expected True or False. "
            f"Received: normalize={normalize!r}"
        )
    inputs = measured_inputs(model, input_name, "infidelity")
    split = split_logits(model, embedding_layer=embedding_layer)
    tokens = inputs is None and split.tokens is not None
    source = data_source(data, tokens, inputs, input_name)
    shape = source.sample_shape
    if tokens and perturbation == "gaussian":
        raise ValueError(
            "Invalid value for argument perturbation: a token model's map has one "
            "value per token, so Gaussian noise on the embedding has no I . Phi; "
            "use 'square' (a run of removed tokens). Received: "
            "perturbation='gaussian'"
        )
    if not tokens and perturbation == "square":
        if len(shape) < 2 or square_size > min(shape[0], shape[1]):
            raise ValueError(
                "Invalid value for argument square_size: expected a square that "
                f"fits in the image (samples of shape {shape}). Received: "
                f"square_size={square_size!r}"
            )
    method, maps = resolve_method(model, attributions, tokens, embedding_layer)
    label = label_of(method, label)
    options = {"steps": steps, "square_size": square_size, "seed": seed}
    options.update(normalize=normalize, chunk=batch_size)
    if tokens:
        kernel = traced(model, _token_kernel, embedding_layer, None, **options)
    else:
        options.update(perturbation=perturbation, noise_std=noise_std)
        kernel = traced_measure(model, _kernel, input_name, **options)
    rows = [
        kernel(x_batch, batch_maps, t_batch, ids, base)
        for x_batch, t_batch, batch_maps, ids, base in scored_batches(
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
    return InfidelityResult(
        per_sample=tf.concat(rows, axis=0).numpy(),
        perturbation=perturbation,
        normalized=normalize,
        label=label,
    )
