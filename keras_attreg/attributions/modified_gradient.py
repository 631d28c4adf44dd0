"""Epsilon-LRP and DeepLIFT-Rescale as modified gradients (Ancona et al., ICLR 2018).

Ancona et al. (Sec. 3) show that both methods are gradient * input where the
backward pass replaces, at every elementwise nonlinearity a = f(z), the local
derivative f'(z) by

    epsilon-LRP:       g(z) = f(z) / (z + eps * sign(z))
    DeepLIFT-Rescale:  g(z) = (f(z) - f(z_ref)) / (z - z_ref)

(z_ref: the same unit on the baseline input), while linear layers, pooling and
inference-mode BatchNormalization keep their ordinary gradient. The attribution
is then R_i = x_i * g_i (epsilon-LRP) or R_i = (x_i - b_i) * g_i (DeepLIFT).

The override is applied by walking the model's layer graph (functional and
Sequential models, nested ones included): a layer with a non-linear
`activation` is called linearly and its activation is wrapped, and `ReLU`,
`LeakyReLU`, `ELU` and `Activation` layers are wrapped whole.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

from keras_attreg._logits import is_graph_model, linear_call, target_scores
from keras_attreg._validation import check_float
from keras_attreg.attributions._utils import (
    DEFAULT_BATCH_SIZE,
    as_baseline,
    attribute,
)

_ELEMENTWISE_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)

# Below this |z - z_ref| DeepLIFT's difference quotient is rounding noise and
# its limit, f'(z), is used instead.
_RESCALE_TOLERANCE = 1e-5


def _reject_softmax(layer):
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax) or getattr(
        activation, "__name__", ""
    ) in ("softmax", "log_softmax"):
        raise ValueError(
            f"Layer {layer.name!r} applies a softmax inside the network; the "
            "modified-gradient rules are defined for elementwise "
            "nonlinearities only."
        )


def _call_with_rule(rule, layer, *args, **kwargs):
    """Calls `layer` with its elementwise nonlinearity wrapped by `rule`."""
    if is_graph_model(layer):
        return _run_with_rule(layer, args[0], rule)
    _reject_softmax(layer)
    if getattr(layer, "_call_has_training_arg", False):
        kwargs["training"] = False
    if isinstance(layer, _ELEMENTWISE_LAYERS):
        return rule(lambda z: layer(z, **kwargs), args[0])
    activation = getattr(layer, "activation", None)
    if activation is None or activation is keras.activations.linear:
        return layer(*args, **kwargs)
    return rule(activation, linear_call(layer, args[0], training=False))


def _run_with_rule(model: keras.Model, x, rule):
    """`model(x)` (inference mode) with every nonlinearity f replaced by `rule`."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _call_with_rule(rule, layer, x)
        return x
    if isinstance(model, Functional):
        return model._run_through_graph(
            x,
            call_fn=lambda op, *args, **kwargs: _call_with_rule(
                rule, op, *args, **kwargs
            ),
        )
    raise ValueError(
        "Modified-gradient attributions need a functional or Sequential model "
        f"(the layer graph must be known). Received: the subclassed model "
        f"{model.name!r}"
    )


def _modified_logits(split, x, rule):
    """The logits of `split` computed with `rule` at every nonlinearity."""
    if split.mode == "named":
        trunk = keras.Model(split.trunk.inputs, split.trunk.outputs[0])
        return _run_with_rule(trunk, x, rule)
    h = _run_with_rule(split.trunk, x, rule)
    if split.mode == "softmax_activation":
        return linear_call(split.last, h, training=False)
    if split.mode == "nested":
        return _modified_logits(split.inner, h, rule)
    return h


def _epsilon_rule(eps: float):
    def rule(f, z):
        @tf.custom_gradient
        def apply(z):
            a = f(z)

            def gradient(upstream):
                stabiliser = tf.constant(eps, z.dtype)
                return upstream * a / (z + tf.where(z >= 0, stabiliser, -stabiliser))

            return a, gradient

        return apply(z)

    return rule


def _rescale_rule(f, z):
    """Rescale rule on a stacked batch `[z; z_ref]` (gradient on the first half)."""

    @tf.custom_gradient
    def apply(z):
        a = f(z)

        def gradient(upstream):
            z_x, z_ref = tf.split(z, 2)
            a_x, a_ref = tf.split(a, 2)
            with tf.GradientTape() as tape:
                tape.watch(z_x)
                local = f(z_x)
            derivative = tape.gradient(local, z_x)
            dz = z_x - z_ref
            far = tf.abs(dz) > _RESCALE_TOLERANCE
            slope = tf.where(far, (a_x - a_ref) / tf.where(far, dz, 1.0), derivative)
            upstream_x = tf.split(upstream, 2)[0]
            return tf.concat([upstream_x * slope, tf.zeros_like(upstream_x)], axis=0)

        return a, gradient

    return apply(z)


def _epsilon_lrp_kernel(split, x, targets, *, eps: float):
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = target_scores(_modified_logits(split, x, _epsilon_rule(eps)), targets)
    return x * tape.gradient(scores, x)


def _deeplift_kernel(split, x, targets, baseline):
    reference = tf.broadcast_to(baseline, tf.shape(x))
    with tf.GradientTape() as tape:
        tape.watch(x)
        stacked = tf.concat([x, reference], axis=0)
        logits = _modified_logits(split, stacked, _rescale_rule)
        scores = target_scores(logits[: tf.shape(x)[0]], targets)
    return (x - baseline) * tape.gradient(scores, x)


def epsilon_lrp(
    model: keras.Model,
    x,
    targets=None,
    eps: float = 1e-4,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tf.Tensor:
    """Epsilon-LRP (Bach et al. 2015) in Ancona et al.'s modified-gradient form.

        R_i = x_i * g_i,  g = dS_c/dx with f'(z) -> f(z) / (z + eps * sign(z))

    at every elementwise nonlinearity (sign(0) = +1). For ReLU networks
    f(z)/z = f'(z), so R equals gradient * input as eps -> 0.

    Args:
        model: a functional or Sequential Keras model.
        x, targets, batch_size: as `saliency`.
        eps: the stabiliser, > 0.

    Returns:
        A tensor of the shape of `x`.

    Example:
        >>> maps = epsilon_lrp(model, x_test[:8], y_test[:8], eps=1e-3)
    """
    eps = check_float("eps", eps, low=0.0, low_inclusive=False)
    return attribute(model, x, targets, _epsilon_lrp_kernel, batch_size, eps=eps)


def deeplift_rescale(
    model: keras.Model,
    x,
    targets=None,
    baseline=0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tf.Tensor:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), Ancona's form.

        R_i = (x_i - b_i) * g_i,
        g = dS_c/dx with f'(z) -> (f(z) - f(z_ref)) / (z - z_ref)

    at every elementwise nonlinearity, z_ref being the unit's input on the
    baseline b (f'(z) where |z - z_ref| < 1e-5). For chains of linear layers and
    elementwise nonlinearities sum_i R_i = S_c(x) - S_c(b) (summation to delta).

    Args:
        model: a functional or Sequential Keras model.
        x, targets: as `saliency`.
        baseline: b, a scalar or an array of one sample's shape.
        batch_size: samples per call (the model sees twice as many inputs).

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
        tensors=lambda x_batch: (as_baseline(baseline, x_batch),),
    )
