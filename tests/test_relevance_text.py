"""The relevance pass on token-id models: epsilon-LRP, DeepLIFT and FBI at the
Embedding output e, against the test's own tape."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attreg import AttributionRegularizedModel, FBILoss
from keras_attreg.attributions import deeplift_rescale, epsilon_lrp

L = keras.layers
T, VOCAB, DIM = 12, 30, 6


def _text_cnn(pooling=L.GlobalMaxPooling1D, mask_zero=False, dtype=None):
    kw = {} if dtype is None else {"dtype": dtype}
    ids = keras.Input((T,), dtype="int32")
    e = L.Embedding(VOCAB, DIM, mask_zero=mask_zero, name="embedding", **kw)(ids)
    h = L.Conv1D(8, 3, padding="same", activation="relu", name="conv", **kw)(e)
    h = pooling(**kw)(h)
    h = L.Dense(5, activation="relu", name="hidden", **kw)(h)
    model = keras.Model(ids, L.Dense(2, name="logits", **kw)(h))
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(size=tuple(variable.shape)) * 0.5)
    return model


def _ids(seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(4, T))
    ids[0, 8:] = 0  # padding
    ids[2, 5:] = 0
    return ids.astype("int32")


def _own_embedding_relevance(model, ids, targets):
    """e * dS_c/de from the test's own tape, e fed through a model on e."""
    embedding = model.get_layer("embedding")
    e = tf.constant(embedding(ids))
    head = keras.Model(embedding.output, model.output)
    with tf.GradientTape() as tape:
        tape.watch(e)
        score = tf.reduce_sum(tf.gather(head(e), targets, axis=1, batch_dims=1))
    return e, (e * tape.gradient(score, e)).numpy()


def test_epsilon_lrp_on_tokens_is_the_token_sum_of_e_times_gradient():
    model = _text_cnn()
    ids, targets = _ids(), np.array([0, 1, 1, 0])
    _, expected = _own_embedding_relevance(model, ids, targets)
    expected = np.where(ids == 0, 0.0, expected.sum(axis=-1))
    ours = epsilon_lrp(model, ids, targets, epsilon=1e-9).numpy()
    assert ours.shape == (4, T)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
    assert np.all(ours[ids == 0] == 0)


def test_deeplift_on_tokens_sums_to_the_score_difference():
    # Zero-embedding baseline; padding keeps its embedding on the baseline.
    model = _text_cnn(pooling=L.GlobalAveragePooling1D)
    ids, targets = _ids(2), np.array([1, 0, 1, 1])
    embedding = model.get_layer("embedding")
    e = embedding(ids)
    reference = tf.where((ids == 0)[..., None], e, tf.zeros_like(e))
    head = keras.Model(embedding.output, model.output)
    delta = head(e).numpy() - head(reference).numpy()
    ours = deeplift_rescale(model, ids, targets).numpy()
    np.testing.assert_allclose(
        ours.sum(axis=1), delta[np.arange(4), targets], rtol=1e-4, atol=1e-6
    )


def test_fbi_loss_on_a_text_cnn_starts_at_the_embedding_output():
    model = _text_cnn()
    ids, y = _ids(3), np.array([0, 1, 0, 1])
    e, _ = _own_embedding_relevance(model, ids, y)
    # counted layers: conv (reads e), hidden, logits
    conv, hidden, logits = (model.get_layer(n) for n in ("conv", "hidden", "logits"))
    head = keras.Model(conv.input, [hidden.input, logits.input, model.output])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(e)
        a1, a2, out = head(e)
        score = tf.reduce_sum(tf.gather(out, y, axis=1, batch_dims=1))
    terms = [
        np.mean(np.abs((a - a * tape.gradient(score, a)).numpy()).reshape(4, -1), 1)
        for a in (e, a1, a2)
    ]
    expected = np.mean(np.mean(terms, axis=0))
    wrapped = AttributionRegularizedModel(model, FBILoss(lam=0.5, epsilon=1e-9))
    wrapped.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = wrapped.evaluate(ids, y, batch_size=4, verbose=0, return_dict=True)
    assert logs["fbi_loss"] == pytest.approx(expected, rel=1e-4)


