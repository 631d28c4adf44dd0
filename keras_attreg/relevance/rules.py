"""LRP rules: how relevance crosses one operation of the graph.

A rule runs one operation forward (a `Call`: the operation and the tensors it
reads) and returns, with the outputs, a `backward` function mapping the
relevance of each output to the relevance of each input tensor. Every rule is
built from the operation's own vector-Jacobian products, recorded by a
per-call `tf.GradientTape`, so the maps stay differentiable with respect to
the weights and an outer tape (the FBI loss) can differentiate through them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_attreg._keras.graph import (
    applies_softmax,
    copy_with_mask,
    is_tensor,
    linear_call,
    takes_training,
)
from keras_attreg.relevance.canonizers import batch_norm_fold, layer_norm_scale


def watch_floats(tape: tf.GradientTape, tensors) -> None:
    """Watches the floating-point tensors of `tensors` (a mask or token ids
    among a layer's inputs carry no relevance, and a tape refuses them with a
    warning)."""
    for tensor in tensors:
        if tensor.dtype.is_floating:
            tape.watch(tensor)


@dataclasses.dataclass
class Call:
    """One call of an operation in the graph.

    Attributes:
        operation: the Keras layer or operation.
        args, kwargs: the node's arguments, input tensors filled in.
        training: the training flag of the pass.
        producer_of: `producer_of(tensor)`, the `Call` that computed a tensor
            of the graph (None for the model's inputs).
        inputs: the tensor arguments, flattened (constants excluded).
    """

    operation: object
    args: tuple
    kwargs: dict
    training: bool
    producer_of: Callable = lambda tensor: None

    def __post_init__(self):
        self._flat = tf.nest.flatten((self.args, self.kwargs))
        self._slots = [i for i, value in enumerate(self._flat) if is_tensor(value)]
        self.inputs = [self._flat[i] for i in self._slots]

    def run(self, *tensors, linear: bool = False):
        """The operation on `tensors` in place of its tensor arguments.

        Args:
            *tensors: one per entry of `inputs`.
            linear: call a layer with its activation replaced by identity.
        """
        flat = list(self._flat)
        for slot, tensor in zip(self._slots, tensors, strict=True):
            flat[slot] = tensor
        args, kwargs = tf.nest.pack_sequence_as((self.args, self.kwargs), flat)
        if takes_training(self.operation):
            kwargs = {**kwargs, "training": self.training}
        if linear:
            return linear_call(self.operation, args[0], self.training)
        outputs = self.operation(*args, **kwargs)
        # An output that is an input tensor itself (Dropout, Identity and the
        # random augmentations at inference) is copied: the pass keys relevance
        # by tensor, and the input's own relevance must not be counted twice.
        return tf.nest.map_structure(
            lambda y: copy_with_mask(y) if any(y is a for a in tensors) else y,
            outputs,
        )


@dataclasses.dataclass
class Propagation:
    """One call of the relevance pass, as run forward.

    Attributes:
        outputs: the operation's outputs (what its consumers receive).
        pre_activation: z, the output before the layer's own activation
            (equal to `outputs` for operations without one); the logit when
            the last layer carries the softmax.
        backward: maps the relevance of each (flattened) output to that of
            each input tensor (`None` for inputs that receive none).
        multiplier: the same for DeepLIFT's multipliers dS_c/da (Rescale
            rule), on a batch stacked as `[x; reference]` (`rescale`).
    """

    outputs: object
    pre_activation: object
    backward: Callable[[list], list]
    multiplier: Callable[[list], list] | None = None


class Rule:
    """Base class of the rules: one `forward` per operation call.

    Subclass it to give a layer type of your own a rule, and register it with
    `keras_attreg.relevance.register_rule` (scoped: `with register_rule(...):`).
    """

    def forward(self, call: Call) -> Propagation:
        """Runs `call` and prepares its backward map.

        Args:
            call: the operation and its inputs.

        Returns:
            A `Propagation`.
        """
        raise NotImplementedError


def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """z + eps * sign(z), with sign(0) = +1 (never zero for eps > 0)."""
    return z + epsilon * (2 * tf.cast(z >= 0, z.dtype) - 1)


def _ratio(relevance, z, epsilon):
    if epsilon > 0:
        return relevance * tf.math.reciprocal(stabilize(z, epsilon))
    return tf.math.divide_no_nan(relevance, z)


def _activation(operation):
    activation = getattr(operation, "activation", None)
    if activation is None or activation is keras.activations.linear:
        return None
    return activation


RESCALE_TOLERANCE = 1e-5
"""Below this |z - z_ref| DeepLIFT's difference quotient is rounding noise and
its limit, f'(z), is used instead."""


