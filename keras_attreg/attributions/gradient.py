"""Gradient attributions: saliency, gradient*input, integrated gradients, SmoothGrad.

All scores are S_c(x), the pre-softmax logit of the target class c. For a
model on token ids, x is e, the output of its Embedding layer (found
automatically, or named by `embedding_layer`), and each method returns one
value per token: its embedding-level map summed over the embedding axis
(saliency: sum_d |dS_c/de_{t,d}|), 0 at padding positions (token id 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_attreg._inputs import EmbeddedInputs, model_inputs
from keras_attreg._logits import (
    attributed_embedding,
    input_gradient,
    split_logits,
    unwrap,
)
from keras_attreg._tokens import TokenSplit
from keras_attreg._validation import check_float, check_int, check_targets
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    attribute,
    batches,
    for_each_chunk,
    graph_batch,
    joined,
    reference,
    traced,
)
from keras_attreg.attributions.modified_gradient import deeplift_rescale, epsilon_lrp
from keras_attreg.attributions.occlusion import occlusion


def _gradient_kernel(split, x, targets, *, absolute: bool):
    gradient = input_gradient(split, x, targets)[1]
    return tf.nest.map_structure(tf.abs, gradient) if absolute else gradient


def _gradient_x_input_kernel(split, x, targets):
    return tf.nest.map_structure(tf.multiply, x, input_gradient(split, x, targets)[1])


def _integrated_gradients_kernel(
    split, x, targets, baseline, *, steps: int, chunk: int
):
    delta = split.fix_padding(tf.nest.map_structure(tf.subtract, x, baseline))

    def point(x, delta, sample, position):
        alpha = (tf.cast(position, x.dtype) + 0.5) / steps
        per_sample = [-1] + [1] * (x.shape.rank - 1)
        return tf.gather(x, sample) - tf.reshape(1 - alpha, per_sample) * tf.gather(
            delta, sample
        )

    def accumulate(total, indices):
        sample = indices // steps
        points = tf.nest.map_structure(
            lambda x, delta: point(x, delta, sample, indices % steps), x, delta
        )
        gradient = input_gradient(
            split.rows(sample), points, tf.gather(targets, sample)
        )[1]
        return tf.nest.map_structure(
            lambda t, g: tf.tensor_scatter_nd_add(t, sample[:, None], g),
            total,
            gradient,
        )

    first = tf.nest.flatten(x)[0]
    total = for_each_chunk(
        tf.shape(first)[0] * steps,
        chunk,
        accumulate,
        tf.nest.map_structure(tf.zeros_like, x),
    )
    return tf.nest.map_structure(lambda d, t: d * t / steps, delta, total)


def saliency(
    model: keras.Model,
    x,
    targets=None,
    absolute: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
) -> tf.Tensor:
    """Saliency map of Simonyan et al. (2014): R_i = |dS_c(x)/dx_i|.

    Args:
        model: a Keras model (a final softmax is skipped: S_c is the logit),
            or an `AttributionRegularizedModel` (its base model is used).
        x: inputs (array or tensor), or a `tf.data.Dataset` of
            `(x, labels)` batches; token ids (batch, seq_len) for a model with
            an Embedding layer; for a model with several (float) inputs, a
            list, tuple or dict of arrays, as `fit` takes them.
        targets: class index c of each sample (or one-hot labels); None when
            `x` is a dataset.
        absolute: False gives the signed gradient dS_c/dx_i.
        batch_size: samples per traced call.
        embedding_layer: for token ids, the name of the Embedding layer whose
            output e the gradient is taken at (default: for an
            `AttributionRegularizedModel` its own `embedding_layer`, else the
            one fed by the model's input).

    Returns:
        A tensor of the shape of `x` (for token ids, (batch, seq_len):
        sum_d |dS_c/de_{t,d}|, or sum_d dS_c/de_{t,d} when not `absolute`;
        for several inputs, one map per input in the structure of `x`).

    Example:
        >>> maps = saliency(model, x_test[:8], y_test[:8])
    """
    return attribute(
        model,
        x,
        targets,
        _gradient_kernel,
        batch_size,
        embedding_layer=embedding_layer,
        absolute=bool(absolute),
    )


def gradient_x_input(
    model: keras.Model,
    x,
    targets=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
) -> tf.Tensor:
    """Gradient * input (Shrikumar et al. 2016): R_i = x_i * dS_c(x)/dx_i.

    Args and returns as `saliency` (for token ids: sum_d e_{t,d} dS_c/de_{t,d}).

    Example:
        >>> maps = gradient_x_input(model, x_test[:8], y_test[:8])
    """
    return attribute(
        model,
        x,
        targets,
        _gradient_x_input_kernel,
        batch_size,
        embedding_layer=embedding_layer,
    )


def integrated_gradients(
    model: keras.Model,
    x,
    targets=None,
    baseline=0.0,
    steps: int = 50,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
) -> tf.Tensor:
    """Integrated gradients (Sundararajan et al. 2017), midpoint rule.

        R_i = (x_i - b_i) * integral_0^1 dS_c(b + a (x - b))/dx_i da
            ~ (x_i - b_i) / m * sum_{k=0}^{m-1} dS_c(b + a_k (x - b))/dx_i,
        a_k = (k + 1/2) / m                       (m = `steps`)

    The midpoint rule has an O(1/m^2) error for smooth paths; completeness
    (sum_i R_i = S_c(x) - S_c(b)) holds up to that error.

    Args:
        model, x, targets, embedding_layer: as `saliency`.
        baseline: b, a scalar or an array of one sample's shape (for token
            ids: of e's sample shape (seq_len, dim); 0 is the zero embedding;
            padding positions keep their embedding, b_t = e_t there); for
            several inputs, a scalar or a list or dict of one per input.
        steps: m, the number of gradient evaluations per sample.
        batch_size: the largest number of inputs per model call (interpolation
            points of several samples share a call), which bounds memory.
        baseline_token: for token ids, a token id (e.g. a pad or unknown
            token) whose embedding, at every position, is b; overrides
            `baseline`.

    Returns:
        A tensor of the shape of `x` (for token ids, (batch, seq_len), whose
        sum over the tokens is S_c(x) - S_c(b) up to the quadrature error).

    Example:
        >>> maps = integrated_gradients(model, x_test[:8], y_test[:8], steps=64)
    """
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    return attribute(
        model,
        x,
        targets,
        _integrated_gradients_kernel,
        batch_size,
        tensors=lambda x_batch: (
            reference(model, baseline, baseline_token, x_batch, embedding_layer),
        ),
        embedding_layer=embedding_layer,
        steps=steps,
        chunk=batch_size,
    )


def _noise(x, key, noise, samples: int):
    """The noise e_k of `samples` copies of each sample of one input, seed
    `key`: Normal(0, sigma^2), sigma = noise * (max - min) of the sample."""
    axes = list(range(1, x.shape.rank))
    spread = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
    sigma = tf.reshape(tf.cast(noise, x.dtype) * spread, [-1] + [1] * len(axes))
    shape = tf.concat([[tf.shape(x)[0] * samples], tf.shape(x)[1:]], axis=0)
    draws = tf.random.stateless_normal(shape, seed=key, dtype=x.dtype)
    return tf.repeat(sigma, samples, axis=0) * draws


def _noisy_average(model, x, targets, key, noise, *, method, samples: int):
    """M(x + e_k) averaged over k for one batch; noise drawn with seed `key`
    (for a model with several inputs, input j with `fold_in(key, j)`, its
    sigma from its own range)."""
    flat = tf.nest.flatten(x)
    keys = (
        [key]
        if len(flat) == 1
        else [
            tf.random.experimental.stateless_fold_in(key, j) for j in range(len(flat))
        ]
    )
    change = tf.nest.pack_sequence_as(
        x,
        [
            _noise(tensor, seed, noise, samples)
            for tensor, seed in zip(flat, keys, strict=True)
        ],
    )
    if isinstance(model, (TokenSplit, EmbeddedInputs)):
        change = model.fix_padding(change)  # padding is not a feature
    noisy = tf.nest.map_structure(
        lambda t, c: tf.repeat(t, samples, axis=0) + c, x, change
    )
    maps = method(model, noisy, tf.repeat(targets, samples, axis=0))
    return tf.nest.map_structure(
        lambda m, t: tf.reduce_mean(
            tf.reshape(tf.convert_to_tensor(m), [-1, samples, *t.shape[1:]]), axis=1
        ),
        maps,
        x,
    )


def _smoothgrad_kernel(split, x, targets, key, noise, *, method, options, samples):
    if isinstance(split, (TokenSplit, EmbeddedInputs)):
        # x is (or holds) e: the method runs on the noisy embeddings of the
        # repeated ids.
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        model = split.rows(tf.repeat(tf.range(batch), samples))
    else:
        model = split.model
    return _noisy_average(
        model,
        x,
        targets,
        key,
        noise,
        method=functools.partial(method, **dict(options)),
        samples=samples,
    )


def _built_in(method) -> tuple[Callable, tuple] | None:
    """`(function, sorted keyword options)` of a built-in method, else None.

    Accepts the method itself or a `functools.partial` of it with hashable
    keyword values; these run traced inside SmoothGrad's own graph.
    """
    function, options = method, {}
    if isinstance(method, functools.partial) and not method.args:
        function, options = method.func, method.keywords
    if function not in _BUILT_IN:
        return None
    options = tuple(sorted(options.items()))
    try:
        hash(options)
    except TypeError:
        return None
    return function, options


def smoothgrad(
    model: keras.Model,
    x,
    targets=None,
    samples: int = 25,
    noise: float = 0.15,
    method: Callable = saliency,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
) -> tf.Tensor:
    """SmoothGrad (Smilkov et al. 2017) over any attribution method M.

        R(x) = 1/N * sum_{k=1}^{N} M(x + e_k),
        e_k ~ Normal(0, sigma^2),  sigma = noise * (max(x) - min(x))

    with the range taken per sample.

    Samples are processed `batch_size // samples` at a time; the noise of the
    i-th such batch is drawn with the stateless seed `(seed, i)`. A built-in
    method (or a `functools.partial` of one with hashable options) runs with
    noise generation and averaging in one traced function per batch; any other
    callable is called eagerly on the noisy batch. Both give the same maps.
    For token ids the noise is added to e (its range taken over the sample's
    embedding output), never to padding positions, and M must be a built-in
    method (for token ids among several inputs: any but occlusion). Called
    inside a traced function (a served signature, see
    `kar.export_with_explanations`), the symbolic batch is one piece, its
    noise drawn with the seed `(seed, 0)`: the maps of an eager call with
    `batch_size >= samples * len(x)`.

    Args:
        model, x, targets, embedding_layer: as `saliency`.
        samples: N, noisy copies per sample.
        noise: sigma as a fraction of each sample's value range.
        method: the base method, `method(model, x, targets)`, e.g. `saliency`
            or `functools.partial(integrated_gradients, steps=20)`, or its
            name (`"saliency"`, see `kar.attributions.get`).
        seed: seed of the noise (results are deterministic for a given seed
            and `batch_size`).
        batch_size: noisy inputs handed to `method` per call.

    Returns:
        A tensor of the shape of `x`.

    Example:
        >>> maps = smoothgrad(model, x_test[:8], y_test[:8], method=gradient_x_input)
    """
    embedding_layer = attributed_embedding(model, embedding_layer)
    model = unwrap(model)
    samples = check_int("samples", samples, low=1)
    noise = check_float("noise", noise, low=0.0)
    seed = check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, low=1)
    method = get(method, name="method")
    inputs = model_inputs(model)
    split = split_logits(model, embedding_layer=embedding_layer)
    tokens = split.tokens
    built_in = _built_in(method)
    if (
        inputs is not None
        and inputs.floats != inputs.names
        and (built_in is None or built_in[0] not in _EMBEDDED_METHODS)
    ):
        raise ValueError(
            "Invalid value for argument method: model "
            f"{model.name!r} takes token ids among several inputs, where "
            "SmoothGrad adds its noise to the Embedding outputs and takes "
            "saliency, gradient_x_input, integrated_gradients, epsilon_lrp or "
            "deeplift_rescale. Received: "
            f"method={method!r}"
        )
    if built_in is None and tokens is not None:
        raise ValueError(
            "Invalid value for argument method: on token ids SmoothGrad adds its "
            "noise to the embedding output, so the method must be a built-in one "
            f"(one of {list(METHOD_NAMES)}). Received: method={method!r}"
        )
    if built_in is None:
        average = functools.partial(
            _noisy_average, model, method=method, samples=samples
        )
    else:
        average = traced(
            model,
            _smoothgrad_kernel,
            embedding_layer,
            method=built_in[0],
            options=built_in[1],
            samples=samples,
        )
    if tf.executing_eagerly():
        parts = batches(
            x,
            targets,
            max(1, batch_size // samples),
            tokens=tokens is not None,
            inputs=inputs,
        )
    else:
        parts = [graph_batch(split, x, targets)]
    outputs = []
    for index, (x_batch, t_batch) in enumerate(parts):
        first = tf.nest.flatten(x_batch)[0]
        if built_in is not None:
            check_targets(t_batch, split.num_classes(first.shape))
        dtype = first.dtype if tokens is None else tokens.embedding.compute_dtype
        outputs.append(
            average(
                x_batch,
                t_batch,
                tf.constant([seed, index]),
                tf.constant(noise, dtype),
            )
        )
    return joined(outputs, x, inputs)


_NAMES = {
    "deeplift_rescale": deeplift_rescale,
    "epsilon_lrp": epsilon_lrp,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "occlusion": occlusion,
    "saliency": saliency,
    "smoothgrad": smoothgrad,
}
_BUILT_IN = frozenset(_NAMES.values()) - {smoothgrad}
_EMBEDDED_METHODS = frozenset(
    {saliency, gradient_x_input, integrated_gradients, epsilon_lrp, deeplift_rescale}
)
"""The methods that take token-id inputs among several (`EmbeddedInputs`),
and SmoothGrad over them."""
METHOD_NAMES = tuple(sorted(_NAMES))


def get(identifier: str | Callable, name: str = "method") -> Callable:
    """The attribution method named `identifier` (callables pass through).

    Args:
        identifier: a method name (`"saliency"`, `"gradient_x_input"`,
            `"integrated_gradients"`, `"smoothgrad"`, `"epsilon_lrp"`,
            `"deeplift_rescale"`, `"occlusion"`) or a callable
            `method(model, x, targets)`.
        name: the argument name used in error messages.

    Returns:
        The callable.

    Example:
        >>> get("saliency").__name__
        'saliency'
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier in _NAMES:
        return _NAMES[identifier]
    raise ValueError(
        f"Invalid value for argument {name}: expected an attribution method "
        f"`method(model, x, targets)` or one of the names {list(METHOD_NAMES)}. "
        f"Received: {name}={identifier!r}"
    )
