"""FBILoss: Eq. 3 and 4, finite-difference gradients, the switch, errors, logs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from _finite_differences import central_difference

import keras_attreg as kar
from keras_attreg._logits import split_logits
from keras_attreg.callbacks import DelayedActivation
from keras_attreg.relevance import relevance_pass
from keras_attreg.training import AttributionRegularizedModel
from keras_attreg.training.fbi import FBILoss

L = keras.layers


def _model(dtype="float32", seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 1), dtype=dtype),
            L.Conv2D(3, 3, dtype=dtype),
            L.BatchNormalization(dtype=dtype),
            L.ReLU(dtype=dtype),
            L.MaxPooling2D(2, dtype=dtype),
            L.Flatten(dtype=dtype),
            L.Dense(4, activation="relu", dtype=dtype),
            L.Dense(3, dtype=dtype),
        ]
    )


def _data(n=8, seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(n, 6, 6, 1)), dtype), rng.integers(0, 3, n)


def test_penalty_is_the_mean_l1_over_the_k_layers():
    model = _model()
    x, y = _data()
    targets = tf.constant(y, tf.int32)
    _, penalty = FBILoss(lam=0.5, epsilon=0.05)(split_logits(model), x, targets, False)
    result = relevance_pass(split_logits(model), x, targets, 0.05)
    per_layer = [
        np.abs(a.numpy() - r.numpy()).reshape(len(x), -1).mean(axis=1)
        for a, r in zip(result.forward_inputs, result.backward_maps, strict=True)
    ]
    assert len(per_layer) == 3  # K = conv (BN folded), dense, dense
    np.testing.assert_allclose(penalty.numpy(), np.mean(per_layer, axis=0), rtol=1e-6)


def _numpy_fbi(x, weights, y, eps, reduction, pooling, normalize, start):
    """The test's own FBI loss of Input(4, 2) -> MaxPooling1D(2) -> Flatten ->
    Dense(3, relu) -> Dense(2), written out in NumPy: the forward pass, the
    epsilon rule a-_i = a+_{i-1} * W_i^T (R_i / (z_i + eps sign z_i)),
    winner-takes-all through the max pooling, Eq. 3 per sample."""
    w1, b1, w2, b2 = weights
    pairs = x.reshape(len(x), 2, 2, 2)  # (batch, window, position in window, ch)
    pooled = pairs.max(axis=2)
    a1 = pooled.reshape(len(x), -1)
    z1 = a1 @ w1 + b1
    h = np.maximum(z1, 0)
    z2 = h @ w2 + b2
    rows = np.arange(len(x))
    r2 = z2.copy() if start == "all" else np.zeros_like(z2)
    if start != "all":
        r2[rows, y] = z2[rows, y]

    def back(a, w, z, r):
        return a * ((r / (z + eps * np.where(z >= 0, 1.0, -1.0))) @ w.T)

    r_h = back(h, w2, z2, r2)  # relevance of Dense 2's input
    r_a1 = back(a1, w1, z1, r_h)  # ReLU passes relevance on unchanged
    winner = pairs == pooled[:, :, None, :]
    r_x = (winner * r_a1.reshape(len(x), 2, 1, 2)).reshape(x.shape)
    maps = [(a1, r_a1), (h, r_h)]
    if pooling:
        maps.insert(0, (x, r_x))
    reduce = np.sum if reduction == "sum" else np.mean
    per_layer = []
    for forward, backward in maps:
        forward = forward.reshape(len(x), -1)
        backward = backward.reshape(len(x), -1)
        if normalize:
            forward = forward / np.abs(forward).sum(1, keepdims=True)
            backward = backward / np.abs(backward).sum(1, keepdims=True)
        per_layer.append(reduce(np.abs(forward - backward), axis=1))
    return np.mean(per_layer, axis=0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reduction": "sum"},
        {"layers": "kernel_and_pooling"},
        {"normalize": True},
        {"start": "all"},
        {"reduction": "sum", "layers": "kernel_and_pooling", "start": "all"},
    ],
)
def test_each_reading_matches_a_numpy_relevance_pass(options):
    """Oracle: `_numpy_fbi`, the whole pass and Eq. 3 by hand in NumPy. Dropping
    the pooling term, summing instead of averaging, skipping the normalisation
    or starting from the true class alone changes the value."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((4, 2), dtype="float64"),
            L.MaxPooling1D(2, dtype="float64"),
            L.Flatten(dtype="float64"),
            L.Dense(3, activation="relu", bias_initializer="ones", dtype="float64"),
            L.Dense(2, bias_initializer="ones", dtype="float64"),
        ]
    )
    x = np.random.default_rng(4).normal(size=(5, 4, 2))
    y = np.array([0, 1, 1, 0, 1])
    _, penalty = FBILoss(lam=0.5, epsilon=0.05, **options)(
        split_logits(model), tf.constant(x), tf.constant(y, tf.int32), False
    )
    expected = _numpy_fbi(
        x,
        [w.numpy() for w in model.weights],
        y,
        0.05,
        options.get("reduction", "mean"),
        options.get("layers") == "kernel_and_pooling",
        options.get("normalize", False),
        options.get("start", "target"),
    )
    np.testing.assert_allclose(penalty.numpy(), expected, rtol=1e-9)
    default = _numpy_fbi(
        x, [w.numpy() for w in model.weights], y, 0.05, "mean", False, False, "target"
    )
    if options:
        assert not np.allclose(expected, default, rtol=1e-3)


