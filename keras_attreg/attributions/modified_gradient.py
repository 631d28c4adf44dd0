"""Epsilon-LRP and DeepLIFT-Rescale, from the one relevance pass.

Both walk the model's graph with the rules of `keras_attreg.relevance`
(the engine of the FBI loss): epsilon-LRP is the relevance of the input,

    R_in = a_in * J^T (R_out / (z + eps * sign(z)))   at every affine map,

and DeepLIFT-Rescale the multipliers of the same rules on `[x; baseline]`,
each elementwise nonlinearity's derivative f'(z) replaced by
(f(z) - f(z_ref)) / (z - z_ref) (Ancona et al., ICLR 2018, Sec. 3: both are
modified gradients times the input), R = (x - b) * m. Any functional or
Sequential model the relevance pass walks is supported, nested ones included.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_attreg._validation import check_float, renamed_argument
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    attribute,
    reference,
)
from keras_attreg.relevance import DEFAULT_EPSILON, deeplift_pass, relevance_pass


def _epsilon_lrp_kernel(split, x, targets, *, epsilon: float):
    return relevance_pass(split, x, targets, epsilon).input_relevance


def _deeplift_kernel(split, x, targets, baseline):
    reference = tf.nest.map_structure(
        lambda x, b: tf.broadcast_to(b, tf.shape(x)), x, baseline
    )
    # Token ids: padding is no feature, its embedding is kept on the baseline
    # (`fix_padding` takes the change in x's structure: one tensor, or the
    # inputs of a model with several).
    delta = split.fix_padding(tf.nest.map_structure(tf.subtract, reference, x))
    reference = tf.nest.map_structure(tf.add, x, delta)
    multipliers, source, source_reference = deeplift_pass(split, x, reference, targets)
    return tf.nest.map_structure(
        lambda m, s, r: (s - r) * m, multipliers, source, source_reference
    )


def epsilon_lrp(
    model: keras.Model,
    x,
    targets=None,
    epsilon: float = DEFAULT_EPSILON,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
    *,
    eps: float | None = None,
) -> tf.Tensor:
    """Epsilon-LRP (Bach et al. 2015): the relevance of the input.

        R_in = a_in * J^T (R_out / (z + eps * sign(z))),  R_logits = S_c onehot(c)

    at every affine map of the graph (sign(0) = +1), the rules of
    `keras_attreg.relevance` elsewhere; inference mode. For ReLU networks R
    equals gradient * input as eps -> 0. The same pass as `relevance_map`
    (batched, traced, for arrays and datasets).

    Args:
        model: a functional or Sequential Keras model.
        x, targets, batch_size: as `saliency`.
        epsilon: the stabiliser eps, > 0 (default 0.01, as the FBI loss).
        embedding_layer: as `saliency` (token ids: the map is the relevance of
            the Embedding output summed over the embedding axis, 0 at padding).
        eps: deprecated name of `epsilon`.

    Returns:
        A tensor of the shape of `x`.

    Example:
        >>> maps = epsilon_lrp(model, x_test[:8], y_test[:8], epsilon=1e-3)
    """
    epsilon = renamed_argument("eps", eps, "epsilon", epsilon, DEFAULT_EPSILON)
    epsilon = check_float("epsilon", epsilon, low=0.0, low_inclusive=False)
    return attribute(
        model,
        x,
        targets,
        _epsilon_lrp_kernel,
        batch_size,
        embedding_layer=embedding_layer,
        epsilon=epsilon,
    )


def deeplift_rescale(
    model: keras.Model,
    x,
    targets=None,
    baseline=0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    embedding_layer: str | None = None,
    baseline_token: int | None = None,
) -> tf.Tensor:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), Ancona's form.

        R_i = (x_i - b_i) * m_i,
        m = dS_c/dx with f'(z) -> (f(z) - f(z_ref)) / (z - z_ref)

    at every elementwise nonlinearity, z_ref being the unit's input on the
    baseline b (f'(z) where |z - z_ref| < 1e-5); linear maps keep their
    Jacobian and sigmoid-type gates (`GateRule`) are held fixed. Walks the graph
    with the relevance pass's rules. For graphs of linear maps and elementwise
    nonlinearities sum_i R_i = S_c(x) - S_c(b) (summation to delta).

    Args:
        model: a functional or Sequential Keras model.
        x, targets: as `saliency`.
        baseline: b, a scalar or an array of one sample's shape (token ids:
            of e's sample shape; padding keeps its embedding; several inputs:
            a scalar or a list or dict of one per input, a token input's of
            its Embedding output's sample shape).
        batch_size: samples per call (the model sees twice as many inputs).
        embedding_layer, baseline_token: as `integrated_gradients`.

    Returns:
        A tensor of the shape of `x`.

    Example:
        >>> maps = deeplift_rescale(model, x_test[:8], y_test[:8], baseline=0.0)
    """
    return attribute(
        model,
        x,
        targets,
        _deeplift_kernel,
        batch_size,
        tensors=lambda x_batch: (
            reference(model, baseline, baseline_token, x_batch, embedding_layer),
        ),
        embedding_layer=embedding_layer,
    )
