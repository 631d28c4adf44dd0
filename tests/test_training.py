"""AttributionRegularizedModel + L1GradientPenalty + DelayedActivation."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from _finite_differences import central_difference
from _subprocess import run_json

import keras_attreg as kar
from keras_attreg._logits import split_logits


def _cnn(dtype="float32", batchnorm=True, softmax=False, classes=3):
    layers = [
        keras.Input((6, 6, 2), dtype=dtype),
        keras.layers.Conv2D(3, 3, dtype=dtype),
    ]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    layers += [
        keras.layers.Activation("tanh", dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(
            classes, activation="softmax" if softmax else None, dtype=dtype
        ),
    ]
    return keras.Sequential(layers)


def _data(n=8, dtype="float32", classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype(dtype), rng.integers(0, classes, n)


def _logit_fn(base):
    """Pre-softmax logits computed by hand: the base model minus its softmax."""
    last = base.layers[-1]
    trunk = keras.Model(base.inputs[0], last.input)

    def logits(x):
        return np.asarray(trunk(x, training=False)) @ np.asarray(
            last.kernel
        ) + np.asarray(last.bias)

    return logits


def _fd_input_gradient(logits, x, targets, h=1e-6):
    """Central finite differences of S_c(x) w.r.t. every input element."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        b = index[0]
        grad[index] = (logits(plus)[b, targets[b]] - logits(minus)[b, targets[b]]) / (
            2 * h
        )
    return grad


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_penalty_matches_finite_differences_of_the_logit(norm):
    """Per-sample penalty = ||dS_c/dx|| with S_c the *pre-softmax* logit."""
    base = _cnn("float64", batchnorm=False, softmax=True)
    x, y = _data(3, "float64")
    penalty = kar.L1GradientPenalty(alpha=0.5, norm=norm)
    split = split_logits(base)
    outputs, per_sample = penalty(
        split, tf.constant(x), tf.constant(y, tf.int32), False
    )
    grad = _fd_input_gradient(_logit_fn(base), x, y)
    expected = (
        np.abs(grad).sum(axis=(1, 2, 3))
        if norm == "l1"
        else np.square(grad).sum(axis=(1, 2, 3))
    )
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(outputs.numpy(), base(x).numpy(), rtol=1e-12)


def test_weight_gradient_of_total_loss_matches_finite_differences():
    """Double backpropagation: d(task + alpha*penalty)/dW vs central differences."""
    base = _cnn("float64", batchnorm=False)
    x, y = _data(4, "float64")
    alpha = 0.3
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(alpha))
    split = model._split

    def total_loss():
        outputs, per_sample = model.regularizer(
            split, tf.constant(x), tf.constant(y), True
        )
        task = tf.nn.sparse_softmax_cross_entropy_with_logits(y, outputs)
        return tf.reduce_mean(task) + alpha * tf.reduce_mean(per_sample)

    with tf.GradientTape() as tape:
        loss = total_loss()
    kernel = base.layers[0].kernel
    dense = base.layers[-1].kernel
    grads = tape.gradient(loss, [kernel, dense])
    rng = np.random.default_rng(1)
    for variable, grad in zip([kernel, dense], grads, strict=True):
        for _ in range(6):
            index = tuple(rng.integers(0, s) for s in variable.shape)
            np.testing.assert_allclose(
                grad.numpy()[index],
                central_difference(total_loss, variable, index),
                rtol=1e-5,
                atol=1e-9,
            )


def test_penalty_term_changes_the_weight_gradient():
    """Sanity of the previous test's power: the penalty really moves the gradient."""
    base = _cnn("float64", batchnorm=False)
    x, y = _data(4, "float64")
    split = split_logits(base)
    penalty = kar.L1GradientPenalty(1.0)
    with tf.GradientTape() as tape:
        _, per_sample = penalty(split, tf.constant(x), tf.constant(y), True)
        value = tf.reduce_mean(per_sample)
    grad = tape.gradient(value, base.layers[0].kernel)
    assert np.abs(grad.numpy()).max() > 1e-3