def _own_fbi_gradient(model, ids, y):
    """d L_FBI / d weights from the test's own nested tapes: L_FBI is Eq. 3
    with a- = a * dS_c/da (epsilon-LRP at eps -> 0 on this ReLU net) at the
    inputs of the three layers with a kernel (conv reads e, hidden, logits),
    mean |a+ - a-| over the units, over the layers, then over the batch."""
    embedding = model.get_layer("embedding")
    conv, hidden, logits = (model.get_layer(n) for n in ("conv", "hidden", "logits"))
    head = keras.Model(conv.input, [hidden.input, logits.input, model.output])
    with tf.GradientTape() as outer:
        e = embedding(ids)
        with tf.GradientTape(persistent=True) as inner:
            inner.watch(e)
            a1, a2, out = head(e, training=True)
            score = tf.reduce_sum(tf.gather(out, y, axis=1, batch_dims=1))
        terms = [
            tf.reduce_mean(
                tf.reshape(tf.abs(a - a * inner.gradient(score, a)), [len(ids), -1]),
                axis=1,
            )
            for a in (e, a1, a2)
        ]
        fbi = tf.reduce_mean(tf.add_n(terms) / 3)
    variables = model.trainable_variables
    gradients = outer.gradient(fbi, variables)
    return [  # None: L_FBI does not depend on it (the logits' bias)
        np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy()
        for v, g in zip(variables, gradients, strict=True)
    ]


def test_fbi_trains_the_embedding_of_a_text_cnn():
    """Oracle: the test's own tape (`_own_fbi_gradient`). With SGD at rate 1
    one `train_on_batch` step changes the weights by -(1 - lam) dL_task/dW
    - lam dL_FBI/dW; a plain Keras step from the same weights (the same task
    loss, no penalty) gives dL_task/dW, so (dW_fbi - (1 - lam) dW_task) /
    (-lam) must be the FBI gradient of the own tape for every weight, the
    embedding included, and differ from the task-only update."""
    lam = 0.5
    ids, y = _ids(4), np.array([0, 1, 0, 1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = _text_cnn(dtype="float64")
    start = [v.numpy().copy() for v in model.trainable_variables]
    expected = _own_fbi_gradient(model, ids, tf.constant(y))

    plain = _text_cnn(dtype="float64")  # the same weights (same seed)
    plain.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    plain.train_on_batch(ids, y)
    task_step = [
        v.numpy() - w for v, w in zip(plain.trainable_variables, start, strict=True)
    ]

    wrapped = AttributionRegularizedModel(model, FBILoss(lam=lam, epsilon=1e-9))
    wrapped.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    wrapped.train_on_batch(ids, y)
    fbi_step = [
        v.numpy() - w for v, w in zip(model.trainable_variables, start, strict=True)
    ]

    names = [v.path for v in model.trainable_variables]
    assert "embedding/embeddings" in names
    assert names[-1] == "logits/bias" and not expected[-1].any()
    for name, fbi, task, own in zip(names, fbi_step, task_step, expected, strict=True):
        regulariser = (fbi - (1 - lam) * task) / -lam
        np.testing.assert_allclose(regulariser, own, rtol=1e-4, atol=1e-8, err_msg=name)
    for fbi, task, own in zip(fbi_step[:-1], task_step, expected, strict=False):
        assert np.abs(own).max() > 1e-3
        assert np.abs(fbi - task).max() > 0.1 * np.abs(own).max()


def test_deeplift_with_a_baseline_token_sums_to_the_score_difference():
    model = _text_cnn(pooling=L.GlobalAveragePooling1D)
    ids, targets = _ids(5), np.array([0, 1, 1, 0])
    embedding = model.get_layer("embedding")
    e = embedding(ids)
    token = embedding.embeddings[7]
    reference = tf.where((ids == 0)[..., None], e, tf.broadcast_to(token, e.shape))
    head = keras.Model(embedding.output, model.output)
    delta = head(e).numpy() - head(reference).numpy()
    ours = deeplift_rescale(model, ids, targets, baseline_token=7).numpy()
    np.testing.assert_allclose(
        ours.sum(axis=1), delta[np.arange(4), targets], rtol=1e-4, atol=1e-6
    )
