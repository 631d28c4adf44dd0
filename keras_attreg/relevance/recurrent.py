"""LRP through recurrent layers: the rule of Arras et al. (2017).

Arras, Montavon, Müller and Samek, "Explaining Recurrent Neural Network
Predictions in Sentiment Analysis" (WASSA 2017): in an LSTM the gates (the
sigmoid-type factors i, f, o of the cell and z, r of the GRU) only rescale the
signal, so they receive no relevance and the signal path takes it all:

- `h_t = o_t * act(c_t)`: all relevance of h_t goes to c_t (the gate o_t and
  the elementwise activation pass it on, as for any activation);
- `c_t = f_t * c_{t-1} + i_t * g_t`: a sum, split by the epsilon rule,
  R_{c_{t-1}} = f_t c_{t-1} R / c_eps and R_{g_t} = i_t g_t R / c_eps;
- `g_t = act(x_t W_g + h_{t-1} U_g + b_g)`: the epsilon rule of the affine
  map, R_x = x_t * W_g^T (R_g / z_eps), R_{h_{t-1}} = h_{t-1} * U_g^T (R_g / z_eps).

The GRU is treated alike (`h_t = z h_{t-1} + (1 - z) hh_t` split by the
epsilon rule, the reset gate a constant factor of its recurrent term) and
SimpleRNN is an affine map followed by its activation. Relevance at a step
that the mask skips passes to the step before unchanged (Keras carries the
states over it), so padding gets none. With eps -> 0 and no biases the rule
conserves relevance: sum(R_x) = sum(R_out).

Only the forward quantities of each step are recomputed here, from the
layer's own weights; the layer's outputs (what the rest of the graph sees) are
its own. The maps stay differentiable with respect to the weights (FBI).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_attreg._keras.graph import keras_mask
from keras_attreg.relevance.rules import Propagation, Rule, _ratio

L = keras.layers
RECURRENT_LAYERS = (L.SimpleRNN, L.LSTM, L.GRU, L.Bidirectional)


class _Cell:
    """One recurrent layer's step, forward and relevance-backward.

    `step(x, states)` returns the new states and the quantities of the step
    that its relevance map needs; `relevance(x, states, saved, r_states)` maps
    the relevance of the new states to that of `x` and of the previous states.
    Weights are cast to the dtype of `x` (mixed precision).
    """

    state_count = 1
    saved_count = 1  # quantities `step` saves, each (batch, units)

    def __init__(self, layer, epsilon, dtype):
        cell = layer.cell
        self.cell, self.units, self.epsilon = cell, cell.units, epsilon
        self.kernel = tf.cast(cell.kernel, dtype)
        self.recurrent = tf.cast(cell.recurrent_kernel, dtype)
        self.bias = tf.cast(cell.bias, dtype) if cell.use_bias else None

    def affine(self, x, h):
        """x W + h U + b."""
        z = x @ self.kernel + h @ self.recurrent
        return z if self.bias is None else z + self.bias


def _split(weights, count):
    return tf.split(weights, count, axis=-1)


class _SimpleRNNCell(_Cell):
    def step(self, x, states):
        z = self.affine(x, states[0])
        return [self.cell.activation(z)], (z,)

    def relevance(self, x, states, saved, r_states):
        s = _ratio(r_states[0], saved[0], self.epsilon)
        return x * (s @ tf.transpose(self.kernel)), [
            states[0] * (s @ tf.transpose(self.recurrent))
        ]


class _LSTMCell(_Cell):
    state_count, saved_count = 2, 4

    def step(self, x, states):
        h, c = states
        z_i, z_f, z_g, z_o = _split(self.affine(x, h), 4)
        gate = self.cell.recurrent_activation
        i, f, o = gate(z_i), gate(z_f), gate(z_o)
        c_new = f * c + i * self.cell.activation(z_g)
        return [o * self.cell.activation(c_new), c_new], (z_g, c_new - f * c, c_new, f)

    def relevance(self, x, states, saved, r_states):
        h, c = states
        z_g, signal, c_new, f = saved
        share = _ratio(r_states[0] + r_states[1], c_new, self.epsilon)
        s = _ratio(signal * share, z_g, self.epsilon)
        kernel, recurrent = _split(self.kernel, 4)[2], _split(self.recurrent, 4)[2]
        return x * (s @ tf.transpose(kernel)), [
            h * (s @ tf.transpose(recurrent)),
            f * c * share,
        ]


class _GRUCell(_Cell):
    saved_count = 5

    def step(self, x, states):
        (h,) = states
        cell = self.cell
        x_z, x_r, x_h = _split(x @ self.kernel, 3)
        u_z, u_r, u_h = _split(self.recurrent, 3)
        h_z, h_r, h_h = h @ u_z, h @ u_r, None
        if cell.reset_after:
            h_h = h @ u_h
        if self.bias is not None:
            input_bias = self.bias[0] if cell.reset_after else self.bias
            x_z, x_r, x_h = (
                a + b
                for a, b in zip((x_z, x_r, x_h), _split(input_bias, 3), strict=True)
            )
            if cell.reset_after:
                b_z, b_r, b_h = _split(self.bias[1], 3)
                h_z, h_r, h_h = h_z + b_z, h_r + b_r, h_h + b_h
        z = cell.recurrent_activation(x_z + h_z)
        r = cell.recurrent_activation(x_r + h_r)
        pre = x_h + (r * h_h if cell.reset_after else (r * h) @ u_h)
        h_new = z * h + (1 - z) * cell.activation(pre)
        return [h_new], (pre, h_new - z * h, h_new, z, r)

    def relevance(self, x, states, saved, r_states):
        (h,) = states
        pre, candidate, h_new, z, r = saved
        share = _ratio(r_states[0], h_new, self.epsilon)
        s = _ratio(candidate * share, pre, self.epsilon)
        kernel = _split(self.kernel, 3)[2]
        recurrent = tf.transpose(_split(self.recurrent, 3)[2])
        if self.cell.reset_after:
            r_h = h * ((r * s) @ recurrent)
        else:
            r_h = h * r * (s @ recurrent)
        return x * (s @ tf.transpose(kernel)), [r_h + z * h * share]


_CELLS = ((L.LSTM, _LSTMCell), (L.GRU, _GRUCell), (L.SimpleRNN, _SimpleRNNCell))


def _cell(layer, epsilon, training, dtype) -> _Cell:
    """The step of `layer`, or a ValueError naming what is not supported."""
    if layer.stateful:
        raise ValueError(
            "The relevance pass does not support stateful recurrent layers. "
            f"Received: stateful=True in layer {layer.name!r}"
        )
    if training and (layer.cell.dropout or layer.cell.recurrent_dropout):
        raise ValueError(
            "The relevance pass in training mode (the FBI loss) cannot follow "
            f"the dropout masks inside the recurrent layer {layer.name!r}; put a "
            "`Dropout` layer before it instead. Received: "
            f"dropout={layer.cell.dropout}, "
            f"recurrent_dropout={layer.cell.recurrent_dropout}"
        )
    for layer_type, cell in _CELLS:
        if isinstance(layer, layer_type):
            return cell(layer, epsilon, dtype)
    raise ValueError(
        f"No relevance rule for the recurrent layer {layer.name!r} of type "
        f"{type(layer).__name__} (supported: SimpleRNN, LSTM, GRU, and "
        "Bidirectional around them)."
    )


class _Unrolled:
    """One SimpleRNN, LSTM or GRU layer run step by step on its input: its
    outputs, and the relevance of its inputs given that of its outputs.

    Args:
        layer: the layer.
        x: its input sequences, `(batch, time, features)`.
        mask: `(batch, time)` booleans, or None.
        initial_states: the initial state tensors, or None (zeros).
        epsilon: the stabiliser eps >= 0.
        training: whether the pass runs in training mode.
    """

    def __init__(self, layer, x, mask, initial_states, epsilon, training):
        cell = _cell(layer, epsilon, training, x.dtype)
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        self.zero_state = tf.zeros((batch, cell.units), x.dtype)
        states = list(initial_states or [self.zero_state] * cell.state_count)
        mask = (
            tf.ones((batch, steps), tf.bool) if mask is None else tf.cast(mask, tf.bool)
        )
        if layer.go_backwards:
            x, mask = tf.reverse(x, [1]), tf.reverse(mask, [1])
        self.xs = tf.transpose(x, [1, 0, 2])
        self.masks = tf.transpose(mask)[:, :, None]

        def forward(carry, elements):
            x_t, m_t = elements
            new, saved = cell.step(x_t, carry[0])
            new = [tf.where(m_t, a, b) for a, b in zip(new, carry[0], strict=True)]
            return new, carry[0], saved

        saved = (self.zero_state,) * cell.saved_count
        self.states, self.previous, self.saved = tf.scan(
            forward, (self.xs, self.masks), initializer=(states, states, saved)
        )
        self.layer, self.cell, self.steps = layer, cell, steps
        self.given = bool(initial_states)

    def output(self):
        """The layer's first output: the sequence of h (in the order the steps
        ran) with `return_sequences`, else the last h."""
        h = self.states[0]
        return tf.transpose(h, [1, 0, 2]) if self.layer.return_sequences else h[-1]

    def relevance(self, r_outputs):
        """`(r_x, r_initial_states)` from the relevance of the layer's
        flattened outputs (the sequence or last output, then the states if
        `return_state`; None where none): the relevance of `x` and of each
        initial state (None when no states were given)."""
        cell, steps, zero_state = self.cell, self.steps, self.zero_state
        r_output, *r_states = r_outputs
        if r_output is None:
            r_output = tf.zeros_like(self.states[0])
        elif self.layer.return_sequences:
            r_output = tf.transpose(r_output, [1, 0, 2])
        else:  # the last output: the states after the last step
            last = tf.one_hot(steps - 1, steps, dtype=zero_state.dtype)
            r_output = last[:, None, None] * r_output[None]
        r_states = [zero_state if r is None else r for r in r_states] or [
            zero_state
        ] * cell.state_count

        def backward(carry, elements):
            x_t, m_t, states_t, saved_t, r_out = elements
            r_now = [carry[0][0] + r_out, *carry[0][1:]]
            r_x, r_prev = cell.relevance(x_t, states_t, saved_t, r_now)
            r_prev = [tf.where(m_t, a, b) for a, b in zip(r_prev, r_now, strict=True)]
            return r_prev, tf.where(m_t, r_x, tf.zeros_like(r_x))

        r_initial, r_x = tf.scan(
            backward,
            (self.xs, self.masks, self.previous, self.saved, r_output),
            initializer=(r_states, tf.zeros_like(self.xs[0])),
            reverse=True,
        )
        r_x = tf.transpose(r_x, [1, 0, 2])
        if self.layer.go_backwards:
            r_x = tf.reverse(r_x, [1])
        return r_x, [r[0] for r in r_initial] if self.given else None


def _arguments(call):
    """`(sequences, mask, initial_states)` of a recurrent layer's call."""
    args, kwargs = list(call.args), dict(call.kwargs)
    sequences = kwargs.pop("sequences", None)
    if sequences is None:
        sequences = args.pop(0)
    initial = kwargs.get("initial_state", args[0] if args else None)
    mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
    if mask is None:
        mask = keras_mask(sequences)
    if initial is not None:
        initial = tf.nest.flatten(initial)
    return sequences, mask, initial