def test_weight_gradient_matches_finite_differences_float64():
    model = _model(dtype="float64")
    x, y = _data(dtype="float64")
    targets = tf.constant(y, tf.int32)
    regularizer = FBILoss(lam=0.4, epsilon=0.05)
    task = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    split = split_logits(model)

    def total_loss():
        outputs, penalty = regularizer(split, x, targets, True)
        return regularizer.combine(task(y, outputs), tf.reduce_mean(penalty), 1.0)

    with tf.GradientTape() as tape:
        loss = total_loss()
    gradients = tape.gradient(loss, model.trainable_variables)
    rng = np.random.default_rng(2)
    for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
        size = int(np.prod(variable.shape))
        for flat in rng.choice(size, size=min(3, size), replace=False):
            index = np.unravel_index(flat, variable.shape)
            numeric = central_difference(total_loss, variable, index)
            np.testing.assert_allclose(
                gradient.numpy()[index],
                numeric,
                rtol=1e-5,
                atol=1e-8,
                err_msg=f"{variable.path}{index}",
            )
    # The FBI term contributes: the gradient differs from the task gradient.
    with tf.GradientTape() as tape:
        plain = task(y, model(x, training=True))
    plain_gradients = tape.gradient(plain, model.trainable_variables)
    kernel = 0
    assert np.abs(gradients[kernel] - 0.6 * plain_gradients[kernel]).max() > 1e-3


def test_lam_zero_gives_exactly_the_task_loss_and_gradient():
    model = _model()
    x, y = _data()
    task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    regularizer = FBILoss(lam=0.0)
    with tf.GradientTape(persistent=True) as tape:
        outputs, penalty = regularizer(split_logits(model), x, tf.constant(y), True)
        task_loss = task(y, outputs)
        total = regularizer.combine(task_loss, tf.reduce_mean(penalty), 1.0)
    assert float(tf.reduce_mean(penalty)) > 0
    assert total.numpy() == task_loss.numpy()
    for ours, plain in zip(
        tape.gradient(total, model.trainable_variables),
        tape.gradient(task_loss, model.trainable_variables),
        strict=True,
    ):
        np.testing.assert_array_equal(ours.numpy(), plain.numpy())


def test_combine_is_eq4_with_the_switch():
    regularizer = FBILoss(lam=0.25)
    task, penalty = tf.constant(2.0), tf.constant(6.0)
    assert float(regularizer.combine(task, penalty, 1.0)) == pytest.approx(3.0)
    assert float(regularizer.combine(task, penalty, 0.5)) == pytest.approx(2.5)
    assert float(regularizer.combine(task, penalty, 0.0)) == 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lam": -0.1}, "lam.*Received: lam=-0.1"),
        ({"lam": 1.5}, "lam.*Received: lam=1.5"),
        ({"lam": float("nan")}, "lam.*Received: lam=nan"),
        ({"epsilon": 0.0}, "eps.*Received: epsilon=0.0"),
        ({"reduction": "max"}, "reduction.*Received: reduction='max'"),
        ({"layers": "all"}, "layers.*Received: layers='all'"),
        ({"normalize": 1}, "normalize.*Received: normalize=1"),
        ({"start": "true"}, "start.*Received: start='true'"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FBILoss(**kwargs)


def test_model_without_trainable_conv_or_dense_raises():
    pooled = keras.Sequential([keras.Input((4, 4, 3)), L.GlobalAveragePooling2D()])
    with pytest.raises(
        ValueError, match="trainable layer with a kernel.*counted layers \\[\\]"
    ):
        FBILoss()(
            split_logits(pooled), tf.ones((2, 4, 4, 3)), tf.constant([0, 1]), True
        )
    frozen = keras.Sequential([keras.Input((4,)), L.Dense(2, name="frozen")])
    frozen.trainable = False
    with pytest.raises(ValueError, match="\\['frozen'\\]"):
        FBILoss()(split_logits(frozen), tf.ones((2, 4)), tf.constant([0, 1]), True)


def test_config_round_trip():
    regularizer = FBILoss(lam=0.01, epsilon=0.2)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(regularizer)
    )
    assert isinstance(restored, FBILoss)
    assert restored.get_config() == {
        "lam": 0.01,
        "epsilon": 0.2,
        "reduction": "mean",
        "layers": "kernel",
        "normalize": False,
        "start": "target",
    }