def rescale(f: Callable, z: tf.Tensor, a: tf.Tensor) -> tf.Tensor:
    """DeepLIFT's Rescale slope (f(z) - f(z_ref)) / (z - z_ref) of an
    elementwise `a = f(z)` on a batch stacked as `[x; reference]`; 0 on the
    reference half (only the first half's multipliers are propagated)."""
    z_x, z_ref = tf.split(z, 2)
    a_x, a_ref = tf.split(a, 2)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(z_x)
        local = f(z_x)
    derivative = tape.gradient(local, z_x)
    dz = z_x - z_ref
    far = tf.abs(dz) > RESCALE_TOLERANCE
    slope = tf.where(far, (a_x - a_ref) / tf.where(far, dz, 1.0), derivative)
    return tf.concat([slope, tf.zeros_like(slope)], axis=0)


def _vjp(tape, outputs, inputs, upstream):
    return tape.gradient(outputs, inputs, output_gradients=upstream)


class EpsilonRule(Rule):
    """The z / epsilon rule of Bach et al. (2015), Eq. 2 of Yoo et al. (2019).

        R_in = a_in * J^T (R_out / (z + eps * sign(z)))

    for an affine operation `z = J a_in + b` (Dense and convolutions of every
    kind, average pooling, LayerScale, sums such as Add/Subtract/Average,
    where each operand gets a_k * R / z_eps, and arithmetic with constants).
    `J^T` is the operation's own vector-Jacobian product. A layer's
    activation passes relevance unchanged: z is the pre-activation. A
    BatchNormalization folded into the layer (`fold_batch_norm`) replaces z by
    its output and scales `J` by gamma / sqrt(var + eps_bn).

    Without biases and with eps -> 0, relevance is conserved:
    sum(R_in) = sum(R_out).

    Args:
        epsilon: the stabiliser eps >= 0 (with eps = 0, a zero z passes no
            relevance instead of dividing by zero).
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        activation = _activation(call.operation)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            watch_floats(tape, call.inputs)
            affine = call.run(*call.inputs, linear=activation is not None)
        outputs = affine if activation is None else activation(affine)
        return AffinePropagation(
            outputs,
            self.epsilon,
            tape,
            call.inputs,
            affine,
            activation,
            call.operation.name,
        )


class AffinePropagation(Propagation):
    """The backward map of the epsilon rule (see `EpsilonRule`).

    `fold` merges a BatchNormalization that reads the affine output (and
    nothing else does) into this map.
    """

    def __init__(self, outputs, epsilon, tape, inputs, affine, activation, name):
        super().__init__(outputs, affine, self._backward, self._multiplier)
        self.epsilon, self.tape, self.inputs = epsilon, tape, inputs
        self.affine, self.activation, self.name = affine, activation, name
        self.scale = None

    def fold(self, z, scale):
        """Divides by the BatchNormalization output `z`, J scaled by `scale`."""
        self.pre_activation, self.scale = z, scale

    def _check(self):
        if self.activation is not None and applies_softmax(self.activation):
            raise ValueError(_SOFTMAX_INSIDE.format(name=self.name))

    def _backward(self, relevances):
        self._check()
        (relevance,) = relevances
        ratio = _ratio(relevance, self.pre_activation, self.epsilon)
        if self.scale is not None:
            ratio = ratio * self.scale
        gradients = _vjp(self.tape, self.affine, self.inputs, ratio)
        return [
            None if gradient is None else a * gradient
            for a, gradient in zip(self.inputs, gradients, strict=True)
        ]

    def _multiplier(self, multipliers):
        self._check()
        (multiplier,) = multipliers
        if self.activation is not None:
            multiplier = multiplier * rescale(
                self.activation, self.affine, self.outputs
            )
        return _vjp(self.tape, self.affine, self.inputs, multiplier)


class BatchNormRule(Rule):
    """A BatchNormalization that could not be folded (e.g. DenseNet's
    BN-ReLU-Conv order): its own affine epsilon layer `z = scale * a + shift`,
    R_in = a * scale * R / z_eps with scale = gamma / sqrt(var + eps_bn), batch
    statistics in training and moving ones in inference (those the layer
    normalises with), held constant."""

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        outputs = call.run(*call.inputs)
        (inputs,) = call.inputs
        scale = batch_norm_fold(call.operation, inputs, call.training)[0]

        def backward(relevances):
            (relevance,) = relevances
            return [inputs * scale * _ratio(relevance, outputs, self.epsilon)]

        def multiplier(multipliers):
            return [multipliers[0] * scale]

        return Propagation(outputs, outputs, backward, multiplier)


class LayerNormRule(Rule):
    """CP-LRP for LayerNormalization (Ali et al., ICML 2022): the standard
    deviation is a constant, so the layer is the affine map

        z = gamma * (a - mean(a)) / std + beta,   std = sqrt(var + eps_ln)

    (no centring under `rms_scaling`), crossed by the epsilon rule:
    R_in = a * J^T (R / z_eps) with J the Jacobian under constant std. Without
    `beta` and with eps -> 0 it conserves relevance.

    Args:
        epsilon: the stabiliser eps >= 0 of the epsilon rule.
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        layer = call.operation
        (inputs,) = call.inputs
        outputs = call.run(inputs)
        scale = layer_norm_scale(layer, inputs)  # outside the tape: constant
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(inputs)
            centred = inputs
            if not getattr(layer, "rms_scaling", False):
                centred = inputs - tf.reduce_mean(
                    inputs, axis=layer.axis, keepdims=True
                )
            affine = centred * scale
        propagation = AffinePropagation(
            outputs, self.epsilon, tape, [inputs], affine, None, layer.name
        )
        propagation.fold(outputs, None)
        return propagation


