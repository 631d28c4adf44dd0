"""Annotation masks in `fit`: the masked penalties, their steps, their errors.

Every value and step is checked against the test's own computation: a
`tf.GradientTape` pair written here from the paper's formula (RRR, the masked
gradient, expected gradients), or a hand-written epsilon-LRP pass on an MLP
(the masked relevance), never the library's own functions.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar

CLASSES = 3


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


def _text(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(12, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(CLASSES),
        ]
    )


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 2)).astype("float32")
    y = rng.integers(0, CLASSES, n)
    mask = (rng.random((n, 6, 6)) < 0.3).astype("float32")
    mask[0] = 0.0  # an unannotated example
    return x, y, mask


def _tokens(n=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 12, (n, 5)).astype("int32")
    ids[:, -1] = 0  # padding
    y = rng.integers(0, CLASSES, n)
    mask = (rng.random((n, 5)) < 0.5).astype("float32")
    return ids, y, mask


def _wrapped(base, regularizer, lr=1.0, **kwargs):
    model = kar.AttributionRegularizedModel(base, regularizer, **kwargs)
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _cross_entropy(y, logits):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), logits)
    )


def _own_step(base, x, y, penalty_fn, coefficient):
    """Penalty and SGD(1) weight change from the test's own tapes:
    `penalty_fn(x) -> (logits, per-sample penalty)`, total = CE + c * mean."""
    with tf.GradientTape() as tape:
        logits, per_sample = penalty_fn(x)
        penalty = tf.reduce_mean(per_sample)
        total = _cross_entropy(y, logits) + coefficient * penalty
    gradients = tape.gradient(total, base.trainable_weights)
    return float(penalty), [-tf.convert_to_tensor(g).numpy() for g in gradients]


def _library_step(model, base, x, y, mask):
    before = [w.numpy().copy() for w in base.trainable_weights]
    logs = model.train_on_batch(x, y, annotation_mask=mask, return_dict=True)
    after = [w.numpy() for w in base.trainable_weights]
    return logs, [b - a for a, b in zip(before, after, strict=True)]


def _assert_step(logs, key, change, penalty, expected):
    np.testing.assert_allclose(logs[key], penalty, rtol=1e-4)
    for got, want in zip(change, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-6)


def _input_gradient(base, x, score):
    """d score(logits) / dx and the logits, by the test's own tape."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = base(x, training=True)
        scores = score(logits)
    return logits, tape.gradient(scores, x)


def _sum_log_p(logits):
    return tf.reduce_sum(tf.nn.log_softmax(logits), axis=-1)


def _true_logit(y):
    return lambda logits: tf.gather(logits, y, axis=-1, batch_dims=1)


def test_rrr_value_and_step_match_the_papers_formula_on_images():
    """RRR Eq. 1 (sum over masked inputs of (d sum_k log p_k / dx)^2, the
    mask broadcast over channels) against the test's own nested tapes."""
    x, y, mask = _images()
    base = _cnn()
    m = mask[..., None]

    def own(x):
        logits, g = _input_gradient(base, x, _sum_log_p)
        return logits, tf.reduce_sum(tf.square(m * g), axis=[1, 2, 3])

    penalty, expected = _own_step(base, x, y, own, 10.0)
    assert penalty > 0
    logs, change = _library_step(_wrapped(base, kar.RRRPenalty(10.0)), base, x, y, mask)
    _assert_step(logs, "rrr_penalty", change, penalty, expected)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_masked_gradient_value_and_step_match_own_tape(norm):
    """alpha * ||m * dS_c/dx|| (L1, or squared L2), S_c the true-class logit,
    against the test's own tapes."""
    x, y, mask = _images(seed=1)
    base = _cnn(1)
    m = mask[..., None]

    def own(x):
        logits, g = _input_gradient(base, x, _true_logit(y))
        values = tf.abs(m * g) if norm == "l1" else tf.square(m * g)
        return logits, tf.reduce_sum(values, axis=[1, 2, 3])

    penalty, expected = _own_step(base, x, y, own, 0.5)
    logs, change = _library_step(
        _wrapped(base, kar.MaskedGradientPenalty(0.5, norm=norm)), base, x, y, mask
    )
    _assert_step(logs, "masked_gradient_penalty", change, penalty, expected)