def _compiled(base, alpha=1e-2, **kwargs):
    model = kar.AttributionRegularizedModel(
        base, kar.L1GradientPenalty(alpha), **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_alpha_zero_is_bit_for_bit_the_plain_step():
    x, y = _data(16)
    keras.utils.set_random_seed(3)
    plain = _cnn()
    keras.utils.set_random_seed(3)
    wrapped_base = _cnn()
    plain.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model = _compiled(wrapped_base, alpha=0.0)
    for _ in range(3):
        plain.train_on_batch(x, y)
        model.train_on_batch(x, y)
    for a, b in zip(plain.get_weights(), wrapped_base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_evaluate_reports_the_penalty_of_the_batch():
    """`evaluate` logs the mean per-sample L1 norm, checked by hand."""
    x, y = _data(10)
    base = _cnn(softmax=True)
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(0.1))
    model.compile(loss="sparse_categorical_crossentropy")
    logs = model.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    logits = _logit_fn(base)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        trunk = keras.Model(base.inputs[0], base.layers[-1].input)
        z = tf.matmul(trunk(xt), base.layers[-1].kernel) + base.layers[-1].bias
        s = tf.reduce_sum(tf.gather(z, y, batch_dims=1))
    expected = np.abs(tape.gradient(s, xt).numpy()).sum(axis=(1, 2, 3)).mean()
    np.testing.assert_allclose(logs["attribution_penalty"], expected, rtol=1e-5)
    probabilities = base(x).numpy()
    task = -np.log(probabilities[np.arange(10), y]).mean()
    np.testing.assert_allclose(logs["loss"], task + 0.1 * expected, rtol=1e-5)
    assert np.allclose(np.asarray(z), logits(x), atol=1e-5)


def test_one_hot_labels_sample_weights_and_tf_data_agree_with_sparse():
    x, y = _data(12)
    base = _cnn()
    model = _compiled(base)
    sparse = model.evaluate(x, y, verbose=0, return_dict=True)
    model_onehot = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(1e-2))
    model_onehot.compile(
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["categorical_accuracy"],
    )
    onehot = model_onehot.evaluate(x, np.eye(3)[y], verbose=0, return_dict=True)
    np.testing.assert_allclose(onehot["loss"], sparse["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        onehot["attribution_penalty"], sparse["attribution_penalty"], rtol=1e-6
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    from_ds = model.evaluate(dataset, verbose=0, return_dict=True)
    np.testing.assert_allclose(from_ds["loss"], sparse["loss"], rtol=1e-5)
    # A zero sample weight removes that sample from the loss and the penalty.
    weights = np.ones(12, "float32")
    weights[:6] = 0.0
    weighted = model.evaluate(
        x, y, sample_weight=weights, batch_size=12, verbose=0, return_dict=True
    )
    half = model.evaluate(x[6:], y[6:], batch_size=6, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        2 * weighted["attribution_penalty"], half["attribution_penalty"], rtol=1e-5
    )


def test_named_logits_layer_and_softmax_layer_use_the_logit():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Flatten()(inputs)
    z = keras.layers.Dense(3, name="scores")(h)
    probs = keras.layers.Softmax()(z)
    with_layer = keras.Model(inputs, probs)
    via_name = keras.Model(inputs, keras.layers.Lambda(tf.nn.softmax)(z))
    x, y = _data(4)
    split_a = split_logits(with_layer)
    split_b = split_logits(via_name, "scores")
    za, ya = split_a(x)
    zb, yb = split_b(x)
    logits = keras.Model(inputs, z)(x).numpy()
    np.testing.assert_allclose(za.numpy(), logits, rtol=1e-6)
    np.testing.assert_allclose(zb.numpy(), logits, rtol=1e-6)
    np.testing.assert_allclose(ya.numpy(), with_layer(x).numpy(), rtol=1e-6)


def test_unreachable_logit_raises_with_a_fix():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3, activation="softmax")

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 72)))

    model = Subclassed()
    model(np.zeros((1, 6, 6, 2), "float32"))
    with pytest.raises(ValueError, match="Return logits from `call"):
        kar.AttributionRegularizedModel(model, kar.L1GradientPenalty())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1}, "Received: alpha=-1"),
        ({"alpha": float("nan")}, "Received: alpha=nan"),
        ({"alpha": "big"}, "Received: alpha='big'"),
        ({"norm": "l3"}, "Received: norm='l3'"),
    ],
)
def test_bad_penalty_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kar.L1GradientPenalty(**kwargs)


def test_bad_data_raises_value_errors():
    model = _compiled(_cnn())
    x, y = _data(4)
    with pytest.raises(
        ValueError, match=r"rank 4 .*Received: x with shape \(4, 6, 6\)"
    ):
        model.fit(x[..., 0], y, verbose=0)
    with pytest.raises(ValueError, match=r"Received: y with out-of-range values \[7\]"):
        model.fit(x, np.array([0, 1, 2, 7]), verbose=0)
    with pytest.raises(ValueError, match="empty"):
        model.fit(
            tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(2), verbose=0
        )
    with pytest.raises(ValueError, match="no samples"):
        model.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="Received: regularizer="):
        kar.AttributionRegularizedModel(_cnn(), regularizer="l1")
    inputs = keras.Input((4,))
    two = keras.Model(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)]
    )
    with pytest.raises(ValueError, match="a model with 2 outputs"):
        kar.AttributionRegularizedModel(two, kar.L1GradientPenalty())