class RecurrentRule(Rule):
    """epsilon-LRP through SimpleRNN, LSTM, GRU and Bidirectional layers by the
    rule of Arras et al. (2017): the gates get no relevance, the signal path
    takes it all (see the module docstring). Inference and training mode
    (dropout inside the layer is refused in training mode); masks and
    `go_backwards`, `return_sequences`, `return_state` and initial states
    given as inputs are followed. Bidirectional: `merge_mode` "concat" splits
    the relevance between the directions, "sum" and "ave" by the epsilon rule,
    None keeps them apart; "mul" is refused. DeepLIFT has no rule here.

    Args:
        epsilon: the stabiliser eps >= 0.
    """

    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def forward(self, call):
        layer = call.operation
        outputs = call.run(*call.inputs)
        sequences, mask, initial = _arguments(call)

        def backward(relevances):
            if isinstance(layer, L.Bidirectional):
                r_x, r_initial = self._bidirectional(
                    call, sequences, mask, initial, relevances
                )
            else:
                unrolled = _Unrolled(
                    layer, sequences, mask, initial, self.epsilon, call.training
                )
                r_x, r_initial = unrolled.relevance(relevances)
            found = {id(sequences): r_x}
            for tensor, r in zip(initial or (), r_initial or (), strict=True):
                found[id(tensor)] = r
            return [found.get(id(tensor)) for tensor in call.inputs]

        def multiplier(multipliers):
            raise ValueError(
                "DeepLIFT has no rule for the recurrent layer "
                f"{layer.name!r} ({type(layer).__name__}). Use `epsilon_lrp` "
                "(the rule of Arras et al. 2017) or `integrated_gradients`."
            )

        return Propagation(outputs, outputs, backward, multiplier)

    def _bidirectional(self, call, sequences, mask, initial, relevances):
        layer = call.operation
        half = None if initial is None else len(initial) // 2
        directions = [
            _Unrolled(
                sublayer,
                sequences,
                mask,
                None if initial is None else part,
                self.epsilon,
                call.training,
            )
            for sublayer, part in (
                (layer.forward_layer, None if initial is None else initial[:half]),
                (layer.backward_layer, None if initial is None else initial[half:]),
            )
        ]
        merged = 2 if layer.merge_mode is None else 1
        r_merged, r_states = relevances[:merged], relevances[merged:]
        if layer.merge_mode is None:
            r_f, r_b = r_merged
        elif layer.merge_mode == "concat":
            units = layer.forward_layer.cell.units
            r_f, r_b = tf.split(r_merged[0], [units, -1], axis=-1)
        elif layer.merge_mode in ("sum", "ave"):
            y_f, y_b = (unrolled.output() for unrolled in directions)
            if layer.return_sequences:
                y_b = tf.reverse(y_b, [1])
            if layer.merge_mode == "ave":
                y_f, y_b = y_f / 2, y_b / 2
            share = _ratio(r_merged[0], y_f + y_b, self.epsilon)
            r_f, r_b = y_f * share, y_b * share
        else:
            raise ValueError(
                f"The relevance pass has no rule for Bidirectional merge_mode "
                f"{layer.merge_mode!r} in layer {layer.name!r} (a product of the "
                "two directions). Received: merge_mode='mul'; use 'concat', "
                "'sum', 'ave' or None."
            )
        if layer.return_sequences:
            r_b = tf.reverse(r_b, [1])
        count = len(r_states) // 2
        r_x_f, r_init_f = directions[0].relevance([r_f, *r_states[:count]])
        r_x_b, r_init_b = directions[1].relevance([r_b, *r_states[count:]])
        r_initial = None if initial is None else [*r_init_f, *r_init_b]
        return r_x_f + r_x_b, r_initial
