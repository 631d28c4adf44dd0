"""Sensitivity-n (Ancona et al., ICLR 2018) and its |Pearson| variant (Kiritoshi).

For an input x, target class c, attributions R(x) and a subset size n:

    R_n = sum_{i in S} R_i^c(x)
    S_n = S_c(x) - S_c(x with x_S set to the baseline)

over `num_subsets` random subsets S of n features; the score of (x, n) is the
Pearson correlation of R_n and S_n across the subsets, and the curve is its
mean over the samples, for each n.

Implementation: for each n a pool of `pool_size` (a few times `num_subsets`)
i.i.d. uniform n-subsets is drawn once; each sample takes `num_subsets`
distinct rows of it, chosen at random per sample. Distinct rows of an i.i.d.
uniform pool are i.i.d. uniform n-subsets, so every sample sees exactly the
subsets the definition asks for; the pool only makes masks cheap (a row copy)
and lets R_n of all rows come from one matrix product. Pool and row choices
come from stateless generators keyed by `seed` and the sample's position in
the data, so results do not depend on `batch_size`. Masks are applied and the
model is called in chunks of `batch_size` inputs inside one traced loop.

Token ids (a model with an Embedding layer): the features are the token
positions, and removing a token sets its embedding vector e_t to the baseline
(0, or the embedding of `baseline_token`). Padding (token id 0) is never
drawn: each sample's features are its own tokens, so the n-subsets of a
sample with L tokens are uniform among its C(L, n) subsets, and a sample with
L < n is skipped (counted in `too_short`, never averaged in). A subset is the
n tokens with the smallest keys of a counter-based hash of (seed, sample,
subset, position), so results do not depend on `batch_size` either.
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
from keras_attreg._validation import check_choice, check_int
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    for_each_chunk,
    num_samples,
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

# A correlation is undefined when R_n or S_n is constant over the subsets:
# std <= _CONSTANT_TOLERANCE * max|value| (float32 inputs, float64 statistics).
_CONSTANT_TOLERANCE = 1e-6


@dataclasses.dataclass
class SensitivityNResult:
    """The Sensitivity-n curve and its per-sample values.

    Attributes:
        n_values: the subset sizes n, shape (K,).
        correlation: mean correlation over the samples where it is defined,
            per n, shape (K,) (NaN where no sample has one).
        per_sample: correlation of each sample, shape (samples, K); NaN where
            undefined (R_n or S_n constant over the subsets).
        undefined: number of samples with an undefined correlation, per n
            (too short samples not included).
        absolute: whether |Pearson| was used.
        label: the name of the attributions (the method's name, or the label
            given to `sensitivity_n`), used by `plot` and `to_dict`.
        too_short: token ids only: number of samples with fewer than n
            tokens, per n (skipped: NaN in `per_sample`); zeros otherwise.
    """

    n_values: np.ndarray
    correlation: np.ndarray
    per_sample: np.ndarray
    undefined: np.ndarray
    absolute: bool
    too_short: np.ndarray | None = None
    label: str = PRECOMPUTED

    @classmethod
    def from_samples(
        cls,
        per_sample: np.ndarray,
        too_short: np.ndarray,
        n_values: np.ndarray,
        absolute: bool,
        label: str,
    ) -> SensitivityNResult:
        """The curve from per-sample correlations (NaN where undefined or too
        short) and the (samples, K) flags of the too-short samples."""
        if absolute:
            per_sample = np.abs(per_sample)
        too_short = too_short.sum(axis=0).astype(np.int64)
        undefined = np.isnan(per_sample).sum(axis=0) - too_short
        defined = per_sample.shape[0] - undefined - too_short
        sums = np.nansum(per_sample, axis=0)
        return cls(
            n_values=n_values,
            correlation=np.where(defined > 0, sums / np.maximum(defined, 1), np.nan),
            per_sample=per_sample,
            undefined=undefined,
            absolute=bool(absolute),
            label=label,
            too_short=too_short,
        )

    def standard_error(self) -> np.ndarray:
        """Standard error of `correlation` across samples, per n, shape (K,).

            SE_n = std(r_n, ddof=1) / sqrt(m_n)

        over the m_n samples whose correlation is defined (NaN where m_n < 2).
        """
        return standard_error(self.per_sample)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN written as None)."""

        return {
            "n_values": [int(n) for n in self.n_values],
            "correlation": json_list(self.correlation),
            "undefined": [int(u) for u in self.undefined],
            "standard_error": json_list(self.standard_error()),
            "too_short": [int(u) for u in np.ravel(self.too_short)]
            if self.too_short is not None
            else None,
            "num_samples": int(self.per_sample.shape[0]),
            "absolute": bool(self.absolute),
            "label": self.label,
        }

    def plot(self, path, *others: SensitivityNResult, label: str | None = None):
        """Writes this curve, and `others` for comparison, to one image file.

        Each curve is labelled with its result's `label` (`label` renames this
        one) and drawn with a band of one standard error across samples (see
        `plot_sensitivity_n`).

        Returns:
            The `matplotlib.figure.Figure`.
        """
        from keras_attreg.plotting import plot_sensitivity_n

        this = self if label is None else dataclasses.replace(self, label=label)
        return plot_sensitivity_n([this, *others], path)