def test_labels_out_of_range_in_a_dataset_stop_training():
    model = _compiled(_cnn())
    x, _ = _data(4)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1, 2, 9]))).batch(4)
    match = r"Invalid value for argument y: expected class indices in \[0, 3\)\. "
    received = r"Received: y with out-of-range values \[9\]$"
    with pytest.raises(ValueError, match=match + received):
        model.fit(dataset, verbose=0)
    with pytest.raises(ValueError, match=match):
        model.evaluate(dataset, verbose=0)


def test_delayed_activation_switches_on_after_threshold_and_ramps():
    x, y = _data(16)
    model = _compiled(_cnn())
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            float(model.regularizer_weight.numpy())
        )
    )
    # val_accuracy is never > 1.01: the penalty stays off, training == plain step.
    never = kar.DelayedActivation("val_accuracy", threshold=1.01)
    model.fit(
        x, y, validation_data=(x, y), epochs=2, verbose=0, callbacks=[never, record]
    )
    assert seen == [0.0, 0.0]
    assert int(model.regularizer_start_epoch.numpy()) == -1
    seen.clear()
    # Threshold -1 passes at the end of epoch 0: on from epoch 1, ramped over 2.
    soon = kar.DelayedActivation("val_accuracy", threshold=-1.0, ramp_epochs=2)
    model.fit(
        x, y, validation_data=(x, y), epochs=4, verbose=0, callbacks=[soon, record]
    )
    np.testing.assert_allclose(seen, [0.0, 1 / 3, 2 / 3, 1.0])
    assert int(model.regularizer_start_epoch.numpy()) == 1


def test_delayed_activation_off_equals_plain_training():
    x, y = _data(16)
    keras.utils.set_random_seed(5)
    plain_base = _cnn()
    keras.utils.set_random_seed(5)
    base = _cnn()
    plain = _compiled(plain_base, alpha=0.0)
    model = _compiled(base, alpha=10.0)
    off = kar.DelayedActivation("accuracy", threshold=2.0)
    plain.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[off])
    for a, b in zip(plain_base.get_weights(), base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_delayed_activation_bad_arguments():
    with pytest.raises(ValueError, match="Received: mode='up'"):
        kar.DelayedActivation(mode="up")
    with pytest.raises(ValueError, match="Received: ramp_epochs=-1"):
        kar.DelayedActivation(ramp_epochs=-1)
    with pytest.raises(ValueError, match="Received: a model of type Sequential"):
        kar.DelayedActivation().set_model(_cnn())
    model = _compiled(_cnn())
    x, y = _data(4)
    with pytest.raises(ValueError, match="not in the epoch logs"):
        model.fit(x, y, verbose=0, callbacks=[kar.DelayedActivation("val_accuracy")])


def test_keras_save_load_round_trip_keeps_state_and_predictions(tmp_path):
    x, y = _data(16)
    model = _compiled(_cnn(softmax=False), alpha=0.05)
    callback = kar.DelayedActivation("accuracy", threshold=-1.0, ramp_epochs=3)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kar.AttributionRegularizedModel)
    assert loaded.regularizer.get_config() == {
        "alpha": 0.05,
        "norm": "l1",
        "inputs": None,
    }
    assert int(loaded.regularizer_start_epoch.numpy()) == 1
    np.testing.assert_allclose(loaded.regularizer_weight.numpy(), 0.25)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    # Training goes on from the saved optimizer state, identically.
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )


def test_export_serves_the_base_model_only(tmp_path):
    x, y = _data(8)
    model = kar.AttributionRegularizedModel(_cnn(softmax=True), kar.L1GradientPenalty())
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, verbose=0)
    model.export(str(tmp_path / "serving"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "serving"))
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, rtol=1e-5)
    signature = reloaded.signatures["serving_default"]
    assert len(signature.structured_outputs) == 1
    names = {v.name for v in reloaded.variables}
    assert not any("regularizer" in n for n in names)