def _own_lrp(base, x, y, eps):
    """Epsilon-LRP at the input of Flatten-Dense(relu)-Dense, written out:
    R_out = S_c onehot(c); R_in = a * W^T (R / (z + eps sign z))."""
    dense1, dense2 = base.layers[1], base.layers[2]
    a0 = tf.reshape(x, [x.shape[0], -1])
    z1 = a0 @ dense1.kernel + dense1.bias
    a1 = tf.nn.relu(z1)
    z2 = a1 @ dense2.kernel + dense2.bias

    def stable(z):
        return z + eps * tf.where(z >= 0, 1.0, -1.0)

    r2 = tf.one_hot(y, CLASSES) * z2
    r1 = a1 * ((r2 / stable(z2)) @ tf.transpose(dense2.kernel))
    r0 = a0 * ((r1 / stable(z1)) @ tf.transpose(dense1.kernel))
    return z2, tf.reshape(r0, x.shape)


def test_masked_relevance_value_and_step_match_a_hand_written_lrp_pass():
    """alpha * ||m * R(x)||_1 with R the epsilon-LRP relevance of the true
    logit, against an LRP pass written out in the test for an MLP."""
    x, y, mask = _images(seed=2)
    base = _mlp(2)
    m = mask[..., None]

    def own(x):
        logits, relevance = _own_lrp(base, tf.constant(x), y, 0.01)
        return logits, tf.reduce_sum(tf.abs(m * relevance), axis=[1, 2, 3])

    penalty, expected = _own_step(base, x, y, own, 0.3)
    logs, change = _library_step(
        _wrapped(base, kar.MaskedRelevancePenalty(0.3, epsilon=0.01)), base, x, y, mask
    )
    _assert_step(logs, "masked_relevance_penalty", change, penalty, expected)


class _FixedReferences(kar.ExpectedGradientsPenalty):
    """Fixed references and t, so the test can compute the same draw."""

    reference = None
    t = None

    def references(self, x):
        return tf.constant(self.reference), tf.constant(self.t)


def test_expected_gradients_value_and_step_match_own_tape():
    """alpha * ||m * (x - x') dS_c/dx (x' + t (x - x'))||_1 for given x', t,
    against the test's own tapes."""
    x, y, mask = _images(seed=3)
    base = _cnn(3)
    rng = np.random.default_rng(4)
    reference = x[rng.permutation(len(x))]
    t = rng.random((len(x), 1, 1, 1)).astype("float32")
    m = mask[..., None]

    def own(x):
        logits = base(x, training=True)
        point = tf.constant(reference + t * (x - reference))
        _, g = _input_gradient(base, point, _true_logit(y))
        eg = (x - reference) * g
        return logits, tf.reduce_sum(tf.abs(m * eg), axis=[1, 2, 3])

    penalty, expected = _own_step(base, x, y, own, 2.0)
    regularizer = _FixedReferences(2.0)
    regularizer.reference, regularizer.t = reference, t
    logs, change = _library_step(_wrapped(base, regularizer), base, x, y, mask)
    _assert_step(logs, "expected_gradients_penalty", change, penalty, expected)


def test_expected_gradients_draws_batch_rows_and_t_in_the_unit_interval():
    """The default references are a permutation of the batch's rows (checked
    row by row) and t lies in [0, 1) with one value per example."""
    x = tf.constant(np.arange(24, dtype="float32").reshape(6, 2, 2))
    reference, t = kar.ExpectedGradientsPenalty().references(x)
    rows = sorted(tuple(r.ravel()) for r in reference.numpy())
    assert rows == sorted(tuple(r.ravel()) for r in x.numpy())
    assert t.shape == (6, 1, 1)
    assert np.all((t.numpy() >= 0) & (t.numpy() < 1))