def num_features(sample_shape, features: str) -> int:
    """Number of features of one sample: pixels (channels merged) or elements."""
    shape = tuple(sample_shape)
    if features == "pixel" and len(shape) == 3:
        shape = shape[:-1]
    return int(np.prod(shape))


def default_n_values(count: int, points: int = 16) -> np.ndarray:
    """Log-spaced integers from 1 to about 80% of `count` features."""
    top = max(1, round(0.8 * count))
    return np.unique(np.round(np.geomspace(1, top, points)).astype(np.int64))


def _check_n_values(n_values, count: int, features: str) -> np.ndarray:
    if n_values is None:
        return default_n_values(count)
    values = np.atleast_1d(np.asarray(n_values))
    if (
        values.size == 0
        or not np.issubdtype(values.dtype, np.integer)
        or values.min() < 1
        or values.max() > count
    ):
        raise ValueError(
            "Invalid value for argument n_values: expected integers in "
            f"[1, {count}] (the number of features, features={features!r}). "
            f"Received: n_values={n_values!r}"
        )
    return np.unique(values.astype(np.int64))


def pool_size(num_n: int, num_subsets: int, count: int) -> int:
    """Pool rows per n: up to 4x `num_subsets`, within about 64 MB of masks."""
    factor = (1 << 26) // max(1, num_n * num_subsets * count)
    return num_subsets * max(1, min(4, factor))


def subset_pool(seed: int, n_values, rows: int, count: int) -> tf.Tensor:
    """Boolean masks of `rows` uniform random n-subsets per n, (K, rows, count).

    A row of size n holds the n features with the smallest random keys.
    """
    keys = tf.random.stateless_uniform([len(n_values), rows, count], seed=[seed, -1])
    return tf.stack(
        [
            smallest_keys(group, int(n))
            for group, n in zip(tf.unstack(keys), n_values, strict=True)
        ]
    )


def smallest_keys(keys: tf.Tensor, n: int) -> tf.Tensor:
    """Mask of the features ranked below n by a stable ascending sort of each row.

    Those are the features whose key is below k_n, the key at rank n - 1, or
    equal to it at an index not above i_n, that feature's index. (k_n, i_n) is
    found by a partial sort of min(n, count - n + 1) elements: the n-th smallest
    key (`top_k` breaks ties to the lower index) or the (count - n + 1)-th
    largest with ties to the higher index (`top_k` on the reversed row).
    """
    count = keys.shape[-1]
    if n <= count - n + 1:
        values, indices = tf.math.top_k(-keys, n)
        key_n, index_n = -values[:, -1:], indices[:, -1:]
    else:
        values, indices = tf.math.top_k(tf.reverse(keys, [-1]), count - n + 1)
        key_n, index_n = values[:, -1:], count - 1 - indices[:, -1:]
    return (keys < key_n) | ((keys == key_n) & (tf.range(count) <= index_n))


def subset_rows(
    seed: int, sample_ids: tf.Tensor, num_n: int, rows: int, num_subsets: int
) -> tf.Tensor:
    """Distinct pool rows of each sample, per n: (batch, K, num_subsets)."""
    return tf.map_fn(
        lambda index: tf.argsort(
            tf.random.stateless_uniform([num_n, rows], seed=tf.stack([seed, index]))
        )[:, :num_subsets],
        tf.cast(sample_ids, tf.int32),
        fn_output_signature=tf.int32,
    )


