"""Right-for-the-right-reasons penalties: attributions inside annotation masks.

Each penalty is called with the batch's annotation mask (1 on input that must
not be the reason; see `keras_attreg.training.annotations`), already checked
and shaped to broadcast against the input of the penalty: the image, or for a
model on token ids the Embedding output e, one mask value per token. An
all-zero mask gives a zero penalty, so unannotated examples cost nothing.
All of them enter the loss as `L = L_task + weight * coefficient * penalty`,
`weight` the `DelayedActivation` switch (times `every` on lazy steps).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_attreg._logits import gradient_at, input_gradient
from keras_attreg._tokens import model_input
from keras_attreg._validation import check_choice, check_float, renamed_argument
from keras_attreg.relevance import DEFAULT_EPSILON, relevance_pass
from keras_attreg.training.regularizers import AttributionRegularizer, penalty_norm


@keras.saving.register_keras_serializable(package="keras_attreg")
class MaskedRegularizer(AttributionRegularizer):
    """Base class of the penalties that take an annotation mask.

    Subclasses implement `__call__(split, x, targets, training, mask)` and
    set `coefficient`, the name of their weight argument.
    """

    name = "mask_penalty"
    takes_mask = True
    coefficient = "alpha"

    def __call__(self, split, x, targets, training, mask=None):
        raise NotImplementedError

    def combine(self, task_loss, penalty, weight):
        """L = L_task + weight * coefficient * penalty."""
        factor = tf.cast(weight * getattr(self, self.coefficient), task_loss.dtype)
        return task_loss + factor * tf.cast(penalty, task_loss.dtype)


class _WeightedNormPenalty(MaskedRegularizer):
    """A masked penalty with a weight `alpha` and a `norm` ("l1" or "l2")."""

    def __init__(self, alpha: float = 1.0, norm: str = "l1"):
        self.alpha = check_float("alpha", alpha, low=0.0)
        self.norm = check_choice("norm", norm, ("l1", "l2"))

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "norm": self.norm}


def _sum_log_probabilities(logits, targets):
    """sum_k log p_k(x), the score RRR differentiates (the targets unused)."""
    del targets
    return tf.reduce_sum(tf.nn.log_softmax(logits, axis=-1), axis=-1)


@keras.saving.register_keras_serializable(package="keras_attreg")
class RRRPenalty(MaskedRegularizer):
    """ "Right for the right reasons" (Ross, Hughes, Doshi-Velez, IJCAI 2017), Eq. 1.

        L = L_task + lam * sum_d ( A_d * d/dx_d sum_k log p_k(x) )^2

    A is the annotation mask (1: must not be the reason), p the softmax of
    the model's logits (the pre-softmax scores, as everywhere here), the sum
    over every input dimension d of one example; the wrapper averages it over
    the batch as Keras averages the task loss (the paper sums both over the
    batch: the same ratio). The paper's third term, an L2 penalty on the
    weights, is Keras's own `kernel_regularizer`. For token ids, x is the
    Embedding output e and A is one value per token, repeated over the
    embedding axis.

    Args:
        lam: non-negative weight lambda_1 of the penalty.

    Example:

    >>> import keras_attreg as kar
    >>> kar.RRRPenalty(lam=10.0).get_config()
    {'lam': 10.0}
    """

    name = "rrr_penalty"
    coefficient = "lam"

    def __init__(self, lam: float = 10.0):
        self.lam = check_float("lam", lam, low=0.0)

    def __call__(self, split, x, targets, training, mask=None):
        outputs, gradient = input_gradient(
            split, x, targets, training, score=_sum_log_probabilities
        )
        return outputs, penalty_norm(gradient, "l2", mask)

    def get_config(self) -> dict:
        return {"lam": self.lam}


@keras.saving.register_keras_serializable(package="keras_attreg")
class MaskedGradientPenalty(_WeightedNormPenalty):
    """The input-gradient penalty of `L1GradientPenalty`, inside the mask.

        L = L_task + alpha * || A * dS_c(x)/dx ||_1      (norm="l1")
        L = L_task + alpha * || A * dS_c(x)/dx ||_2^2    (norm="l2")

    S_c is the logit of the true class c, A the annotation mask; with a mask
    of ones this is exactly `L1GradientPenalty(alpha, norm)`.

    Args:
        alpha: non-negative weight of the penalty.
        norm: `"l1"` or `"l2"` (squared).

    Example:

    >>> import keras_attreg as kar
    >>> kar.MaskedGradientPenalty(alpha=1.0).get_config()
    {'alpha': 1.0, 'norm': 'l1'}
    """

    name = "masked_gradient_penalty"

    def __call__(self, split, x, targets, training, mask=None):
        outputs, gradient = input_gradient(split, x, targets, training)
        return outputs, penalty_norm(gradient, self.norm, mask)


@keras.saving.register_keras_serializable(package="keras_attreg")
class MaskedRelevancePenalty(MaskedRegularizer):
    """The epsilon-LRP relevance of the true class, penalised inside the mask.

        L = L_task + alpha * || A * R(x) ||_1      (norm="l1")

    R(x) is the relevance at the input from the pass `FBILoss` uses
    (`keras_attreg.relevance.relevance_pass`, started at the true-class
    logit), so the penalty runs on every architecture that pass walks
    (residual and dense graphs, recurrent layers, nested backbones). For
    token ids R is taken at the Embedding output. Gradients flow through the
    relevance pass into the weights.

    Args:
        alpha: non-negative weight of the penalty.
        epsilon: the stabiliser eps > 0 of the epsilon rule.
        norm: `"l1"` or `"l2"` (squared).
        eps: deprecated name of `epsilon`.

    Example:

    >>> import keras_attreg as kar
    >>> kar.MaskedRelevancePenalty(alpha=0.1).get_config()
    {'alpha': 0.1, 'epsilon': 0.01, 'norm': 'l1'}
    """

    name = "masked_relevance_penalty"

    def __init__(
        self,
        alpha: float = 0.1,
        epsilon: float = DEFAULT_EPSILON,
        norm: str = "l1",
        *,
        eps: float | None = None,
    ):
        self.alpha = check_float("alpha", alpha, low=0.0)
        epsilon = renamed_argument("eps", eps, "epsilon", epsilon, DEFAULT_EPSILON)
        self.epsilon = check_float("epsilon", epsilon, low=0.0, low_inclusive=False)
        self.norm = check_choice("norm", norm, ("l1", "l2"))

    def __call__(self, split, x, targets, training, mask=None):
        result = relevance_pass(split, x, targets, self.epsilon, training=training)
        relevance = tf.cast(result.input_relevance, tf.float32)
        return result.outputs, penalty_norm(relevance, self.norm, mask)

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "epsilon": self.epsilon, "norm": self.norm}


@keras.saving.register_keras_serializable(package="keras_attreg")
class ExpectedGradientsPenalty(_WeightedNormPenalty):
    """An expected-gradients attribution prior (Erion et al., Nature MI 2021), masked.

        EG(x) = (x - x') * dS_c/dx (x' + t (x - x')),   x' ~ batch, t ~ U(0, 1)
        L     = L_task + alpha * || A * EG(x) ||_1      (norm="l1")

    One reference x' per example and step, drawn from the other examples of
    the batch (a random permutation, as Erion et al. draw references from
    the training data), and one t; the single-sample estimate is unbiased
    for expected gradients. For token ids x and x' are Embedding outputs.
    The forward pass at the interpolated point is a second pass through the
    model in the same mode: in training mode, BatchNormalization layers also
    update their moving statistics on it.

    Args:
        alpha: non-negative weight of the penalty.
        norm: `"l1"` or `"l2"` (squared).

    Example:

    >>> import keras_attreg as kar
    >>> kar.ExpectedGradientsPenalty(alpha=1.0).get_config()
    {'alpha': 1.0, 'norm': 'l1'}
    """

    name = "expected_gradients_penalty"

    def __call__(self, split, x, targets, training, mask=None):
        bound, x = model_input(split, x)
        outputs = bound(x, training=training)[1]
        reference, t = self.references(x)
        _, gradient = gradient_at(
            bound, reference + t * (x - reference), targets, training
        )
        attribution = (x - reference) * gradient
        return outputs, penalty_norm(attribution, self.norm, mask)

    def references(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The references x' and the interpolation points t of one batch.

        Override to draw references elsewhere (e.g. from a fixed background
        set). For token ids `x` is the batch's Embedding output.

        Returns:
            `(reference, t)`: x' of the shape of `x`, a random permutation of
            the batch's rows, and t ~ U(0, 1) of shape `(batch, 1, ..., 1)`.
        """
        batch = tf.shape(x)[0]
        reference = tf.gather(x, tf.random.shuffle(tf.range(batch)))
        t_shape = tf.concat([[batch], tf.ones([x.shape.rank - 1], tf.int32)], 0)
        return reference, tf.random.uniform(t_shape, dtype=x.dtype)