def test_backup_and_restore_keeps_the_switch_decided_in_the_saved_epoch(tmp_path):
    """Listed after BackupAndRestore, DelayedActivation still decides first."""
    x, y = _data(16)
    model = _compiled(_cnn())

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("stop")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    delayed = kar.DelayedActivation("accuracy", threshold=-1.0, ramp_epochs=4)
    with pytest.raises(RuntimeError):
        model.fit(x, y, epochs=4, verbose=0, callbacks=[backup, delayed, Interrupt()])
    fresh = _compiled(_cnn())
    starts = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(
            (
                epoch,
                int(fresh.regularizer_start_epoch.numpy()),
                float(fresh.regularizer_weight.numpy()),
            )
        )
    )
    fresh.fit(x, y, epochs=3, verbose=0, callbacks=[backup, delayed, probe])
    # Epoch 0 passed the threshold and was backed up with the switch set: the
    # run resumes at epoch 1, on since epoch 1, ramp weight (1 - 1 + 1) / 5.
    assert [s[:2] for s in starts] == [(1, 1), (2, 1)]
    np.testing.assert_allclose([s[2] for s in starts], [0.2, 0.4], rtol=1e-6)


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    """Two logical CPUs, same global batch: loss, penalty and gradients equal."""
    script = textwrap.dedent(
        """
        import json, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras_attreg as kar

        def run(strategy):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                base = keras.Sequential([
                    keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3),
                    keras.layers.Activation("tanh"), keras.layers.Flatten(),
                    keras.layers.Dense(3)])
                model = kar.AttributionRegularizedModel(
                    base, kar.L1GradientPenalty(0.5))
                model.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            rng = np.random.default_rng(0)
            x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
            y = rng.integers(0, 3, 8)
            before = [w.copy() for w in base.get_weights()]
            logs = model.fit(x, y, batch_size=8, epochs=1, shuffle=False,
                             verbose=0).history
            # With SGD(lr=1) the weight change is minus the gradient.
            grads = [b - a for a, b in zip(base.get_weights(), before)]
            return logs, grads

        single_logs, single = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        mirrored_logs, mirrored = run(
            tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        print(json.dumps({
            "single": {k: v[0] for k, v in single_logs.items()},
            "mirrored": {k: v[0] for k, v in mirrored_logs.items()},
            "grad_diff": max(float(np.abs(a - b).max())
                             for a, b in zip(single, mirrored)),
            "grad_max": max(float(np.abs(a).max()) for a in single)}))
        """
    )
    result = run_json(script)
    for key in ("loss", "attribution_penalty"):
        np.testing.assert_allclose(
            result["mirrored"][key], result["single"][key], rtol=1e-5
        )
    assert result["grad_max"] > 1e-3
    assert result["grad_diff"] < 1e-5


@pytest.mark.slow
def test_mirrored_strategy_skips_or_raises_on_a_bad_replica_shard():
    """Two logical CPUs; NaN in one example, so only replica 1's shard fails.

    Oracle: the same model under the same strategy trained on the good batch
    alone (BatchNorm takes its statistics per replica, so one device differs).
    `nonfinite="skip"` on [bad batch, good batch] must end at those weights and
    BatchNorm statistics (the bad step left nothing on either replica) and
    count one skipped batch; `nonfinite="raise"` must raise FloatingPointError
    with the weights untouched.
    """
    script = textwrap.dedent(
        """
        import json, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras_attreg as kar

        def build(strategy, mode):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                base = keras.Sequential([
                    keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3),
                    keras.layers.BatchNormalization(), keras.layers.Flatten(),
                    keras.layers.Dense(3)])
                model = kar.AttributionRegularizedModel(
                    base, kar.L1GradientPenalty(0.5), nonfinite=mode)
                model.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            return base, model

        rng = np.random.default_rng(0)
        good = rng.normal(size=(8, 6, 6, 2)).astype("float32")
        bad = rng.normal(size=(8, 6, 6, 2)).astype("float32")
        bad[5, 0, 0, 0] = np.nan
        y = rng.integers(0, 3, 8)

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        base, model = build(mirrored, "skip")
        initial = [w.copy() for w in base.get_weights()]
        model.fit(good, y, batch_size=8, shuffle=False, verbose=0)
        reference = base.get_weights()

        base, model = build(mirrored, "skip")
        logs = model.fit(np.concatenate([bad, good]), np.concatenate([y, y]),
                         batch_size=8, shuffle=False, verbose=0).history
        skip_diff = max(float(np.abs(a - b).max())
                        for a, b in zip(base.get_weights(), reference))

        base, model = build(mirrored, "raise")
        try:
            model.fit(bad, y, batch_size=8, verbose=0)
            raised = None
        except FloatingPointError as error:
            raised = str(error)
        untouched = all(np.array_equal(a, b)
                        for a, b in zip(base.get_weights(), initial))
        print(json.dumps({
            "moved": max(float(np.abs(a - b).max())
                         for a, b in zip(reference, initial)),
            "skip_diff": skip_diff, "skipped": logs["skipped_batches"][0],
            "raised": raised, "untouched": untouched}))
        """
    )
    result = run_json(script)
    assert result["moved"] > 1e-3
    assert result["skip_diff"] < 1e-5
    assert result["skipped"] == pytest.approx(1.0)  # a Sum over the batches
    assert result["raised"] is not None and "x" in result["raised"]
    assert result["untouched"]


