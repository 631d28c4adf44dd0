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


# The naive rule, written from the paper: explicit contributions z_ij.


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


def _naive_lstm(layer, e, mask, r_out, eps):
    kernel, recurrent, bias = (w.numpy() for w in layer.cell.weights)
    u = UNITS
    h, c, steps = np.zeros(u), np.zeros(u), []
    for t in range(T):
        if not mask[t]:
            steps.append(None)
            continue
        z = e[t] @ kernel + h @ recurrent + bias
        i, f, o = _sigmoid(z[:u]), _sigmoid(z[u : 2 * u]), _sigmoid(z[3 * u :])
        g = np.tanh(z[2 * u : 3 * u])
        steps.append((h, c, f, i * g))
        c = f * c + i * g
        h = o * np.tanh(c)
    relevance = np.zeros(T)
    r_h, r_c = r_out, np.zeros(u)
    for t in reversed(range(T)):
        if steps[t] is None:
            continue
        h_prev, c_prev, f, ig = steps[t]
        r_c_prev, r_g = _sum_rule([f * c_prev, ig], r_c + r_h, eps)
        k, r = kernel[:, 2 * u : 3 * u], recurrent[:, 2 * u : 3 * u]
        stacked = np.concatenate([e[t], h_prev])
        r_in = _linear(stacked, np.concatenate([k, r]), bias[2 * u : 3 * u], r_g, eps)
        relevance[t] = r_in[:DIM].sum()
        r_h, r_c = r_in[DIM:], r_c_prev
    return h, relevance


def _naive_gru(layer, e, mask, r_out, eps):
    kernel, recurrent, bias = (w.numpy() for w in layer.cell.weights)
    u = UNITS
    h, steps = np.zeros(u), []
    for t in range(T):
        if not mask[t]:
            steps.append(None)
            continue
        x_part = e[t] @ kernel + bias[0]
        h_part = h @ recurrent + bias[1]
        z = _sigmoid(x_part[:u] + h_part[:u])
        r = _sigmoid(x_part[u : 2 * u] + h_part[u : 2 * u])
        candidate = (1 - z) * np.tanh(x_part[2 * u :] + r * h_part[2 * u :])
        steps.append((h, z, r, candidate))
        h = z * h + candidate
    relevance = np.zeros(T)
    r_h = r_out
    for t in reversed(range(T)):
        if steps[t] is None:
            continue
        h_prev, z, r, candidate = steps[t]
        r_direct, r_candidate = _sum_rule([z * h_prev, candidate], r_h, eps)
        # pre-activation: x W_h + b_xh + r * (h U_h + b_hh), the gate r fixed
        stacked = np.concatenate([e[t], h_prev, [1.0]])
        weights = np.concatenate(
            [
                kernel[:, 2 * u :],
                recurrent[:, 2 * u :] * r[None, :],
                (r * bias[1, 2 * u :])[None, :],
            ]
        )
        r_in = _linear(stacked, weights, bias[0, 2 * u :], r_candidate, eps)
        relevance[t] = r_in[:DIM].sum()
        r_h = r_in[DIM : DIM + u] + r_direct
    return h, relevance


@pytest.mark.parametrize(
    "layer, naive",
    [
        (lambda: L.LSTM(UNITS, dtype="float64"), _naive_lstm),
        (lambda: L.GRU(UNITS, dtype="float64"), _naive_gru),
    ],
    ids=["lstm", "gru"],
)
def test_recurrent_relevance_equals_the_naive_rule_of_arras(layer, naive):
    model = _model(layer())
    ids, targets, eps = _ids(), np.array([0, 1, 1]), 0.05
    ours = epsilon_lrp(model, ids, targets, eps=eps).numpy()
    e = model.get_layer("embedding")(ids).numpy()
    recurrent = model.layers[2]
    hidden = keras.Model(model.input, recurrent.output)(ids).numpy()
    w = model.get_layer("logits").kernel.numpy()
    for b in range(len(ids)):
        r_out = _linear(
            hidden[b], w, None, np.eye(2)[targets[b]] * (hidden[b] @ w), eps
        )
        h, expected = naive(recurrent, e[b], ids[b] != 0, r_out, eps)
        np.testing.assert_allclose(h, hidden[b], rtol=1e-10)  # same forward
        assert np.abs(expected).max() > 1e-3
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
    ours = epsilon_lrp(model, ids, targets, eps=1e-12).numpy()
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
    relevance = relevance_map(model, x, [0, 1], eps=1e-12).numpy()
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
        return tf.reduce_sum(epsilon_lrp(model, ids, targets, eps=0.1) * weights)

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


def test_fbi_trains_a_conv_lstm_text_model():
    model = _model(
        lambda h: L.LSTM(UNITS, dtype="float64")(
            L.Conv1D(3, 2, padding="same", activation="relu", dtype="float64")(h)
        ),
        mask_zero=False,
    )
    wrapped = AttributionRegularizedModel(model, FBILoss(lam=0.5))
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.layers[3].cell.kernel.numpy().copy()
    logs = wrapped.fit(_ids(), np.array([0, 1, 0]), batch_size=3, verbose=0).history
    assert np.isfinite(logs["fbi_loss"][0]) and logs["fbi_loss"][0] > 0
    assert np.abs(model.layers[3].cell.kernel.numpy() - before).max() > 0


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
