"""ROAD: RemOve And Debias (Rong et al., ICML 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods").

Pixels are ranked by their attribution summed over channels. For each
fraction f_k, the top (MoRF, most relevant first) or bottom (LeRF, least
relevant first) n_k = round(f_k * H * W) pixels of x are removed and filled
in by *noisy linear imputation*, and the model scores the result:

    s_k = score(impute(x, M_k)),   M_k = the n_k removed pixels

with score the accuracy (argmax of the logits equals the target), the
target's softmax probability, or its logit S_c. A faithful ranking gives a
MoRF curve that falls fast and a LeRF curve that stays high.

Noisy linear imputation: every removed pixel i takes the weighted mean of
its 8 neighbours N(i) inside the image,

    x_i = sum_{j in N(i)} w_ij x_j / sum_{j in N(i)} w_ij,
    w_ij = 1/6 (direct neighbour), 1/12 (diagonal neighbour),

where kept neighbours are known values and removed ones are unknowns: one
sparse linear system per image, shared by its channels (one right-hand
side per channel), solved by a sparse LU factorisation. Gaussian noise of
std `noise` (input units) is then added to the imputed pixels only, so the
filled-in values carry no sharp trace of the mask's shape (the paper's
"debiasing": the model cannot read the removed pixels' positions back).

The system (the weighted graph Laplacian of the 8-neighbour grid restricted
to the removed pixels, plus their links to kept pixels) is non-singular as
soon as every 8-connected component of removed pixels touches a kept pixel;
on a connected grid a component that touches none is closed under taking
neighbours, so it is the whole image. That single singular case (every
pixel of an image removed) has the constants as solutions and no kept
pixel whose mean could be used: its minimum-norm solution, 0 in every
channel, is taken (then noise is added).

Random streams: `noisy_linear_imputation` draws the noise of image b of its
batch from `np.random.default_rng([seed, b])`; `road` draws that of sample
i (its position in the data) at fraction index k from
`np.random.default_rng([seed, i, k])`. Each draws
`normal(0, noise, (removed pixels, channels))`, removed pixels in row-major
order; so `road` does not depend on `batch_size`.

Imputation runs on the CPU with NumPy/SciPy. The model then scores all
K perturbed copies of a data batch (one tensor) in chunks of `batch_size`
inputs inside one traced loop, like `deletion`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import tensorflow as tf

from keras_attreg._logits import split_logits, target_scores, unwrap
from keras_attreg._validation import check_choice, check_float, check_int
from keras_attreg.attributions._utils import DEFAULT_BATCH_SIZE, for_each_chunk
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

ORDERS = ("morf", "lerf")
SCORES = ("accuracy", "probability", "logit")
IMPUTATIONS = ("linear", "fixed")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# (dy, dx, weight) of the 8 neighbours: 1/6 direct, 1/12 diagonal.
_NEIGHBOURS = tuple(
    (dy, dx, 1.0 / 6.0 if dy == 0 or dx == 0 else 1.0 / 12.0)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


@dataclasses.dataclass
class ROADResult:
    """A ROAD curve and its per-sample values.

    Attributes:
        fractions: the fractions f_k of the pixels removed, shape (K,).
        curve: the mean score over the samples, per fraction, shape (K,).
        per_sample: the score of each sample, shape (samples, K).
        order: "morf" (most relevant removed first) or "lerf" (least).
        score: "accuracy", "probability" or "logit".
        label: the name of the attributions (for plots and `to_dict`).
        imputation: "linear" (noisy linear imputation) or "fixed".
    """

    fractions: np.ndarray
    curve: np.ndarray
    per_sample: np.ndarray
    order: str
    score: str
    label: str = PRECOMPUTED
    imputation: str = "linear"

    def standard_error(self) -> np.ndarray:
        """Standard error of `curve` across samples, per fraction, (K,).

            SE_k = std(s_k, ddof=1) / sqrt(m)

        over the m samples (NaN when m < 2).
        """
        return standard_error(self.per_sample)

    def area(self) -> float:
        """The trapezoid area under `curve` over `fractions` (from f_1 to f_K,
        no end points added; 0 for a single fraction): low is faithful for
        MoRF, high for LeRF."""
        if len(self.fractions) < 2:
            return 0.0
        heights = (self.curve[1:] + self.curve[:-1]) / 2
        return float((heights * np.diff(self.fractions)).sum())

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN written as None)."""

        area = self.area()
        return {
            "order": self.order,
            "score": self.score,
            "imputation": self.imputation,
            "label": self.label,
            "fractions": [float(f) for f in self.fractions],
            "curve": json_list(self.curve),
            "standard_error": json_list(self.standard_error()),
            "area": None if np.isnan(area) else area,
            "num_samples": int(self.per_sample.shape[0]),
        }

    def plot(self, path, *others: ROADResult, label: str | None = None):
        """Writes this curve, and `others` for comparison, to one image file.

        Each curve is labelled with its `label` (`label` renames this one),
        order and area, and drawn with a band of one standard error across
        samples.

        Returns:
            The `matplotlib.figure.Figure`.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        this = self if label is None else dataclasses.replace(self, label=label)
        results = [this, *others]
        figure = Figure(figsize=(5, 3.5))
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        for result in results:
            (line,) = ax.plot(
                result.fractions,
                result.curve,
                marker="o",
                ms=3,
                label=(
                    f"{result.label}, {result.order.upper()} (area {result.area():.3f})"
                ),
            )
            error = result.standard_error()
            if not np.all(np.isnan(error)):
                ax.fill_between(
                    result.fractions,
                    result.curve - error,
                    result.curve + error,
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel(" / ".join(sorted({result.score for result in results})))
        imputations = " / ".join(sorted({result.imputation for result in results}))
        ax.set_title(
            f"ROAD, {imputations} imputation (bands: ±1 standard error)", fontsize=10
        )
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return figure


def _impute_image(image: np.ndarray, mask: np.ndarray, noise: float, rng):
    """One image (H, W, C) with its `mask` (H, W) pixels linearly imputed
    (float64), plus noise drawn from `rng` on those pixels."""
    out = np.array(image, dtype=np.float64)
    rows, cols = np.nonzero(mask)
    count = rows.size
    if count == 0:
        return out
    channels = out.shape[-1]
    if count == mask.size:
        # Singular system (no kept pixel): minimum-norm solution, 0.
        values = np.zeros((count, channels))
    else:
        height, width = mask.shape
        index = np.full(mask.shape, -1, np.int64)
        index[rows, cols] = np.arange(count)
        degree = np.zeros(count)
        rhs = np.zeros((count, channels))
        entries_i, entries_j, entries_w = [], [], []
        for dy, dx, weight in _NEIGHBOURS:
            ny, nx = rows + dy, cols + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            source = np.nonzero(inside)[0]
            ny, nx = ny[inside], nx[inside]
            degree[source] += weight
            neighbour = index[ny, nx]
            unknown = neighbour >= 0
            entries_i.append(source[unknown])
            entries_j.append(neighbour[unknown])
            entries_w.append(np.full(int(unknown.sum()), -weight))
            known = ~unknown
            # Each offset reaches every source at most once: no repeats.
            rhs[source[known]] += weight * out[ny[known], nx[known]]
        entries_i.append(np.arange(count))
        entries_j.append(np.arange(count))
        entries_w.append(degree)
        system = scipy.sparse.csc_matrix(
            (
                np.concatenate(entries_w),
                (np.concatenate(entries_i), np.concatenate(entries_j)),
            ),
            shape=(count, count),
        )
        values = scipy.sparse.linalg.splu(system).solve(rhs)
    if noise > 0:
        values = values + rng.normal(0.0, noise, size=(count, channels))
    out[rows, cols] = values
    return out


def _check_images(x, mask):
    x = np.asarray(x)
    if x.ndim not in (3, 4) or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            "Invalid value for argument x: expected images of shape (batch, H, W) "
            f"or (batch, H, W, C). Received: x with shape {x.shape}"
        )
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != x.shape[:3]:
        raise ValueError(
            "Invalid value for argument mask: expected a boolean array of shape "
            f"(batch, H, W) = {x.shape[:3]} (True = removed). Received: mask "
            f"with shape {mask.shape} and dtype {mask.dtype}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(
            "Invalid value for argument x: expected finite values (no NaN or "
            "Inf). Received: x with non-finite values"
        )
    return x, mask


def noisy_linear_imputation(x, mask, noise: float = 0.01, seed: int = 0):
    """Fills the masked pixels of each image by noisy linear imputation.

    Each removed pixel i solves, jointly with the other removed pixels,

        x_i = sum_{j in N(i)} w_ij x_j / sum_{j in N(i)} w_ij

    over its 8 neighbours N(i) inside the image (w_ij = 1/6 for the 4 direct
    neighbours, 1/12 for the 4 diagonal ones; kept neighbours are known,
    removed ones unknown), one sparse system per image with one right-hand
    side per channel; then N(0, noise^2) noise is added to the imputed
    values (image b's noise drawn from `np.random.default_rng([seed, b])`,
    `normal(0, noise, (removed pixels, C))` in row-major pixel order). Kept
    pixels are returned unchanged. An image with every pixel removed (the
    only singular system) is imputed as 0 plus noise.

    Args:
        x: images, shape (batch, H, W) or (batch, H, W, C).
        mask: boolean, shape (batch, H, W); True marks a removed pixel (all
            its channels).
        noise: the std of the noise, >= 0, in the units of x.
        seed: a non-negative integer seeding the noise.

    Returns:
        The imputed images, a NumPy array of x's shape and float dtype
        (float32 for integer x).

    Raises:
        ValueError: an argument is invalid, naming it and the value received.

    Example:
        >>> images = np.arange(9, dtype="float32").reshape(1, 3, 3)
        >>> mask = np.zeros((1, 3, 3), bool)
        >>> mask[0, 1, 1] = True
        >>> float(noisy_linear_imputation(images, mask, noise=0.0)[0, 1, 1])
        4.0
    """
    noise = check_float("noise", noise, low=0.0)
    seed = check_int("seed", seed, low=0)
    x, mask = _check_images(x, mask)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    images = x if x.ndim == 4 else x[..., None]
    out = np.stack(
        [
            _impute_image(image, m, noise, np.random.default_rng([seed, b]))
            for b, (image, m) in enumerate(zip(images, mask, strict=True))
        ]
    )
    return out.reshape(x.shape).astype(dtype)


def _check_fractions(fractions) -> np.ndarray:
    values = np.atleast_1d(np.asarray(fractions))
    if (
        values.ndim != 1
        or values.size == 0
        or not (
            np.issubdtype(values.dtype, np.floating)
            or np.issubdtype(values.dtype, np.integer)
        )
        or not np.all(np.isfinite(values))
        or values.min() <= 0
        or values.max() >= 1
    ):
        raise ValueError(
            "Invalid value for argument fractions: expected fractions of the "
            f"pixels in (0, 1), at least one. Received: fractions={fractions!r}"
        )
    return np.unique(values.astype(np.float64))


def _scores(split, make, targets, total, *, score, ends_in_softmax, chunk):
    """The score of every model input, (total,) float64, in chunks of `chunk`:
    `make(indices)` gives the chunk's inputs and the batch sample each copies
    (the split is bound to those samples: a model with several inputs holds
    its other inputs at the sample's own values), scored against the
    sample's entry of `targets` (one per batch sample)."""

    def run(scores, indices):
        inputs, sample = make(indices)
        logits, outputs = split.rows(sample)(inputs)
        chosen = tf.gather(targets, sample)
        if score == "accuracy":
            predicted = tf.argmax(logits, axis=-1, output_type=chosen.dtype)
            value = tf.cast(tf.equal(predicted, chosen), tf.float64)
        elif score == "probability":
            probabilities = (
                outputs
                if ends_in_softmax
                else tf.nn.softmax(tf.cast(logits, "float32"))
            )
            value = tf.cast(target_scores(probabilities, chosen), tf.float64)
        else:
            value = tf.cast(target_scores(logits, chosen), tf.float64)
        return tf.tensor_scatter_nd_update(scores, indices[:, None], value)

    return for_each_chunk(total, chunk, run, tf.zeros([total], tf.float64))


def _imputed_kernel(split, x, inputs, targets, **options):
    """Scores of the imputed copies `inputs` (b * K, ...) of the samples of
    `x` (b, ...), sample-major."""
    copies = tf.shape(inputs)[0] // tf.shape(x)[0]

    def make(indices):
        return tf.gather(inputs, indices), indices // copies

    return _scores(split, make, targets, tf.shape(inputs)[0], **options)


def _filled_kernel(split, x, ranks, targets, baseline, counts, **options):
    """Scores of the fixed-fill copies, built on the device chunk by chunk:
    copy (i, k) is x_i (b, H, W) or (b, H, W, C) with the pixels whose rank
    (b, H * W) is below counts[k] set to `baseline`. Sample-major (b * K,)."""
    steps = tf.shape(counts)[0]
    mask_shape = [-1, *x.shape[1:3]] + ([1] if x.shape.rank == 4 else [])

    def make(indices):
        sample, step = indices // steps, indices % steps
        chosen = tf.gather(ranks, sample) < tf.gather(counts, step)[:, None]
        chosen = tf.reshape(chosen, mask_shape)
        return tf.where(chosen, baseline, tf.gather(x, sample)), sample

    return _scores(split, make, targets, tf.shape(x)[0] * steps, **options)


def _ranks(relevance, order):
    """The rank of each pixel of each row of `relevance` (b, P), 0 for the
    most relevant ("morf") or the least relevant ("lerf"); ties go to the
    lower index in both orders, as a stable sort orders them.

    Keys that float32 holds exactly (single-channel maps, and any map whose
    channel sums round to nothing) are ranked by one sort of unique integers:
    the key's bits mapped to a signed integer in the key's order, negated,
    in the high 32 bits and the pixel index in the low 32, so the ascending
    order is the descending key with ties to the lower index. Other keys go
    through `top_k`, which keeps the lower index first among equal values.
    """
    keys = relevance if order == "morf" else -relevance
    pixels = keys.shape[1]
    compact = keys.astype(np.float32)
    if np.array_equal(compact, keys):
        compact += np.float32(0.0)  # -0.0 -> +0.0: equal keys, equal bits
        bits = compact.view(np.int32)
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
        packed = np.invert(ordered).astype(np.int64) << 32
        packed |= np.arange(pixels, dtype=np.int64)
        packed.sort(axis=1)
        ranking = (packed & 0xFFFFFFFF).astype(np.int32)
    else:
        ranking = tf.math.top_k(keys, k=pixels).indices.numpy()
    ranks = np.empty_like(ranking)
    np.put_along_axis(
        ranks, ranking, np.arange(pixels, dtype=ranking.dtype)[None, :], axis=1
    )
    return ranks


def _imputed(x, ranks, counts, offset, noise, seed):
    """The K imputed copies of each sample of `x` (b, H, W, C), sample-major:
    a (b * K, H, W, C) array; pixel p of sample i is removed at fraction k
    when ranks[i, p] < counts[k]."""
    size, height, width = x.shape[:3]
    masks = ranks[:, None, :] < np.asarray(counts)[None, :, None]
    masks = masks.reshape(size * len(counts), height, width)
    out = [
        _impute_image(
            image,
            mask,
            noise,
            np.random.default_rng([seed, offset + i // len(counts), i % len(counts)]),
        )
        for i, (image, mask) in enumerate(
            zip(np.repeat(x, len(counts), axis=0), masks, strict=True)
        )
    ]
    return np.stack(out).astype(x.dtype)


def road(
    model: keras.Model,
    data,
    attributions,
    fractions=DEFAULT_FRACTIONS,
    order: str = "morf",
    imputation: str = "linear",
    noise: float = 0.01,
    score: str = "accuracy",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 0,
    label: str | None = None,
    baseline=0.0,
    input_name: str | None = None,
) -> ROADResult:
    """ROAD (Rong et al. 2022): the score as pixels are removed and imputed.

        s_k = mean_x score(impute(x, M_k(x))),  |M_k(x)| = round(f_k * H * W)

    M_k(x) holds the top (`order="morf"`) or bottom (`"lerf"`) pixels of x
    ranked by attribution summed over channels (a stable sort: ties go to
    the lower row-major index in both orders). `impute` is noisy linear
    imputation (see `noisy_linear_imputation`; the noise of sample i, its
    position in `data`, at fraction index k comes from
    `np.random.default_rng([seed, i, k])`), or with `imputation="fixed"`
    the constant `baseline` (no noise). A faithful map gives a low MoRF
    curve and a high LeRF curve.

    Args:
        model: a Keras model on images (batch, H, W) or (batch, H, W, C)
            ending in logits or a softmax (S_c is its pre-softmax logit), or
            an `AttributionRegularizedModel` (its base model is used).
        data: `(x, targets)` arrays, or a `tf.data.Dataset`,
            `keras.utils.PyDataset` or generator of `(x, targets)` batches
            (targets as class indices or one-hot).
        attributions: maps aligned with x, a method `method(model, x,
            targets)` called per batch, or a method's name (`"saliency"`).
        fractions: the fractions of the pixels removed, each in (0, 1)
            (sorted, duplicates dropped).
        order: "morf" (most relevant first) or "lerf" (least relevant first).
        imputation: "linear" (noisy linear imputation) or "fixed" (the
            removed pixels set to `baseline`).
        noise: std of the imputation noise (input units), >= 0; "linear" only.
        score: "accuracy" (argmax of the logits equals the target),
            "probability" (softmax probability of the target: the model's own
            output when it ends in a softmax) or "logit" (S_c).
        seed: a non-negative integer seeding the noise.
        batch_size: samples per data batch (their K perturbed copies are
            imputed and held at once) and model inputs per forward pass.
        verbose: 1 shows a progress bar, 0 is silent.
        label: the name of the attributions in plots; default: the method's
            name, or "precomputed maps" for an array.
        baseline: "fixed" only: the value of removed pixels, a scalar or an
            array of one sample's shape.
        input_name: for a model with several inputs (data's x a list or
            dict of arrays, as `fit` takes it), the image input whose pixels
            are removed and imputed; the other inputs keep each sample's own
            values. None for a model with one input.

    Returns:
        A `ROADResult`.

    Raises:
        ValueError: an argument is invalid (naming it and the value
            received), or the model (or its input `input_name`) takes token
            ids (ROAD's imputation is defined for images).

    Example:
        >>> morf = road(model, (x_test[:8], y_test[:8]), "gradient_x_input",
        ...             fractions=(0.25, 0.5, 0.75), score="probability")
        >>> morf.per_sample.shape, morf.curve.shape
        ((8, 3), (3,))
        >>> lerf = road(model, (x_test[:8], y_test[:8]), "gradient_x_input",
        ...             fractions=(0.25, 0.5, 0.75), order="lerf",
        ...             score="probability")
        >>> bool(0.0 <= morf.area() <= 0.5), morf.to_dict()["order"]
        (True, 'morf')
        >>> figure = morf.plot("road.png", lerf)
    """
    model = unwrap(model)
    fractions = _check_fractions(fractions)
    order = check_choice("order", order, ORDERS)
    imputation = check_choice("imputation", imputation, IMPUTATIONS)
    noise = check_float("noise", noise, low=0.0)
    score = check_choice("score", score, SCORES)
    seed = check_int("seed", seed, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    inputs = measured_inputs(model, input_name, "ROAD")
    split = split_logits(model)
    if inputs is None and split.tokens is not None:
        raise ValueError(
            "Invalid value for argument model: ROAD's imputation is defined for "
            "images (pixels filled in from their neighbours), not for token ids. "
            f"Received: model {model.name!r}, which takes token ids through an "
            "Embedding layer"
        )
    source = data_source(data, False, inputs, input_name)
    shape = source.sample_shape
    if len(shape) not in (2, 3):
        raise ValueError(
            "Invalid value for argument data: ROAD's imputation is defined for "
            "images of shape (H, W) or (H, W, C). Received: samples of shape "
            f"{tuple(shape)}"
        )
    method, maps = resolve_method(model, attributions, False, None)
    label = label_of(method, label)
    pixels = int(shape[0]) * int(shape[1])
    counts = np.round(fractions * pixels).astype(np.int32)
    options = {
        "score": score,
        "ends_in_softmax": bool(split.ends_in_softmax),
        "chunk": batch_size,
    }
    kernel = traced_measure(
        model,
        _filled_kernel if imputation == "fixed" else _imputed_kernel,
        input_name,
        **options,
    )
    rows = []
    fill = baseline if imputation == "fixed" else 0.0
    batches = scored_batches(
        model,
        split,
        source,
        method,
        maps,
        batch_size=batch_size,
        baseline=fill,
        verbose=verbose,
    )
    for x_batch, t_batch, batch_maps, ids, base in batches:
        size = int(ids.shape[0])
        relevance = np.asarray(batch_maps, np.float64)
        if len(shape) == 3:
            relevance = relevance.sum(axis=-1)
        ranks = _ranks(relevance.reshape(size, pixels), order)
        if imputation == "fixed":
            values = kernel(x_batch, ranks, t_batch, base, counts)
        else:
            x = np.asarray(source.measured(x_batch))
            copies = _imputed(
                x if len(shape) == 3 else x[..., None],
                ranks,
                counts,
                int(ids[0]),
                noise,
                seed,
            )
            copies = copies if len(shape) == 3 else copies[..., 0]
            values = kernel(x_batch, copies, t_batch)
        rows.append(tf.reshape(values, [size, len(counts)]).numpy())
    per_sample = np.concatenate(rows, axis=0)
    return ROADResult(
        fractions=fractions,
        curve=per_sample.mean(axis=0),
        per_sample=per_sample,
        order=order,
        score=score,
        label=label,
        imputation=imputation,
    )