def test_rrr_on_token_ids_is_taken_at_the_embedding_output():
    """For token ids the gradient is taken at e = Embedding(ids), the mask
    one value per token over the embedding axis, padding (id 0) at zero:
    the test's own tape at e."""
    ids, y, mask = _tokens()
    base = _text()
    embedding, rest = base.layers[0], base.layers[1:]

    def own(ids):
        e = embedding(ids)
        with tf.GradientTape() as tape:
            tape.watch(e)
            h = e
            for layer in rest:
                h = layer(h, training=True)
            scores = _sum_log_p(h)
        g = tape.gradient(scores, e) * tf.cast(ids != 0, "float32")[..., None]
        return h, tf.reduce_sum(tf.square(mask[..., None] * g), axis=[1, 2])

    penalty, expected = _own_step(base, ids, y, own, 5.0)
    assert penalty > 0
    logs, change = _library_step(
        _wrapped(base, kar.RRRPenalty(5.0)), base, ids, y, mask
    )
    _assert_step(logs, "rrr_penalty", change, penalty, expected)


def test_a_zero_mask_gives_exactly_the_plain_step():
    """All-zero masks: the weights after three steps equal a plain Keras
    model's trained from the same weights on the same batches."""
    x, y, _ = _images(seed=5)
    plain = _cnn(5)
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    base = _cnn(5)
    model = _wrapped(base, kar.RRRPenalty(100.0), lr=0.1)
    for _ in range(3):
        plain.train_on_batch(x, y)
        logs = model.train_on_batch(
            x, y, annotation_mask=np.zeros((8, 6, 6)), return_dict=True
        )
        assert logs["rrr_penalty"] == 0.0
    for a, b in zip(plain.get_weights(), base.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_a_full_mask_on_the_masked_gradient_equals_l1_gradient_penalty(norm):
    """A mask of ones: the same penalty and the same weights after two steps
    as `L1GradientPenalty(alpha, norm)` from the same start."""
    x, y, _ = _images(seed=6)
    ones = np.ones((8, 6, 6, 1), "float32")
    reference = _cnn(6)
    full = _wrapped(reference, kar.L1GradientPenalty(0.2, norm=norm), lr=0.1)
    base = _cnn(6)
    masked = _wrapped(base, kar.MaskedGradientPenalty(0.2, norm=norm), lr=0.1)
    for _ in range(2):
        a = full.train_on_batch(x, y, return_dict=True)
        b = masked.train_on_batch(x, y, annotation_mask=ones, return_dict=True)
        np.testing.assert_allclose(
            b["masked_gradient_penalty"], a["attribution_penalty"], rtol=1e-6
        )
    for a, b in zip(reference.get_weights(), base.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_masks_follow_sample_weights_and_tf_data_like_arrays():
    """Penalty weighted per example like Keras losses (the mean of w_b * P_b,
    P_b from the test's own tape), and the same step from a tf.data pipeline
    of (x, kar.annotate(y, m), w) as from arrays."""
    x, y, mask = _images(seed=7)
    w = np.linspace(0.5, 2.0, 8).astype("float32")
    base = _cnn(7)
    _, g = _input_gradient(base, x, _true_logit(y))
    per_sample = np.abs(mask[..., None] * g.numpy()).sum(axis=(1, 2, 3))
    model = _wrapped(base, kar.MaskedGradientPenalty(0.0))
    logs = model.test_on_batch(
        x, y, annotation_mask=mask, sample_weight=w, return_dict=True
    )
    np.testing.assert_allclose(
        logs["masked_gradient_penalty"], np.mean(w * per_sample), rtol=1e-5
    )
    arrays_base, data_base = _cnn(8), _cnn(8)
    _wrapped(arrays_base, kar.MaskedGradientPenalty(0.5), lr=0.1).fit(
        x,
        y,
        annotation_mask=mask,
        sample_weight=w,
        batch_size=4,
        shuffle=False,
        verbose=0,
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, kar.annotate(y, mask), w))
    _wrapped(data_base, kar.MaskedGradientPenalty(0.5), lr=0.1).fit(
        dataset.batch(4), verbose=0
    )
    for a, b in zip(arrays_base.get_weights(), data_base.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_validation_and_evaluate_with_and_without_masks():
    """Validation data with masks logs the penalty; without, the masked
    penalty logs NaN and the loss is the task loss (the test's own CE)."""
    x, y, mask = _images(seed=9)
    base = _cnn(9)
    model = _wrapped(base, kar.RRRPenalty(1.0), lr=0.01)
    history = model.fit(
        x,
        y,
        annotation_mask=mask,
        validation_data=(x, kar.annotate(y, mask)),
        epochs=2,
        verbose=0,
    ).history
    assert np.all(np.isfinite(history["val_rrr_penalty"]))
    unmasked = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isnan(unmasked["rrr_penalty"])
    np.testing.assert_allclose(
        unmasked["loss"], float(_cross_entropy(y, base(x))), rtol=1e-5
    )
    masked = model.evaluate(x, y, annotation_mask=mask, verbose=0, return_dict=True)
    assert masked["rrr_penalty"] > 0 and masked["loss"] > unmasked["loss"]
    history = model.fit(
        x, y, annotation_mask=mask, validation_data=(x, y), epochs=1, verbose=0
    ).history
    assert np.isnan(history["val_rrr_penalty"][0])


def test_lazy_delayed_save_and_predict_with_masks(tmp_path):
    """every=k, DelayedActivation and `.keras` round trips keep working with
    masks; `predict` takes x alone and equals the base model."""
    x, y, mask = _images(seed=10)
    base = _cnn(10)
    model = _wrapped(base, kar.MaskedRelevancePenalty(0.1), lr=0.01, every=2)
    history = model.fit(
        x,
        y,
        annotation_mask=mask,
        validation_data=(x, kar.annotate(y, mask)),
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[kar.DelayedActivation("val_loss", threshold=1e9, mode="min")],
    ).history
    assert np.isnan(history["masked_relevance_penalty"][0])  # held off
    assert np.isfinite(history["masked_relevance_penalty"][-1])
    path = tmp_path / "masked.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.regularizer, kar.MaskedRelevancePenalty)
    assert loaded.regularizer.get_config() == {
        "alpha": 0.1,
        "epsilon": 0.01,
        "norm": "l1",
    }
    np.testing.assert_allclose(loaded.predict(x, verbose=0), base(x), rtol=1e-5)
    loaded.fit(x, y, annotation_mask=mask, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "regularizer",
    [
        kar.RRRPenalty(3.0),
        kar.MaskedGradientPenalty(0.5, norm="l2"),
        kar.MaskedRelevancePenalty(0.2, epsilon=0.05, norm="l2"),
        kar.ExpectedGradientsPenalty(1.5),
    ],
)
def test_masked_penalties_serialise(regularizer):
    """Each penalty round-trips through Keras serialisation with its config."""
    config = keras.saving.serialize_keras_object(regularizer)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(regularizer)
    assert again.get_config() == regularizer.get_config()


@pytest.mark.slow  # two virtual devices: several seconds on 2 cores
def test_mirrored_strategy_with_masks_matches_one_device():
    """Two logical CPUs: the masked step's weights equal one device's."""
    from _subprocess import run_json

    script = """
import json, numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_attreg as kar

def run(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        base = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3,
            activation="tanh"), keras.layers.Flatten(), keras.layers.Dense(3)])
        model = kar.AttributionRegularizedModel(base, kar.RRRPenalty(5.0))
        model.compile(optimizer=keras.optimizers.SGD(1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 8)
    m = (rng.random((8, 6, 6)) < 0.4).astype("float32")
    logs = model.fit(x, y, annotation_mask=m, batch_size=8, shuffle=False,
                     verbose=0).history
    return logs["rrr_penalty"][0], base.get_weights()

p1, w1 = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
p2, w2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"p1": p1, "p2": p2,
    "diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))}))
"""
    result = run_json(script)
    np.testing.assert_allclose(result["p2"], result["p1"], rtol=1e-5)
    assert result["diff"] < 1e-5


def test_mixed_precision_masked_step_is_finite_and_close_to_float32():
    """Under mixed_float16 the RRR penalty of one batch agrees with float32
    within 1% (the test's float32 model from the same weights)."""
    x, y, mask = _images(seed=11)
    base32 = _cnn(11)
    logs32 = _wrapped(base32, kar.RRRPenalty(1.0)).test_on_batch(
        x, y, annotation_mask=mask, return_dict=True
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        base16 = _cnn(11)
        base16.set_weights(base32.get_weights())
        model16 = _wrapped(base16, kar.RRRPenalty(1.0))
        logs16 = model16.test_on_batch(x, y, annotation_mask=mask, return_dict=True)
        model16.train_on_batch(x, y, annotation_mask=mask)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(logs16["rrr_penalty"], logs32["rrr_penalty"], rtol=1e-2)
    assert all(np.all(np.isfinite(w)) for w in base16.get_weights())


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.zeros((8, 5, 6)), "shape"),
        (np.zeros((8, 6, 6, 3)), "shape"),
        (np.full((8, 6, 6), 0.5), "0 .no constraint. or 1"),
        (np.full((8, 6, 6), np.nan), "0 .no constraint. or 1"),
        (np.full((8, 6, 6), np.inf), "0 .no constraint. or 1"),
        (np.full((8, 6, 6), "a"), "numeric or boolean"),
    ],
)
def test_bad_masks_raise_naming_the_argument(mask, match):
    """Wrong shapes, non-binary and non-finite masks: a ValueError naming
    `annotation_mask` and what was received, from arrays and from tf.data."""
    x, y, _ = _images()
    model = _wrapped(_cnn(), kar.RRRPenalty(1.0))
    with pytest.raises(ValueError, match=f"annotation_mask.*{match}"):
        model.fit(x, y, annotation_mask=mask, verbose=0)
    if mask.dtype.kind == "f":
        dataset = tf.data.Dataset.from_tensor_slices((x, kar.annotate(y, mask)))
        with pytest.raises(ValueError, match="annotation_mask"):
            model.fit(dataset.batch(4), verbose=0)


