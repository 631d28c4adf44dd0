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


def _text_cnn(pooling=L.GlobalMaxPooling1D, mask_zero=False):
    ids = keras.Input((T,), dtype="int32")
    e = L.Embedding(VOCAB, DIM, mask_zero=mask_zero, name="embedding")(ids)
    h = L.Conv1D(8, 3, padding="same", activation="relu", name="conv")(e)
    h = pooling()(h)
    h = L.Dense(5, activation="relu", name="hidden")(h)
    model = keras.Model(ids, L.Dense(2, name="logits")(h))
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
    ours = epsilon_lrp(model, ids, targets, eps=1e-9).numpy()
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
    wrapped = AttributionRegularizedModel(model, FBILoss(lam=0.5, eps=1e-9))
    wrapped.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = wrapped.evaluate(ids, y, batch_size=4, verbose=0, return_dict=True)
    assert logs["fbi_loss"] == pytest.approx(expected, rel=1e-4)


def test_fbi_trains_the_embedding_of_a_text_cnn():
    model = _text_cnn()
    wrapped = AttributionRegularizedModel(model, FBILoss(lam=0.5))
    wrapped.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model.get_layer("embedding").embeddings.numpy().copy()
    wrapped.fit(_ids(4), np.array([0, 1, 0, 1]), batch_size=4, verbose=0)
    assert np.abs(model.get_layer("embedding").embeddings.numpy() - before).max() > 0


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
