"""epsilon-LRP through recurrent layers (Arras et al. 2017), against a naive
NumPy implementation of the rule, conservation, and finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg import AttributionRegularizedModel, FBILoss
from keras_attreg.attributions import deeplift_rescale, epsilon_lrp
from keras_attreg.relevance import relevance_map

L = keras.layers
T, VOCAB, DIM, UNITS = 7, 20, 4, 3
F64 = "float64"


def _ids():
    ids = np.random.default_rng(1).integers(1, VOCAB, size=(3, T))
    ids[0, 5:] = 0  # padding
    ids[2, 3:] = 0
    return ids.astype("int32")


def _model(recurrent, head=None, mask_zero=True, dtype="float64", seed=0):
    ids = keras.Input((T,), dtype="int32")
    h = L.Embedding(VOCAB, DIM, mask_zero=mask_zero, name="embedding", dtype=dtype)(ids)
    h = recurrent(h)
    if head is not None:
        h = head(h)
    model = keras.Model(ids, L.Dense(2, use_bias=False, name="logits", dtype=dtype)(h))
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)) * 0.7)
    return model


# The naive rule, written from the paper: explicit contributions z_ij, one
# sample at a time, every step of every cell spelled out in NumPy.


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _linear(a, w, b, relevance, eps):
    """R_i = sum_j a_i w_ij / (sum_i a_i w_ij + b_j)_eps * R_j, one sample."""
    contributions = a[:, None] * w  # (in, out)
    z = contributions.sum(0) + (0 if b is None else b)
    return (contributions / _stab(z, eps)[None, :] * relevance[None, :]).sum(1)


def _sum_rule(terms, relevance, eps):
    """R_k = t_k / (sum_k t_k)_eps * R for the operands t_k of a sum."""
    total = _stab(sum(terms), eps)
    return [t / total * relevance for t in terms]


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _params(layer):
    cell = layer.cell
    return (
        cell.kernel.numpy(),
        cell.recurrent_kernel.numpy(),
        cell.bias.numpy(),
        cell.units,
    )


# Each cell: `step(layer, x_t, state) -> (new state, saved)` and
# `back(layer, x_t, saved, r_state, eps) -> (R of x_t, R of the previous state)`.


def _lstm_step(layer, x, state):
    kernel, recurrent, bias, u = _params(layer)
    h, c = state
    z = x @ kernel + h @ recurrent + bias
    i, f, o = _sigmoid(z[:u]), _sigmoid(z[u : 2 * u]), _sigmoid(z[3 * u :])
    g = np.tanh(z[2 * u : 3 * u])
    c_new = f * c + i * g
    return (o * np.tanh(c_new), c_new), (h, c, f, i * g)


def _lstm_back(layer, x, saved, r_state, eps):
    kernel, recurrent, bias, u = _params(layer)
    h, c, f, ig = saved
    r_h, r_c = r_state
    # h_t = o * tanh(c_t): all of R(h_t) goes to c_t; c_t = f c_{t-1} + i g.
    r_c_prev, r_g = _sum_rule([f * c, ig], r_c + r_h, eps)
    weights = np.concatenate([kernel[:, 2 * u : 3 * u], recurrent[:, 2 * u : 3 * u]])
    r_in = _linear(np.concatenate([x, h]), weights, bias[2 * u : 3 * u], r_g, eps)
    return r_in[: len(x)], (r_in[len(x) :], r_c_prev)


def _gru_parts(layer, x, h):
    kernel, recurrent, bias, u = _params(layer)
    after = layer.cell.reset_after
    b_x, b_h = (bias[0], bias[1]) if after else (bias, np.zeros(3 * u))
    x_part = x @ kernel + b_x
    if after:
        h_part = h @ recurrent + b_h
        z = _sigmoid(x_part[:u] + h_part[:u])
        r = _sigmoid(x_part[u : 2 * u] + h_part[u : 2 * u])
        pre = x_part[2 * u :] + r * h_part[2 * u :]
    else:  # reset before: the candidate reads (r * h) U_h
        z = _sigmoid(x_part[:u] + h @ recurrent[:, :u])
        r = _sigmoid(x_part[u : 2 * u] + h @ recurrent[:, u : 2 * u])
        pre = x_part[2 * u :] + (r * h) @ recurrent[:, 2 * u :]
    return z, r, pre


def _gru_step(layer, x, state):
    (h,) = state
    z, r, pre = _gru_parts(layer, x, h)
    candidate = (1 - z) * np.tanh(pre)
    return (z * h + candidate,), (h, z, r, candidate)


def _gru_back(layer, x, saved, r_state, eps):
    kernel, recurrent, bias, u = _params(layer)
    h, z, r, candidate = saved
    d = len(x)
    # h_t = z h_{t-1} + (1 - z) tanh(pre): a sum; the gates are constants.
    r_direct, r_candidate = _sum_rule([z * h, candidate], r_state[0], eps)
    if layer.cell.reset_after:
        # pre = x W_h + b_xh + r * (h U_h + b_hh): r scales the output units.
        stacked = np.concatenate([x, h, [1.0]])
        weights = np.concatenate(
            [
                kernel[:, 2 * u :],
                recurrent[:, 2 * u :] * r[None, :],
                (r * bias[1, 2 * u :])[None, :],
            ]
        )
        r_in = _linear(stacked, weights, bias[0, 2 * u :], r_candidate, eps)
    else:
        # pre = x W_h + (r * h) U_h + b_h: the input r * h is h's, r a constant.
        stacked = np.concatenate([x, r * h])
        weights = np.concatenate([kernel[:, 2 * u :], recurrent[:, 2 * u :]])
        r_in = _linear(stacked, weights, bias[2 * u :], r_candidate, eps)
    return r_in[:d], (r_in[d : d + u] + r_direct,)


def _simple_step(layer, x, state):
    kernel, recurrent, bias, _ = _params(layer)
    (h,) = state
    return (np.tanh(x @ kernel + h @ recurrent + bias),), (h,)


def _simple_back(layer, x, saved, r_state, eps):
    kernel, recurrent, bias, _ = _params(layer)
    (h,) = saved
    stacked, weights = np.concatenate([x, h]), np.concatenate([kernel, recurrent])
    r_in = _linear(stacked, weights, bias, r_state[0], eps)
    return r_in[: len(x)], (r_in[len(x) :],)


def _cell_rule(layer):
    if isinstance(layer, L.LSTM):
        return _lstm_step, _lstm_back, 2
    if isinstance(layer, L.GRU):
        return _gru_step, _gru_back, 1
    assert isinstance(layer, L.SimpleRNN)
    return _simple_step, _simple_back, 1


def _naive_forward(layer, x, mask):
    """One sample `x` (T, D) through `layer`, in the order the steps run
    (reversed for `go_backwards`); a masked step carries the states over.
    Returns (h after each step (T, units), what the backward loop needs)."""
    step, _, count = _cell_rule(layer)
    if layer.go_backwards:
        x, mask = x[::-1], mask[::-1]
    state = (np.zeros(layer.cell.units),) * count
    hs, saved = [], []
    for t in range(len(x)):
        if mask[t]:
            state, kept = step(layer, x[t], state)
            saved.append(kept)
        else:
            saved.append(None)
        hs.append(state[0])
    return np.stack(hs), (layer, x, saved, count)


def _naive_backward(run, r_hs, eps):
    """R of the input (T, D), in time order, from R of each step's h (T,
    units), in run order; a masked step passes R of its states back as is."""
    layer, x, saved, count = run
    _, back, _ = _cell_rule(layer)
    r_state = [np.zeros(layer.cell.units)] * count
    r_x = np.zeros_like(x)
    for t in reversed(range(len(x))):
        r_state = [r_state[0] + r_hs[t], *r_state[1:]]
        if saved[t] is not None:
            r_x[t], r_state = back(layer, x[t], saved[t], r_state, eps)
    return r_x[::-1] if layer.go_backwards else r_x


def _naive_layer(layer, x, mask, r_of_output, eps):
    """(the layer's output, R of x) for R of the output given as a function of
    the output (the head's rule)."""
    hs, run = _naive_forward(layer, x, mask)
    output = hs if layer.return_sequences else hs[-1]
    r_output = r_of_output(output)
    if layer.return_sequences:
        r_hs = r_output
    else:  # the last output is the h after the last step
        r_hs = np.zeros_like(hs)
        r_hs[-1] = r_output
    return output, _naive_backward(run, r_hs, eps)


def _naive_bidirectional(layer, x, mask, r_of_output, eps):
    """Bidirectional: both directions, merged as `merge_mode` says; the sum
    and the average split R by the epsilon rule of a sum."""
    forward, backward = layer.forward_layer, layer.backward_layer
    hs_f, run_f = _naive_forward(forward, x, mask)
    hs_b, run_b = _naive_forward(backward, x, mask)
    sequences = layer.return_sequences
    if sequences:  # Keras aligns the backward outputs with time, zero at masks
        y_f, y_b = hs_f * mask[:, None], hs_b[::-1] * mask[:, None]
    else:
        y_f, y_b = hs_f[-1], hs_b[-1]
    units = forward.cell.units
    if layer.merge_mode in ("concat", None):
        merged = np.concatenate([y_f, y_b], axis=-1)
        r = r_of_output(merged)
        r_f, r_b = r[..., :units], r[..., units:]
    elif layer.merge_mode in ("sum", "ave"):
        half = 0.5 if layer.merge_mode == "ave" else 1.0
        merged = half * (y_f + y_b)
        r_f, r_b = _sum_rule([half * y_f, half * y_b], r_of_output(merged), eps)
    else:
        raise AssertionError(layer.merge_mode)

    def per_step(r_y, hs):
        if sequences:
            return r_y
        r_hs = np.zeros_like(hs)
        r_hs[-1] = r_y
        return r_hs

    r_hs_f = per_step(r_f, hs_f)
    r_hs_b = per_step(r_b[::-1] if sequences else r_b, hs_b)
    r_x = _naive_backward(run_f, r_hs_f, eps) + _naive_backward(run_b, r_hs_b, eps)
    return merged, r_x


def _dense_head(model, target, eps):
    """R of the logit layer's input: the epsilon rule of the bias-free Dense
    from R_logits = S_c * onehot(c)."""
    w = model.get_layer("logits").kernel.numpy()

    def rule(hidden):
        return _linear(hidden, w, None, np.eye(2)[target] * (hidden @ w), eps)

    return rule


def _pooled(weights, head, eps):
    """R of a sequence read by a masked GlobalAveragePooling1D, then `head`:
    y = sum_t w_t h_t with w_t = m_t / sum_t m_t, an affine map (the epsilon
    rule)."""

    def rule(sequence):
        pooled = weights @ sequence
        return sequence * weights[:, None] * (head(pooled) / _stab(pooled, eps))

    return rule


def _single(make):
    def build():
        return make(name="rnn")

    def naive(model, e, mask, head, eps):
        return _naive_layer(model.get_layer("rnn"), e, mask, head, eps)

    return build, naive


def _bidirectional(make, merge_mode, pooled=False):
    def build():
        layer = L.Bidirectional(make(), merge_mode=merge_mode, name="rnn", dtype=F64)
        if merge_mode is None:  # two outputs: concatenated by the next layer
            return lambda h: L.Concatenate(dtype=F64)(layer(h))
        if pooled:
            return lambda h: L.GlobalAveragePooling1D(dtype=F64)(layer(h))
        return layer

    def naive(model, e, mask, head, eps):
        layer = model.get_layer("rnn")
        if not pooled:
            return _naive_bidirectional(layer, e, mask, head, eps)
        weights = mask / mask.sum()
        merged, r_e = _naive_bidirectional(
            layer, e, mask, _pooled(weights, head, eps), eps
        )
        return weights @ merged, r_e

    return build, naive


def _stacked():
    def build():
        first = L.LSTM(UNITS, return_sequences=True, name="rnn1", dtype=F64)
        second = L.GRU(UNITS, reset_after=False, name="rnn2", dtype=F64)
        return lambda h: second(first(h))

    def naive(model, e, mask, head, eps):
        found = {}

        def through_second(sequence):
            found["hidden"], r = _naive_layer(
                model.get_layer("rnn2"), sequence, mask, head, eps
            )
            return r

        _, r_e = _naive_layer(model.get_layer("rnn1"), e, mask, through_second, eps)
        return found["hidden"], r_e

    return build, naive


NAIVE_VARIANTS = {
    "lstm": _single(lambda **kw: L.LSTM(UNITS, dtype=F64, **kw)),
    "gru": _single(lambda **kw: L.GRU(UNITS, dtype=F64, **kw)),
    "gru_reset_before": _single(
        lambda **kw: L.GRU(UNITS, reset_after=False, dtype=F64, **kw)
    ),
    "simple_rnn": _single(lambda **kw: L.SimpleRNN(UNITS, dtype=F64, **kw)),
    "lstm_backwards": _single(
        lambda **kw: L.LSTM(UNITS, go_backwards=True, dtype=F64, **kw)
    ),
    "gru_reset_before_backwards": _single(
        lambda **kw: L.GRU(UNITS, reset_after=False, go_backwards=True, dtype=F64, **kw)
    ),
    "bidirectional_concat": _bidirectional(lambda: L.LSTM(UNITS, dtype=F64), "concat"),
    "bidirectional_sum": _bidirectional(lambda: L.GRU(UNITS, dtype=F64), "sum"),
    "bidirectional_ave": _bidirectional(lambda: L.SimpleRNN(UNITS, dtype=F64), "ave"),
    "bidirectional_none": _bidirectional(
        lambda: L.GRU(UNITS, reset_after=False, dtype=F64), None
    ),
    "bidirectional_ave_sequences": _bidirectional(
        lambda: L.LSTM(UNITS, return_sequences=True, dtype=F64), "ave", pooled=True
    ),
    "bidirectional_sum_sequences": _bidirectional(
        lambda: L.GRU(UNITS, return_sequences=True, dtype=F64), "sum", pooled=True
    ),
    "stacked_sequences": _stacked(),
}


@pytest.mark.parametrize("name", list(NAIVE_VARIANTS))
def test_recurrent_relevance_equals_the_naive_rule_of_arras(name):
    """Oracle: the rule of Arras et al. (2017) written out step by step in
    NumPy above (`_naive_layer`, `_naive_bidirectional`: explicit
    contributions, the gates constant, the epsilon rule on every sum and
    affine map), at eps = 0.05 with the random non-zero biases of `_model`,
    padding masked. The naive forward pass must also reproduce the layer's
    own output, so that both walk the same steps in the same order."""
    build, naive = NAIVE_VARIANTS[name]
    model = _model(build())
    ids, targets, eps = _ids(), np.array([0, 1, 1]), 0.05
    ours = epsilon_lrp(model, ids, targets, epsilon=eps).numpy()
    e = model.get_layer("embedding")(ids).numpy()
    hidden = keras.Model(model.input, model.get_layer("logits").input)(ids).numpy()
    for b in range(len(ids)):
        head = _dense_head(model, targets[b], eps)
        h, expected = naive(model, e[b], ids[b] != 0, head, eps)
        np.testing.assert_allclose(h, hidden[b], rtol=1e-10, atol=1e-14)
        expected = expected.sum(axis=-1)  # per token
        assert np.abs(expected).max() > 1e-4  # against atol 1e-12 below
        np.testing.assert_allclose(ours[b], expected, rtol=1e-7, atol=1e-12)
    assert np.all(ours[ids == 0] == 0)


CONSERVING = {
    "lstm": lambda: L.LSTM(UNITS, use_bias=False, dtype="float64"),
    "gru": lambda: L.GRU(UNITS, use_bias=False, dtype="float64"),
    "gru_reset_before": lambda: L.GRU(
        UNITS, use_bias=False, reset_after=False, dtype="float64"
    ),
    "simple_rnn": lambda: L.SimpleRNN(UNITS, use_bias=False, dtype="float64"),
    "lstm_backwards": lambda: L.LSTM(
        UNITS, use_bias=False, go_backwards=True, dtype="float64"
    ),
    "bidirectional_concat": lambda: L.Bidirectional(
        L.LSTM(UNITS, use_bias=False, dtype="float64"), dtype="float64"
    ),
    "bidirectional_sum": lambda: L.Bidirectional(
        L.GRU(UNITS, use_bias=False, dtype="float64"), merge_mode="sum", dtype="float64"
    ),
    "bidirectional_ave_sequences": lambda: L.Bidirectional(
        L.LSTM(UNITS, use_bias=False, return_sequences=True, dtype="float64"),
        merge_mode="ave",
        dtype="float64",
    ),
    "stacked_sequences": lambda: (
        lambda h: L.GRU(UNITS, use_bias=False, dtype="float64")(
            L.LSTM(UNITS, use_bias=False, return_sequences=True, dtype="float64")(h)
        )
    ),
}


@pytest.mark.parametrize("name", list(CONSERVING))
def test_bias_free_recurrent_models_conserve_relevance(name):
    head = (
        L.GlobalAveragePooling1D(dtype="float64")
        if name.endswith("_sequences") and name.startswith("bidirectional")
        else None
    )
    model = _model(CONSERVING[name](), head)
    ids, targets = _ids(), np.array([1, 0, 1])
    ours = epsilon_lrp(model, ids, targets, epsilon=1e-12).numpy()
    scores = model(ids).numpy()[np.arange(3), targets]
    assert np.abs(scores).min() > 1e-3
    np.testing.assert_allclose(ours.sum(1), scores, rtol=1e-7)
    assert np.all(ours[ids == 0] == 0)
    assert np.all(np.abs(ours[ids != 0]) > 0)


def test_masking_layer_on_float_sequences_skips_the_masked_steps():
    x = np.random.default_rng(2).normal(size=(2, T, DIM))
    x[0, 4:] = 0.0
    model = keras.Sequential(
        [
            keras.Input((T, DIM), dtype="float64"),
            L.Masking(0.0, dtype="float64"),
            L.LSTM(UNITS, use_bias=False, dtype="float64"),
            L.Dense(2, use_bias=False, dtype="float64"),
        ]
    )
    relevance = relevance_map(model, x, [0, 1], epsilon=1e-12).numpy()
    scores = model(x).numpy()[[0, 1], [0, 1]]
    np.testing.assert_allclose(relevance.sum(axis=(1, 2)), scores, rtol=1e-7)
    assert np.all(relevance[0, 4:] == 0)


def test_relevance_map_is_differentiable_in_the_recurrent_weights():
    """The FBI loss differentiates the maps: the gradient of a function of the
    map w.r.t. the LSTM kernels equals central finite differences."""
    conv = L.Conv1D(3, 2, padding="same", activation="relu", dtype="float64")
    model = _model(
        lambda h: L.LSTM(UNITS, dtype="float64", name="lstm")(conv(h)),
        mask_zero=False,
        seed=3,
    )
    lstm = model.get_layer("lstm")
    ids, targets = _ids(), tf.constant([0, 1, 0])
    weights = tf.constant(np.random.default_rng(4).normal(size=(3, T)))

    def value():
        return tf.reduce_sum(epsilon_lrp(model, ids, targets, epsilon=0.1) * weights)

    variables = [lstm.cell.kernel, lstm.cell.recurrent_kernel]
    with tf.GradientTape() as tape:
        total = value()
    gradients = tape.gradient(total, variables)
    rng = np.random.default_rng(5)
    for variable, gradient in zip(variables, gradients, strict=True):
        for _ in range(2):
            index = tuple(rng.integers(0, s) for s in variable.shape)
            original = variable.numpy()
            values = []
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * 1e-6
                variable.assign(shifted)
                values.append(value().numpy())
            variable.assign(original)
            numeric = (values[0] - values[1]) / 2e-6
            assert gradient.numpy()[index] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def _conv_lstm():
    return _model(
        lambda h: L.LSTM(UNITS, dtype=F64, name="lstm")(
            L.Conv1D(3, 2, padding="same", activation="relu", dtype=F64, name="conv")(h)
        ),
        mask_zero=False,
    )


@pytest.mark.slow  # compiles an FBI step through ConvLSTM: several seconds
def test_fbi_trains_a_conv_lstm_text_model():
    """Oracle: central finite differences (float64) of the FBI loss, the
    regulariser's own value averaged over the batch in training mode (its
    values through the LSTM are pinned by the naive rule above). With SGD at
    rate 1 one `train_on_batch` step changes the weights by -(1 - lam)
    dL_task/dW - lam dL_FBI/dW; a plain Keras step from the same weights gives
    dL_task/dW, so (dW_fbi - (1 - lam) dW_task) / (-lam) must equal the finite
    differences at entries of the LSTM's kernels and bias, the convolution's
    kernel and the embedding rows of tokens in the batch."""
    from keras_attreg._logits import split_logits

    lam = 0.5
    ids, y = _ids(), np.array([0, 1, 0])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _conv_lstm()
    start = [v.numpy().copy() for v in model.trainable_variables]
    plain = _conv_lstm()  # the same weights (same seed)
    plain.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    plain.train_on_batch(ids, y)
    regularizer = FBILoss(lam=lam, epsilon=0.05)
    wrapped = AttributionRegularizedModel(model, regularizer)
    wrapped.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    wrapped.train_on_batch(ids, y)
    steps = {
        v.path: (v.numpy() - w, p.numpy() - w)
        for v, p, w in zip(
            model.trainable_variables, plain.trainable_variables, start, strict=True
        )
    }
    for variable, value in zip(model.trainable_variables, start, strict=True):
        variable.assign(value)

    split, x, targets = split_logits(model), tf.constant(ids), tf.constant(y)

    def fbi():
        return tf.reduce_mean(regularizer(split, x, targets, training=True)[1])

    rng = np.random.default_rng(6)
    variables = {v.path: v for v in model.trainable_variables}
    entries = [
        ("embedding/embeddings", (ids[0, 0], 1)),
        ("embedding/embeddings", (ids[1, 2], 3)),
    ]
    for path in ("lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel"):
        shape = variables[path].shape
        # an entry of the cell input g (signal path) and one of a gate
        entries += [(path, (0, 2 * UNITS + 1)), (path, (1, UNITS))]
        assert shape[1] == 4 * UNITS
    entries += [("lstm/lstm_cell/bias", (2 * UNITS,)), ("conv/kernel", (1, 2, 0))]
    entries.append(
        (
            "conv/kernel",
            tuple(rng.integers(0, s) for s in variables["conv/kernel"].shape),
        )
    )
    for path, index in entries:
        variable, original = variables[path], variables[path].numpy()
        values = []
        for sign in (1, -1):
            shifted = original.copy()
            shifted[index] += sign * 1e-6
            variable.assign(shifted)
            values.append(fbi().numpy())
        variable.assign(original)
        numeric = (values[0] - values[1]) / 2e-6
        fbi_step, task_step = (step[index] for step in steps[path])
        assert abs(numeric) > 1e-4, (path, index)
        regulariser = (fbi_step - (1 - lam) * task_step) / -lam
        assert regulariser == pytest.approx(numeric, rel=1e-5), (path, index)
        assert abs(fbi_step - task_step) > 0.05 * abs(numeric), (path, index)


def test_unsupported_recurrent_cases_say_what_to_do():
    ids, targets = _ids(), np.array([0, 1, 0])
    model = _model(L.LSTM(UNITS, name="lstm", dtype="float64"))
    with pytest.raises(ValueError, match="DeepLIFT has no rule.*'lstm'.*epsilon_lrp"):
        deeplift_rescale(model, ids, targets)
    product = _model(
        L.Bidirectional(
            L.GRU(UNITS, dtype="float64"), merge_mode="mul", dtype="float64"
        )
    )
    with pytest.raises(ValueError, match="merge_mode='mul'"):
        epsilon_lrp(product, ids, targets)
    dropout = _model(L.LSTM(UNITS, dropout=0.2, name="lstm", dtype="float64"))
    wrapped = AttributionRegularizedModel(dropout, FBILoss(lam=0.5))
    wrapped.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="Dropout.*Received: dropout=0.2"):
        wrapped.fit(ids, targets, batch_size=3, verbose=0)