def test_masks_for_a_regularizer_that_takes_none_and_none_for_one_that_needs_them():
    """Masks given to `L1GradientPenalty` and a masked penalty without masks:
    ValueErrors naming the argument, from arrays and tf.data."""
    x, y, mask = _images()
    plain = _wrapped(_cnn(), kar.L1GradientPenalty(0.1))
    with pytest.raises(ValueError, match="annotation_mask.*takes no annotation"):
        plain.fit(x, y, annotation_mask=mask, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, kar.annotate(y, mask))).batch(4)
    with pytest.raises(ValueError, match="takes no annotation"):
        plain.fit(dataset, verbose=0)
    masked = _wrapped(_cnn(), kar.RRRPenalty(1.0))
    with pytest.raises(ValueError, match="needs annotation masks"):
        masked.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="annotation_mask.*array data"):
        masked.fit(dataset, annotation_mask=mask, verbose=0)
    with pytest.raises(ValueError, match="already carries"):
        masked.fit(x, kar.annotate(y, mask), annotation_mask=mask, verbose=0)
    with pytest.raises(ValueError, match="keys"):
        masked.fit(x, {"labels": y, "annotation_mask": mask}, verbose=0)


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        (kar.RRRPenalty, {"lam": -1}, "lam"),
        (kar.MaskedGradientPenalty, {"norm": "l3"}, "norm"),
        (kar.MaskedRelevancePenalty, {"epsilon": 0.0}, "epsilon"),
        (kar.ExpectedGradientsPenalty, {"alpha": float("nan")}, "alpha"),
    ],
)
def test_bad_penalty_arguments_raise(kind, kwargs, match):
    with pytest.raises(ValueError, match=f"argument {match}.*Received"):
        kind(**kwargs)