def _pearson(r: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """Pearson correlation over the last axis; NaN where r or s is constant."""
    r, s = tf.cast(r, tf.float64), tf.cast(s, tf.float64)
    r_centred = r - tf.reduce_mean(r, axis=-1, keepdims=True)
    s_centred = s - tf.reduce_mean(s, axis=-1, keepdims=True)
    r_std = tf.sqrt(tf.reduce_mean(r_centred**2, axis=-1))
    s_std = tf.sqrt(tf.reduce_mean(s_centred**2, axis=-1))
    undefined = tf.logical_or(
        r_std <= _CONSTANT_TOLERANCE * tf.reduce_max(tf.abs(r), axis=-1),
        s_std <= _CONSTANT_TOLERANCE * tf.reduce_max(tf.abs(s), axis=-1),
    )
    correlation = tf.reduce_mean(r_centred * s_centred, axis=-1) / (r_std * s_std)
    nan = tf.constant(np.nan, tf.float64)
    return tf.where(undefined, nan, tf.clip_by_value(correlation, -1.0, 1.0))


def _kernel(
    split,
    x,
    attributions,
    targets,
    sample_ids,
    baseline,
    pool,
    *,
    seed: int,
    num_subsets: int,
    pixel: bool,
    chunk: int,
):
    num_n, rows, count = pool.shape
    batch, items = tf.shape(x)[0], num_n * num_subsets
    if pixel:
        attributions = tf.reduce_sum(attributions, axis=-1)
    pool = tf.reshape(pool, [num_n * rows, count])
    # Rows of the flat pool used by (sample, n, subset), and R_n of every row.
    chosen = subset_rows(seed, sample_ids, num_n, rows, num_subsets)
    chosen = tf.reshape(chosen + rows * tf.range(num_n)[:, None], [batch, items])
    pool_relevance = tf.matmul(
        tf.reshape(attributions, [-1, count]), tf.cast(pool, x.dtype), transpose_b=True
    )
    r_n = tf.gather(pool_relevance, chosen, axis=1, batch_dims=1)
    mask_shape = [-1, *x.shape[1:-1], 1] if pixel else [-1, *x.shape[1:]]
    scores = target_scores(split.logits(x), targets)

    def perturb(s_n, indices):
        sample = indices // items
        mask = tf.reshape(
            tf.gather(pool, tf.gather(tf.reshape(chosen, [-1]), indices)), mask_shape
        )
        masked = tf.where(mask, baseline, tf.gather(x, sample))
        drop = tf.gather(scores, sample) - target_scores(
            split.rows(sample).logits(masked), tf.gather(targets, sample)
        )
        return tf.tensor_scatter_nd_update(s_n, indices[:, None], drop)

    s_n = for_each_chunk(
        batch * items, chunk, perturb, tf.zeros([batch * items], x.dtype)
    )
    shape = [batch, num_n, num_subsets]
    return _pearson(tf.reshape(r_n, shape), tf.reshape(s_n, shape))


def _mix(h: tf.Tensor) -> tf.Tensor:
    """The 32-bit finaliser of MurmurHash3: a bijective avalanche mix."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
    h = h * tf.constant(0x85EBCA6B, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13))
    h = h * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def token_subsets(
    seed: int, sample_ids, items, real: tf.Tensor, n: tf.Tensor
) -> tf.Tensor:
    """Masks of random n-subsets of each row's real tokens, (rows, seq_len).

    Row r takes the n[r] real positions with the smallest keys
    hash(seed, sample_ids[r], items[r], position) (padding keys sort last).
    """
    golden = tf.constant(0x9E3779B9, tf.uint32)

    def word(value):
        return tf.cast(tf.cast(value, tf.int64) % (1 << 32), tf.uint32)

    h = _mix(word(seed) + golden)
    h = _mix(h + word(sample_ids))
    h = _mix(h + word(items))
    positions = word(tf.range(tf.shape(real)[1]))
    keys = tf.cast(_mix(h[:, None] + positions[None, :] * golden), tf.int64)
    keys = tf.where(real, keys, keys + (1 << 32))
    # The keys of a row are distinct (`_mix` is a bijection and the positions
    # times the odd `golden` differ modulo 2^32), so the n smallest are those
    # up to the n-th smallest: one partial sort instead of ranking every key.
    n = tf.cast(n, tf.int32)
    smallest = -tf.math.top_k(-keys, tf.reduce_max(n)).values
    return tf.logical_and(
        real, keys <= tf.gather(smallest, n - 1, batch_dims=1)[:, None]
    )


def replace_tokens(e, sample, mask, baseline):
    """Rows `e[sample]` with the masked positions set to the baseline's: one
    gather from the rows of e and of the baseline, (rows, seq_len, dim)."""
    batch, length, dim = tf.unstack(tf.shape(e))
    table = tf.concat(
        [
            tf.reshape(e, [-1, dim]),
            tf.reshape(tf.broadcast_to(baseline, [length, dim]), [-1, dim]),
        ],
        axis=0,
    )
    position = tf.range(length)[None, :]
    index = tf.where(
        mask,
        batch * length + position,
        tf.cast(sample, tf.int32)[:, None] * length + position,
    )
    return tf.gather(table, index)


def _token_kernel(
    tokens,
    e,
    attributions,
    targets,
    sample_ids,
    baseline,
    n_values,
    *,
    seed: int,
    num_subsets: int,
    chunk: int,
):
    num_n = n_values.shape[0]
    batch, items = tf.shape(e)[0], num_n * num_subsets
    real = tf.logical_not(tokens.padding())
    scores = target_scores(tokens.logits(e), targets)

    def perturb(state, indices):
        r_n, s_n = state
        sample, item = indices // items, indices % items
        mask = token_subsets(
            seed,
            tf.gather(sample_ids, sample),
            item,
            tf.gather(real, sample),
            tf.gather(n_values, item // num_subsets),
        )
        masked = replace_tokens(e, sample, mask, baseline)
        drop = tf.gather(scores, sample) - target_scores(
            tokens.rows(sample).logits(masked), tf.gather(targets, sample)
        )
        kept = tf.where(mask, tf.gather(attributions, sample), 0.0)
        return (
            tf.tensor_scatter_nd_update(
                r_n, indices[:, None], tf.reduce_sum(kept, axis=1)
            ),
            tf.tensor_scatter_nd_update(s_n, indices[:, None], drop),
        )

    zeros = tf.zeros([batch * items], e.dtype)
    r_n, s_n = for_each_chunk(batch * items, chunk, perturb, (zeros, zeros))
    shape = [batch, num_n, num_subsets]
    correlation = _pearson(tf.reshape(r_n, shape), tf.reshape(s_n, shape))
    lengths = tf.reduce_sum(tf.cast(real, n_values.dtype), axis=1)
    short = lengths[:, None] < n_values[None, :]
    return tf.where(short, tf.constant(np.nan, tf.float64), correlation)


class _PixelSubsets:
    """Random n-subsets of pixels (channels together) or of elements: one pool
    of subset masks per n, the removed features set to the baseline (of the
    input `input_name` of a model with several inputs)."""

    def __init__(
        self, sample_shape, features: str, seed: int, input_name: str | None = None
    ):
        self.features, self.seed, self.input_name = features, seed, input_name
        self.pixel = features == "pixel" and len(sample_shape) == 3
        self.count = num_features(sample_shape, features)

    def kernel(self, model, n_values, num_subsets: int, chunk: int, embedding_layer):
        """`kernel(x, maps, targets, ids, baseline)`: (batch, K) correlations."""
        del embedding_layer  # No embedding: the features are the input's.
        rows = pool_size(len(n_values), num_subsets, self.count)
        pool = subset_pool(self.seed, n_values, rows, self.count)
        options = {"seed": self.seed, "num_subsets": num_subsets, "chunk": chunk}
        options["pixel"] = self.pixel
        function = traced_measure(model, _kernel, self.input_name, **options)
        return lambda *batch: function(*batch, pool)

    def too_short(self, x_batch, n_values) -> np.ndarray:
        """Every sample has all `count` features: no sample is too short."""
        return np.zeros((num_samples(x_batch), len(n_values)), bool)


class _TokenSubsets:
    """Random n-subsets of each sample's real tokens (padding never drawn),
    their embedding vectors set to the baseline."""

    features = "token"

    def __init__(self, sample_shape, seed: int):
        self.seed, self.count = seed, sample_shape[0]

    def kernel(self, model, n_values, num_subsets: int, chunk: int, embedding_layer):
        """`kernel(ids, maps, targets, sample_ids, baseline)`: (batch, K)
        correlations, NaN for too short samples."""
        n_values = tf.constant(n_values, tf.int32)
        function = traced(
            model,
            _token_kernel,
            embedding_layer,
            None,
            seed=self.seed,
            num_subsets=num_subsets,
            chunk=chunk,
        )
        return lambda *batch: function(*batch, n_values)

    def too_short(self, x_batch, n_values) -> np.ndarray:
        """Samples with fewer real (non-zero) tokens than n, (batch, K)."""
        lengths = np.count_nonzero(x_batch.numpy(), axis=1)
        return lengths[:, None] < np.asarray(n_values)[None, :]


def sensitivity_n(
    model: keras.Model,
    data,
    attributions,
    n_values=None,
    num_subsets: int = 100,
    absolute: bool = False,
    baseline=0.0,
    features: str = "pixel",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verbose: int = 1,
    label: str | None = None,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
    input_name: str | None = None,
) -> SensitivityNResult:
    """Sensitivity-n of attributions (Ancona et al. 2018, Sec. 4).

        score(x, n) = corr_S( sum_{i in S} R_i^c(x),
                              S_c(x) - S_c(x with x_S = baseline) ),  |S| = n

    Pearson correlation over `num_subsets` random subsets S; the curve is the
    mean over samples. `absolute=True` uses |Pearson| (Kiritoshi et al. 2019,
    for standardised inputs). Samples with constant R_n or S_n have an
    undefined correlation: they are counted in `undefined`, not averaged in.
    For token ids (see the module docstring) the features are the tokens,
    removal sets their embedding to the baseline and padding is never drawn.
    For a model with several inputs, the features are those of the input
    `input_name`, the other inputs held at each sample's own values.

    Args:
        model: a Keras model; S_c is its pre-softmax logit of class c. An
            `AttributionRegularizedModel` stands for its base model (which
            is also what a callable `attributions` receives).
        data: `(x, targets)` arrays, or a `tf.data.Dataset` of `(x, targets)`
            batches (targets as class indices or one-hot); for several
            inputs, x a list or dict of arrays (as `fit` takes it).
        attributions: an array aligned with `x` (for token ids: one value per
            token, (samples, seq_len); for several inputs: the maps of the
            input `input_name`), a method `method(model, x, targets)` called
            batch by batch (for several inputs, its map of `input_name` is
            taken), or a method's name (`"saliency"`, ...).
        n_values: subset sizes; default 16 log-spaced values from 1 to 80% of
            the features.
        num_subsets: subsets per (sample, n), >= 2.
        absolute: use |Pearson|.
        baseline: value given to removed features: scalar or an array of one
            sample's shape (for token ids: of e's sample shape; 0 is the zero
            embedding).
        features: "pixel" (channels of a (H, W, C) sample removed together,
            attributions summed over channels) or "element"; ignored for token
            ids (the features are the tokens).
        seed: seed of the subsets.
        batch_size: samples per traced call and model inputs per forward pass.
        verbose: 1 shows a progress bar, 0 is silent.
        label: the name of the attributions in plots; default: the method's
            name (`attributions.__name__`), or "precomputed maps" for an array.
        embedding_layer: for token ids, the name of the Embedding layer (as in
            `kar.attributions.saliency`; default: the wrapper's own for an
            `AttributionRegularizedModel` given one). A method `attributions`
            is then called with it; one without an `embedding_layer`
            argument is accepted only when that layer is the one it finds
            by itself.
        baseline_token: for token ids, a token id whose embedding replaces
            the removed tokens' (overrides `baseline`).
        input_name: for a model with several inputs, the name of the (float)
            input whose features are removed; required there, None otherwise.

    Returns:
        A `SensitivityNResult`.

    Example:
        >>> from keras_attreg.attributions import gradient_x_input
        >>> result = sensitivity_n(model, (x_test, y_test), gradient_x_input,
        ...                        n_values=[1, 10, 100], num_subsets=16, verbose=0)
        >>> result.correlation.shape, result.per_sample.shape
        ((3,), (32, 3))
        >>> result.label
        'gradient_x_input'
        >>> figure = result.plot("sensitivity_n.png")
    """
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    num_subsets = check_int("num_subsets", num_subsets, low=2)
    features = check_choice("features", features, ("pixel", "element"))
    seed = check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, low=1)
    split = split_logits(model, embedding_layer=embedding_layer)
    inputs = measured_inputs(model, input_name, "Sensitivity-n")
    tokens = inputs is None and split.tokens is not None
    source = data_source(data, tokens, inputs, input_name)
    subsets = (
        _TokenSubsets(source.sample_shape, seed)
        if tokens
        else _PixelSubsets(source.sample_shape, features, seed, input_name)
    )
    n_values = _check_n_values(n_values, subsets.count, subsets.features)
    method, maps = resolve_method(model, attributions, tokens, embedding_layer)
    kernel = subsets.kernel(model, n_values, num_subsets, batch_size, embedding_layer)
    rows, short = [], []
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
    ):
        rows.append(kernel(x_batch, batch_maps, t_batch, ids, base))
        short.append(subsets.too_short(x_batch, n_values))
    return SensitivityNResult.from_samples(
        tf.concat(rows, axis=0).numpy(),
        np.concatenate(short),
        n_values,
        absolute,
        label_of(method, label),
    )