class GradientRule(Rule):
    """R_in = J^T R_out: relevance routed along the operation's own gradient.

    For max pooling this is winner-takes-all (each output's relevance goes to
    the input that won the max); for Flatten/Reshape/Permute, padding,
    cropping and Concatenate it moves, splits or drops relevance with the
    values. All conserve relevance (cropping drops the cropped part's, which
    is none).
    """

    def forward(self, call):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            watch_floats(tape, call.inputs)
            outputs = call.run(*call.inputs)

        def backward(relevances):
            return _vjp(tape, tf.nest.flatten(outputs), call.inputs, relevances)

        return Propagation(outputs, outputs, backward, backward)


class IdentityRule(Rule):
    """R_in = R_out: elementwise activations and noise layers pass relevance on.

    The LRP convention for activations: the relevance of a unit is assigned by
    the affine operation that computed it; the nonlinearity only gates it (a
    unit switched off by ReLU or dropped by Dropout holds no relevance from
    above anyway). Dropout and noise layers are the identity at inference.
    """

    def forward(self, call):
        outputs = call.run(*call.inputs)
        operation = call.operation

        def multiplier(multipliers):
            backward(multipliers)  # the same checks
            slope = rescale(call.run, call.inputs[0], outputs)
            return [multipliers[0] * slope]

        def backward(relevances):
            if applies_softmax(operation):
                raise ValueError(_SOFTMAX_INSIDE.format(name=operation.name))
            return list(relevances)

        return Propagation(outputs, outputs, backward, multiplier)