def test_every_masked_penalty_on_token_ids_takes_one_value_per_token():
    """Token-id models: a mask of ones on the masked gradient gives
    `L1GradientPenalty`'s value (the embedding-level L1 norm, padding out);
    the masked relevance and expected-gradients penalties are zero under a
    zero mask and grow when tokens are masked (the penalty is a sum over
    masked tokens of non-negative terms: masking more never lowers it)."""
    ids, y, _ = _tokens()
    base = _text()
    full = _wrapped(base, kar.L1GradientPenalty(1.0)).test_on_batch(
        ids, y, return_dict=True
    )
    ones = np.ones(ids.shape, "float32")
    masked = _wrapped(base, kar.MaskedGradientPenalty(1.0)).test_on_batch(
        ids, y, annotation_mask=ones, return_dict=True
    )
    np.testing.assert_allclose(
        masked["masked_gradient_penalty"], full["attribution_penalty"], rtol=1e-6
    )
    for regularizer in (
        kar.MaskedRelevancePenalty(1.0),
        kar.ExpectedGradientsPenalty(1.0),
    ):
        model = _wrapped(base, regularizer)
        values = [
            model.test_on_batch(ids, y, annotation_mask=m, return_dict=True)[
                regularizer.name
            ]
            for m in (np.zeros(ids.shape), np.eye(5)[np.arange(6) % 4], ones)
        ]
        assert values[0] == 0.0 and values[1] > 0 and values[2] > 0
        if isinstance(regularizer, kar.MaskedRelevancePenalty):  # deterministic
            assert values[1] < values[2]