def _fit(regularizer=None, callbacks=(), epochs=2):
    """Trains the same model from the same start; returns weights per epoch."""
    base = _model(seed=3)
    model = (
        base if regularizer is None else AttributionRegularizedModel(base, regularizer)
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = _data(n=32, seed=4)
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(
            [w.numpy().copy() for w in base.weights]
        )
    )
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        validation_data=(x[:16], y[:16]),
        callbacks=[*callbacks, record],
    )
    return snapshots, history.history


def test_fbi_loss_is_logged_in_train_and_validation():
    _, logs = _fit(FBILoss(lam=0.1), epochs=1)
    assert logs["fbi_loss"][0] > 0
    assert logs["val_fbi_loss"][0] > 0


def test_lam_zero_training_is_bit_identical_to_plain_training():
    plain, _ = _fit()
    zero, _ = _fit(FBILoss(lam=0.0))
    for a, b in zip(plain[-1], zero[-1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_delayed_activation_keeps_fbi_off_until_threshold_then_on():
    plain, _ = _fit()
    never, _ = _fit(FBILoss(lam=0.5), [DelayedActivation("val_accuracy", 1.5)])
    for a, b in zip(plain[-1], never[-1], strict=True):
        np.testing.assert_array_equal(a, b)
    # Threshold passed after epoch 0: off during epoch 0, on from epoch 1.
    delayed, _ = _fit(FBILoss(lam=0.5), [DelayedActivation("val_accuracy", -1.0)])
    for a, b in zip(plain[0], delayed[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (
        max(np.abs(a - b).max() for a, b in zip(plain[1], delayed[1], strict=True))
        > 1e-4
    )


def test_wrapper_with_fbi_loss_survives_keras_save_and_load(tmp_path):
    model = AttributionRegularizedModel(_model(), FBILoss(lam=0.02, epsilon=0.3))
    x, _ = _data()
    path = tmp_path / "fbi.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.regularizer.get_config()["lam"] == 0.02
    assert restored.regularizer.get_config()["epsilon"] == 0.3
    np.testing.assert_array_equal(
        restored.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_the_old_name_eps_still_works_for_one_release():
    """`eps` was renamed `epsilon` (Keras's name); the old keyword and old
    saved configs give the same objects and maps, with a DeprecationWarning.
    Oracle: the same call with `epsilon`."""
    with pytest.warns(DeprecationWarning, match="`eps` is deprecated"):
        old = FBILoss(lam=0.1, eps=0.2)
    assert old.get_config() == FBILoss(lam=0.1, epsilon=0.2).get_config()
    with pytest.warns(DeprecationWarning):
        restored = FBILoss.from_config({"lam": 0.1, "eps": 0.3})
    assert restored.epsilon == 0.3
    with pytest.warns(DeprecationWarning):
        masked = kar.MaskedRelevancePenalty(eps=0.05)
    assert masked.epsilon == 0.05
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    with pytest.warns(DeprecationWarning):
        maps = kar.attributions.epsilon_lrp(model, x, [0, 1], eps=0.5)
    np.testing.assert_array_equal(
        maps, kar.attributions.epsilon_lrp(model, x, [0, 1], epsilon=0.5)
    )
    with pytest.raises(ValueError, match="Received: eps=0.5, epsilon=0.1"):
        kar.attributions.epsilon_lrp(model, x, [0, 1], epsilon=0.1, eps=0.5)