def test_subclassed_model_returning_logits_is_supported():
    class Linear(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 72)))

    base = Linear()
    x, y = _data(6)
    base(x)
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(1.0))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    # A linear model: dS_c/dx is column c of the kernel, for every sample.
    kernel = base.dense.kernel.numpy()
    expected = np.abs(kernel[:, y]).sum(axis=0).mean()
    np.testing.assert_allclose(logs["attribution_penalty"], expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Received: y with out-of-range values \[3\]"):
        model.fit(x[:4], np.array([0, 1, 2, 3]), verbose=0)


def test_layer_losses_enter_the_total_with_the_switch_on_and_off():
    """Kernel and activity regularisers of the base model: total = task + layer
    losses + alpha * penalty with the switch on, task + layer losses while off
    (the plain step: no penalty computed, its log NaN, never a stale value)."""
    keras.utils.set_random_seed(1)
    base = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(
                4, activation="tanh", activity_regularizer="l2", kernel_regularizer="l2"
            ),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 16)
    model = _compiled(base, alpha=0.1)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    on = model.fit(x, y, batch_size=16, verbose=0).history
    hidden = np.tanh(x @ base.layers[0].kernel.numpy() + base.layers[0].bias.numpy())
    logits = hidden @ base.layers[1].kernel.numpy() + base.layers[1].bias.numpy()
    task = np.mean(
        np.log(np.exp(logits).sum(1)) - logits[np.arange(16), y]
    )  # cross-entropy from logits
    kernel_l2 = 0.01 * np.sum(base.layers[0].kernel.numpy() ** 2)
    activity_l2 = 0.01 * np.sum(hidden**2) / 16
    jacobian = (1 - hidden**2)[:, None, :] * base.layers[0].kernel.numpy()[None]
    grads = np.einsum("bih,h b->bi", jacobian, base.layers[1].kernel.numpy()[:, y])
    penalty = np.abs(grads).sum(1).mean()
    np.testing.assert_allclose(on["attribution_penalty"][0], penalty, rtol=1e-5)
    np.testing.assert_allclose(
        on["loss"][0], task + kernel_l2 + activity_l2 + 0.1 * penalty, rtol=1e-5
    )
    off = model.fit(
        x,
        y,
        batch_size=16,
        verbose=0,
        callbacks=[kar.DelayedActivation("loss", threshold=-1.0, mode="min")],
    ).history
    assert np.isnan(off["attribution_penalty"][0])
    np.testing.assert_allclose(
        off["loss"][0], task + kernel_l2 + activity_l2, rtol=1e-5
    )


@pytest.mark.parametrize(
    "regularizer, monitor",
    [
        (kar.L1GradientPenalty(1e-3), "val_attribution_penalty"),
        (kar.FBILoss(0.5), "val_fbi_loss"),
    ],
)
def test_keras_callbacks_infer_that_the_penalty_is_minimised(
    tmp_path, regularizer, monitor
):
    """`EarlyStopping` and `ModelCheckpoint` with mode="auto" on the penalty.

    Oracle: the logged history itself: the best value the callbacks keep must
    be its minimum (a maximised metric would keep the maximum), and the run
    must have logged different values so the two differ.
    """
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    base = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model = kar.AttributionRegularizedModel(base, regularizer, nonfinite="skip")
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stopping = keras.callbacks.EarlyStopping(monitor, patience=100)
    checkpoint = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras", monitor=monitor, save_best_only=True
    )
    history = model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=6,
        batch_size=16,
        verbose=0,
        callbacks=[stopping, checkpoint],
    ).history
    values = history[monitor]
    assert min(values) < max(values)
    assert stopping.best == pytest.approx(min(values))
    assert checkpoint.best == pytest.approx(min(values))
    # The group is only a container: every tracker still logs under its name.
    assert monitor.removeprefix("val_") in history
    assert history["skipped_batches"] == [0.0] * 6