def test_export_serves_x_alone_after_training_with_masks(tmp_path):
    """The exported SavedModel's endpoint takes x alone and returns the base
    model's outputs (compared with the base model on the same x)."""
    x, y, mask = _images(seed=12)
    base = _cnn(12)
    model = _wrapped(base, kar.RRRPenalty(1.0), lr=0.01)
    model.fit(x, y, annotation_mask=mask, epochs=1, verbose=0)
    model.export(str(tmp_path / "serving"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "serving"))
    np.testing.assert_allclose(served.serve(x), base(x), rtol=1e-5, atol=1e-6)


def test_masks_through_validation_split_generators_and_pydataset():
    """The annotated y travels through `validation_split` (logging the
    validation penalty), a generator and a `keras.utils.PyDataset`; the
    PyDataset's evaluated penalty equals the mean of the test's own
    per-batch values (masked L1 of dS_c/dx by its own tape)."""
    x, y, mask = _images(n=16, seed=13)
    base = _cnn(13)
    model = _wrapped(base, kar.MaskedGradientPenalty(1.0), lr=0.01)
    history = model.fit(
        x, y, annotation_mask=mask, validation_split=0.25, batch_size=4, verbose=0
    ).history
    assert np.isfinite(history["val_masked_gradient_penalty"][0])

    def batches():
        for i in range(0, 16, 8):
            yield x[i : i + 8], kar.annotate(y[i : i + 8], mask[i : i + 8])

    model.fit(batches(), verbose=0)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return next(b for j, b in enumerate(batches()) if j == i)

    logs = model.evaluate(Batches(), verbose=0, return_dict=True)
    _, g = _input_gradient(base, x, _true_logit(y))
    per_sample = np.abs(mask[..., None] * g.numpy()).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(
        logs["masked_gradient_penalty"], per_sample.mean(), rtol=1e-5
    )
