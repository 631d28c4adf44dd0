"""The forward and backward interacted-activation (FBI) loss of Yoo et al. (2019)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_attreg._validation import check_choice, check_float, renamed_argument
from keras_attreg.relevance import (
    DEFAULT_EPSILON,
    LAYERS_IN_K,
    POOLING_LAYERS,
    START_SCORES,
    relevance_pass,
)
from keras_attreg.training.regularizers import AttributionRegularizer

REDUCTIONS = ("mean", "sum")
COUNTED = {"kernel": LAYERS_IN_K, "kernel_and_pooling": LAYERS_IN_K + POOLING_LAYERS}


@keras.saving.register_keras_serializable(package="keras_attreg")
class FBILoss(AttributionRegularizer):
    """FBI relevance regularisation (Yoo, Kim, Kang, CVPR-W 2019), Eq. 2-4.

        a-_i  = a+_{i-1} * W_i^T (a-_{i+1} / (z_i + eps * sign(z_i)))     (2)
        L_FBI = (1/K) * sum_{i=1..K} L1(a+_{i-1}, a-_i)                    (3)
        L     = (1 - lambda) * L_TSK + lambda * L_FBI                      (4)

    a+_{i-1} is the input tensor of the i-th layer with a kernel (a+_0 the
    image, or the Embedding output of a token-id model), a-_i its relevance
    from the epsilon-LRP pass that starts at the true-class logit S_c and walks
    the model's graph (residual and dense connections: the relevance of a
    tensor is the sum over its consumers, so two layers reading one tensor see
    the same a-_i). L1 is the mean absolute difference over the units of the
    tensor, per sample; the wrapper averages it over the batch. The two maps
    are compared as they are: a-_i = a+_{i-1} * c with c a dimensionless ratio,
    so they share the units of a+_{i-1}. K counts the layers with a kernel
    (Dense, convolutions of every kind; BatchNormalization folded in). The
    whole term is differentiable: gradients flow through the relevance pass
    into the weights.

    `weight` (the `DelayedActivation` switch, 1 without the callback) scales
    lambda: `L = (1 - weight*lambda) * L_TSK + weight*lambda * L_FBI`. The
    paper switches the loss on once validation accuracy exceeds 70%.

    The paper leaves four choices open; the defaults are the reading above,
    and each alternative it supports is an argument (docs/fbi.md compares
    them in training): `reduction="sum"` (Eq. 3's "absolute difference"
    summed over the units, so lambda weighs about as much as the number of
    units times the mean), `layers="kernel_and_pooling"` (pooling layers
    counted in K too), `normalize=True` (each map divided by its own L1 norm
    per sample before the difference, so the loss compares where the maps
    put their mass and cannot be lowered by shrinking every activation) and
    `start="all"` (the relevance pass starts from every logit, R = S, not
    from S_c of the true class).

    Args:
        lam: lambda in [0, 1] (0.001 in the paper).
        epsilon: the stabiliser eps > 0 of the epsilon rule.
        reduction: `"mean"` or `"sum"` of |a+_{i-1} - a-_i| over the units.
        layers: `"kernel"` (K = layers with a kernel) or
            `"kernel_and_pooling"`.
        normalize: compare a+_{i-1} / |a+_{i-1}|_1 with a-_i / |a-_i|_1.
        start: `"target"` (the true-class logit) or `"all"` (every logit).
        eps: deprecated name of `epsilon`.

    Example:

    >>> import keras_attreg as kar
    >>> config = kar.FBILoss(lam=1e-3, reduction="sum").get_config()
    >>> config["lam"], config["reduction"], config["layers"], config["start"]
    (0.001, 'sum', 'kernel', 'target')
    """

    name = "fbi_loss"

    def __init__(
        self,
        lam: float = 1e-3,
        epsilon: float = DEFAULT_EPSILON,
        reduction: str = "mean",
        layers: str = "kernel",
        normalize: bool = False,
        start: str = "target",
        *,
        eps: float | None = None,
    ):
        self.lam = check_float("lam", lam, low=0.0, high=1.0)
        epsilon = renamed_argument("eps", eps, "epsilon", epsilon, DEFAULT_EPSILON)
        self.epsilon = check_float("epsilon", epsilon, low=0.0, low_inclusive=False)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.layers = check_choice("layers", layers, tuple(COUNTED))
        if not isinstance(normalize, bool):
            raise ValueError(
                "Invalid value for argument normalize: expected True or False. "
                f"Received: normalize={normalize!r}"
            )
        self.normalize = normalize
        self.start = check_choice("start", start, START_SCORES)

    def __call__(self, split, x, targets, training):
        result = relevance_pass(
            split,
            x,
            targets,
            self.epsilon,
            training=training,
            counted=COUNTED[self.layers],
            start=self.start,
        )
        kernels = [layer for layer in result.layers if isinstance(layer, LAYERS_IN_K)]
        if not any(layer.trainable for layer in kernels):
            raise ValueError(
                "FBILoss needs at least one trainable layer with a kernel (the K "
                "layers of Eq. 3: "
                f"{', '.join(t.__name__ for t in LAYERS_IN_K)}). "
                f"Received: model {split.model.name!r} with "
                f"counted layers {[layer.name for layer in kernels]}"
            )
        # Layers may compute in different dtypes (a float32 input into a
        # float64 model, float16 under mixed precision): each mean is taken in
        # the widest, at least float32 (a float16 sum over a layer overflows).
        wide = tf.float32
        if any(a.dtype == tf.float64 for a in result.forward_inputs):
            wide = tf.float64
        reduce = tf.reduce_sum if self.reduction == "sum" else tf.reduce_mean
        per_layer = [
            reduce(tf.abs(self._flat(forward, wide) - self._flat(backward, wide)), 1)
            for forward, backward in zip(
                result.forward_inputs, result.backward_maps, strict=True
            )
        ]
        return result.outputs, tf.add_n(per_layer) / len(per_layer)

    def _flat(self, tensor, dtype):
        """`tensor` as `(batch, units)` in `dtype`, divided by its L1 norm per
        sample if `normalize` (a map of zeros stays zero)."""
        flat = tf.cast(tf.reshape(tensor, [tf.shape(tensor)[0], -1]), dtype)
        if not self.normalize:
            return flat
        return tf.math.divide_no_nan(flat, tf.reduce_sum(tf.abs(flat), 1, True))

    def combine(self, task_loss, penalty, weight):
        """L = (1 - weight*lambda) * L_TSK + weight*lambda * L_FBI (Eq. 4)."""
        lam = tf.cast(weight * self.lam, task_loss.dtype)
        return (1 - lam) * task_loss + lam * tf.cast(penalty, task_loss.dtype)

    def get_config(self) -> dict:
        return {
            "lam": self.lam,
            "epsilon": self.epsilon,
            "reduction": self.reduction,
            "layers": self.layers,
            "normalize": self.normalize,
            "start": self.start,
        }