_SOFTMAX_INSIDE = (
    "Layer {name!r} applies a softmax inside the network, where the relevance "
    "pass has no rule (a softmax is not elementwise). Only a softmax at the "
    "output is supported: the pass starts at its input, the logit."
)


class StopRule(Rule):
    """Relevance stops here: the Embedding of token ids (its output e is "the
    input" of text models) and comparisons such as the padding mask
    `ids != 0` (integers and booleans are not differentiable)."""

    def forward(self, call):
        outputs = call.run(*call.inputs)

        def stop(relevances):
            return [None] * len(call.inputs)

        return Propagation(outputs, outputs, stop, stop)


GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "HardSigmoid", "Sigmoid")
"""Activations (functions or operation classes) that make an operand of a
product a gate; a ReLU layer with `max_value` counts too (hard sigmoid written
as `ReLU(6)(x + 3) / 6`, as in MobileNetV3)."""


def is_gate(tensor, producer_of: Callable) -> bool:
    """Whether `tensor` comes from a sigmoid-type activation, possibly through
    reshapes and arithmetic with constants."""
    call = producer_of(tensor)
    while call is not None:
        operation = call.operation
        activation = getattr(operation, "activation", None)
        if isinstance(operation, keras.layers.ReLU) and operation.max_value:
            return True
        if (
            getattr(activation, "__name__", None) in GATE_ACTIVATIONS
            or type(operation).__name__ in GATE_ACTIVATIONS
        ):
            return True
        passes = len(call.inputs) == 1 and (
            isinstance(operation, (keras.layers.Reshape, keras.layers.Flatten))
            or not isinstance(operation, keras.layers.Layer)
        )
        if not passes:
            return False
        call = producer_of(call.inputs[0])
    return False


def carries_no_relevance(tensor, producer_of: Callable) -> bool:
    """Whether `tensor` is computed from no floating-point tensor of the graph:
    a Keras mask or token ids, possibly through casts, reshapes, comparisons
    and arithmetic among such tensors (no layer)."""
    if not tensor.dtype.is_floating:
        return True
    call = producer_of(tensor)
    if call is None or isinstance(call.operation, keras.layers.Layer):
        return False
    return bool(call.inputs) and all(
        carries_no_relevance(value, producer_of) for value in call.inputs
    )


class GateRule(Rule):
    """Elementwise product `z = signal * gate`: the signal takes all relevance.

    The gate is the operand computed by a sigmoid-type path (`is_gate`:
    squeeze-and-excitation blocks), or one computed from no floating-point
    tensor (`carries_no_relevance`: a Keras mask cast to floats, as a masked
    pooling multiplies by it). It only rescales the signal, so it receives no
    relevance (the rule Arras et al. 2017 give LSTM gates), and R_signal =
    R_z. A product with a constant is an affine map and gets the epsilon
    rule.

    Args:
        epsilon: the stabiliser of the epsilon rule (products with constants).
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        if len(call.inputs) < 2:
            return EpsilonRule(self.epsilon).forward(call)
        gates = [
            is_gate(tensor, call.producer_of)
            or carries_no_relevance(tensor, call.producer_of)
            for tensor in call.inputs
        ]
        if len(call.inputs) != 2 or sum(gates) != 1:
            raise ValueError(
                "The relevance pass cannot tell the signal from the gate in "
                f"{call.operation.name!r} ({type(call.operation).__name__}): "
                "a product of two tensors needs exactly one operand computed by "
                "a sigmoid-type activation or from a mask. Received: "
                f"{len(call.inputs)} operands, gates {gates}. Register a rule "
                "of your own with `keras_attreg.relevance.register_rule`."
            )
        outputs = call.run(*call.inputs)
        signal = gates.index(False)

        def backward(relevances):
            (relevance,) = relevances
            return [relevance if i == signal else None for i in range(2)]

        def multiplier(multipliers):
            (upstream,) = multipliers
            gate = call.inputs[1 - signal]
            return [upstream * gate if i == signal else None for i in range(2)]

        return Propagation(outputs, outputs, backward, multiplier)
