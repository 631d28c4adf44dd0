"""Attribution regularisers: small serialisable objects the training wrapper calls.

A regulariser does the forward pass itself (it needs hooks into it: the input
gradient, or the layer activations) and returns the model outputs together with
a per-sample penalty. `AttributionRegularizedModel` reduces the penalty over the
global batch and asks the regulariser how to combine it with the task loss.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_attreg._inputs import model_inputs
from keras_attreg._logits import LogitSplit, input_gradient, inputs_gradient
from keras_attreg._validation import check_choice, check_float


def penalty_norm(values: tf.Tensor, norm: str, mask=None) -> tf.Tensor:
    """Per-sample `sum |v|` (`"l1"`) or `sum v^2` (`"l2"`) over every axis
    but the batch axis, of `values * mask` when a mask is given."""
    if mask is not None:
        values = values * tf.cast(mask, values.dtype)
    values = tf.abs(values) if norm == "l1" else tf.square(values)
    return tf.reduce_sum(values, axis=list(range(1, values.shape.rank)))


@keras.saving.register_keras_serializable(package="keras_attreg")
class AttributionRegularizer:
    """Base class of the attribution regularisers.

    Subclasses implement `__call__` (forward pass and per-sample penalty),
    optionally `combine` (how the penalty enters the loss) and `get_config`.
    A regulariser with `takes_mask = True` is called with the batch's
    annotation mask as `mask=` (see `MaskedRegularizer`).

    Attributes:
        name: the key under which the penalty is logged (`val_` + name in
            validation logs).
    """

    name = "attribution_penalty"
    takes_mask = False

    def __call__(
        self, split: LogitSplit, x: tf.Tensor, targets: tf.Tensor, training: bool
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the model on `x` and computes the penalty.

        Args:
            split: the base model, split into logits and outputs.
            x: float input batch.
            targets: int32 class indices, shape `(batch,)`.
            training: forwarded to the layers (BatchNormalization, Dropout).

        Returns:
            `(outputs, penalty)`: the base model's outputs and a float tensor of
            shape `(batch,)`, the penalty of each sample.
        """
        raise NotImplementedError

    def combine(self, task_loss: tf.Tensor, penalty: tf.Tensor, weight: tf.Tensor):
        """Total loss from the task loss and the batch penalty.

        `weight` in [0, 1] is the switch set by `DelayedActivation` (1 when no
        such callback is used).
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_attreg")
class L1GradientPenalty(AttributionRegularizer):
    """Input-gradient penalty of Kiritoshi et al. (CVPR-W 2019), Eq. 1.

        L' = L(x, y) + alpha * || dS_c(x) / dx ||_1

    S_c is the pre-softmax score (logit) of the true class c. The norm is taken
    per sample (sum over all pixels and channels) and averaged over the batch.
    For a model on token ids, x is e, the output of its Embedding layer: the
    norm of dS_c/de is summed over (seq_len, embedding dim), padding positions
    (token id 0) left out, and the penalty's gradient reaches the embedding
    weights through e.
    `norm="l2"` gives double backpropagation (Drucker & LeCun 1992): the squared
    L2 norm ||dS_c/dx||_2^2 in place of the L1 norm.

    For a model with several inputs (x given to `fit` as a list or dict), the
    penalty is the sum over the penalised inputs k of the per-sample norms,
    alpha * mean_b sum_k ||dS_c(x_b)/dx_k||_1: by default every float input,
    or the inputs named by `inputs`; a named input of token ids is taken at
    the output e_k of the Embedding that reads it (padding left out).

    With BatchNormalization in training mode, the batch statistics couple the
    samples of a batch; the gradient taken is that of sum_b S_c(x_b), whose
    cross-sample terms shrink as 1 / batch size.

    Args:
        alpha: non-negative weight of the penalty.
        norm: `"l1"` (the paper) or `"l2"` (squared L2).
        inputs: for a model with several inputs, the names of the inputs
            penalised (default None: every float input; token ids at their
            Embedding when named).

    Example:

    >>> import keras_attreg as kar
    >>> penalty = kar.L1GradientPenalty(alpha=1e-3)
    >>> penalty.get_config()
    {'alpha': 0.001, 'norm': 'l1', 'inputs': None}
    """

    def __init__(
        self, alpha: float = 1e-3, norm: str = "l1", inputs: list[str] | None = None
    ):
        self.alpha = check_float("alpha", alpha, low=0.0)
        self.norm = check_choice("norm", norm, ("l1", "l2"))
        if inputs is not None and (
            isinstance(inputs, str)
            or not inputs
            or not all(isinstance(name, str) for name in inputs)
        ):
            raise ValueError(
                "Invalid value for argument inputs: expected None or a non-empty "
                f"list of input names. Received: inputs={inputs!r}"
            )
        self.inputs = None if inputs is None else list(inputs)

    def __call__(self, split, x, targets, training):
        several = model_inputs(split.model)
        if several is None:
            if self.inputs is not None:
                raise ValueError(
                    "Invalid value for argument inputs: expected None for model "
                    f"{split.model.name!r}, which has one input. Received: "
                    f"inputs={self.inputs!r}"
                )
            outputs, gradient = input_gradient(split, x, targets, training)
            return outputs, penalty_norm(gradient, self.norm)
        names = several.chosen(self.inputs, tokens=True)
        outputs, gradients = inputs_gradient(
            split, several, x, targets, names, training
        )
        return outputs, tf.add_n([penalty_norm(g, self.norm) for g in gradients])

    def combine(self, task_loss, penalty, weight):
        """L' = L + weight * alpha * penalty."""
        return task_loss + tf.cast(weight * self.alpha, task_loss.dtype) * penalty

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "norm": self.norm, "inputs": self.inputs}
