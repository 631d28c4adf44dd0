"""Which step `fit` runs: the plain step while `DelayedActivation` holds the
regulariser off, and lazy regularisation (`every=k`).

The reference is the test's own training loop: plain SGD steps on the task
loss and penalised ones on task + k * alpha * ||dS_c/dx||_1 (nested tapes
written here), in the order the documentation gives.
"""

import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from _subprocess import run_json

import keras_attreg as kar

LR = 0.5
ALPHA = 0.3


def _base(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(3, 3),
            keras.layers.Activation("tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5, 5, 2)).astype("float32"), rng.integers(0, 3, n)


def _model(base, regularizer=None, **kwargs):
    model = kar.AttributionRegularizedModel(
        base, regularizer or kar.L1GradientPenalty(ALPHA), **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _own_training(weights, x, y, batch_size, plan, scale):
    """SGD by hand on a copy of the base model: batch i takes a penalised step
    (weight `scale` on the penalty) where `plan[i]`, a plain one otherwise.

    Returns the final weights and, per batch, (loss, penalty or None).
    """
    model = _base()
    model.set_weights(weights)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logs = []
    for i, penalised in enumerate(plan):
        xb = tf.constant(x[i * batch_size : (i + 1) * batch_size])
        yb = y[i * batch_size : (i + 1) * batch_size]
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(xb)
                logits = model(xb)
                score = tf.reduce_sum(tf.gather(logits, yb, batch_dims=1))
            loss = loss_fn(yb, logits)
            penalty = None
            if penalised:
                gradient = inner.gradient(score, xb)
                penalty = tf.reduce_mean(tf.reduce_sum(tf.abs(gradient), [1, 2, 3]))
                loss = loss + scale * ALPHA * penalty
        grads = outer.gradient(loss, model.trainable_variables)
        for variable, grad in zip(model.trainable_variables, grads, strict=True):
            variable.assign_sub(LR * grad)
        logs.append((float(loss), None if penalty is None else float(penalty)))
    return model.get_weights(), logs


def _assert_weights_close(actual, expected):
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_every_k_penalises_every_kth_step_with_the_weight_times_k():
    x, y = _data(28)
    base = _base()
    start = base.get_weights()
    model = _model(base, every=3)
    history = model.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
    plan = [i % 3 == 0 for i in range(7)]
    weights, logs = _own_training(start, x, y, 4, plan, scale=3)
    _assert_weights_close(base.get_weights(), weights)
    # Logs: the penalty averaged over the penalised batches, the loss over all.
    penalties = [p for _, p in logs if p is not None]
    assert len(penalties) == 3
    np.testing.assert_allclose(
        history["attribution_penalty"][0], np.mean(penalties), rtol=1e-5
    )
    np.testing.assert_allclose(
        history["loss"][0], np.mean([loss for loss, _ in logs]), rtol=1e-5
    )
    # The schedule matters: penalising every step ends elsewhere.
    every_step, _ = _own_training(start, x, y, 4, [True] * 7, scale=1)
    assert (
        max(np.abs(a - b).max() for a, b in zip(weights, every_step, strict=True))
        > 1e-3
    )


def test_every_k_counts_optimizer_steps_across_epochs_and_the_switch():
    """Off in epoch 0 (plain steps), on from epoch 1: with every=2 the
    penalised steps are those whose optimizer step count is even."""
    x, y = _data(12)
    base = _base()
    start = base.get_weights()
    model = _model(base, every=2)
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[kar.DelayedActivation("loss", threshold=1e9, mode="min")],
    ).history
    plan = [False] * 3 + [step % 2 == 0 for step in range(3, 9)]
    batches = np.concatenate([x] * 3), np.concatenate([y] * 3)
    weights, logs = _own_training(start, *batches, 4, plan, scale=2)
    _assert_weights_close(base.get_weights(), weights)
    assert np.isnan(history["attribution_penalty"][0])
    for epoch in (1, 2):
        penalties = [p for _, p in logs[3 * epoch : 3 * epoch + 3] if p is not None]
        np.testing.assert_allclose(
            history["attribution_penalty"][epoch], np.mean(penalties), rtol=1e-5
        )


class _NaNPenalty(kar.AttributionRegularizer):
    """A penalty that is always NaN: any step that computes it must fail."""

    def __call__(self, split, x, targets, training):
        logits, outputs = split(x, training=training)
        return outputs, tf.fill(tf.shape(targets), np.float32("nan"))

    def combine(self, task_loss, penalty, weight):
        return task_loss + weight * penalty


def test_switched_off_step_is_the_plain_keras_step():
    """While off, no penalty is computed (a NaN one does not stop training)
    and the weights are bit for bit those of plain Keras training."""
    x, y = _data(16)
    plain = _base(seed=2)
    plain.compile(
        optimizer=keras.optimizers.SGD(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    base = _base(seed=2)
    model = _model(base, _NaNPenalty())
    off = kar.DelayedActivation("loss", threshold=-1.0, mode="min")
    history = model.fit(
        x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[off]
    ).history
    plain.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(base.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(history["attribution_penalty"]).all()
    assert np.isfinite(history["loss"]).all()
    # Switched on, the penalised step runs and its NaN stops training.
    model.regularizer_weight.assign(1.0)
    with pytest.raises(FloatingPointError, match="penalty"):
        model.fit(x, y, batch_size=4, verbose=0)


def test_every_k_resumes_its_schedule_after_backup_and_restore(tmp_path):
    """Interrupted after epoch 0 (3 steps, every=2), the resumed run continues
    the schedule from the saved step count: same weights as uninterrupted."""
    x, y = _data(12)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("stop")

    full_base = _base()
    _model(full_base, every=2).fit(
        x, y, batch_size=4, epochs=3, shuffle=False, verbose=0
    )
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError):
        _model(_base(), every=2).fit(
            x,
            y,
            batch_size=4,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[backup, Interrupt()],
        )
    resumed_base = _base()
    resumed = _model(resumed_base, every=2)
    resumed.fit(
        x, y, batch_size=4, epochs=3, shuffle=False, verbose=0, callbacks=[backup]
    )
    assert int(resumed.optimizer.iterations.numpy()) == 9
    _assert_weights_close(resumed_base.get_weights(), full_base.get_weights())


def test_every_k_round_trips_through_keras_files(tmp_path):
    x, y = _data(12)
    model = _model(_base(), kar.FBILoss(lam=0.2), every=3)
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    assert model.get_config()["every"] == 3
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.every == 3
    # Step 3 (penalised) and 4 (plain) continue identically from the file.
    for _ in range(2):
        model.train_on_batch(x[:4], y[:4])
        loaded.train_on_batch(x[:4], y[:4])
    _assert_weights_close(loaded.get_weights(), model.get_weights())


@pytest.mark.parametrize("every", [0, -2, 2.5, True, "4"])
def test_every_is_checked(every):
    with pytest.raises(ValueError, match=f"Received: every={every!r}"):
        kar.AttributionRegularizedModel(_base(), kar.L1GradientPenalty(), every=every)


def test_every_needs_one_step_per_execution():
    model = kar.AttributionRegularizedModel(_base(), kar.L1GradientPenalty(), every=2)
    model.compile(loss="sparse_categorical_crossentropy", steps_per_execution=2)
    x, y = _data(8)
    with pytest.raises(ValueError, match="Received: steps_per_execution=2"):
        model.fit(x, y, batch_size=4, verbose=0)


def test_skipped_batches_do_not_advance_the_every_k_schedule():
    """nonfinite="skip": a skipped batch is no optimizer step, so the step
    after it takes the kind the skipped one would have taken."""
    x, y = _data(12)
    x[4:8] = np.nan
    base = _base()
    start = base.get_weights()
    model = _model(base, every=2, nonfinite="skip")
    logs = model.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
    assert logs["skipped_batches"] == [1.0]
    # Step 0 penalised on batch 0, batch 1 skipped, step 1 plain on batch 2.
    kept = np.concatenate([x[:4], x[8:]]), np.concatenate([y[:4], y[8:]])
    weights, _ = _own_training(start, *kept, 4, [True, False], scale=2)
    _assert_weights_close(base.get_weights(), weights)


@pytest.mark.slow
def test_every_k_under_mirrored_strategy_follows_the_schedule():
    """Two replicas (logical CPUs), global batch 8, every=2: the same weights
    as the test's own penalised, plain, penalised SGD steps."""
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np, tensorflow as tf
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import keras, keras_attreg as kar
        from test_lazy_regularization import _base, _data, _model
        with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
            base = _base()
            model = _model(base, every=2)
        start = [w.tolist() for w in base.get_weights()]
        x, y = _data(24)
        logs = model.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
        print(json.dumps({{"start": start, "logs": logs,
                          "weights": [w.tolist() for w in base.get_weights()]}}))
        """
    )
    result = run_json(script)
    x, y = _data(24)
    start = [np.asarray(w, "float32") for w in result["start"]]
    weights, logs = _own_training(start, x, y, 8, [True, False, True], scale=2)
    _assert_weights_close([np.asarray(w) for w in result["weights"]], weights)
    np.testing.assert_allclose(
        result["logs"]["attribution_penalty"][0],
        np.mean([logs[0][1], logs[2][1]]),
        rtol=1e-5,
    )
