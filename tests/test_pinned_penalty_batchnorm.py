"""L1GradientPenalty training through BatchNormalization: what a step does to
the moving statistics, and what the penalty does against an alpha = 0
control (the test in test_training.py that checks "the statistics moved and
the penalty fell" passes without the penalty too)."""

import keras
import numpy as np
import tensorflow as tf

import keras_attreg as kar

MOMENTUM = 0.9


def _cnn():
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.BatchNormalization(momentum=MOMENTUM, name="bn"),
            keras.layers.Activation("tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="logits"),
        ]
    )


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


def _compiled(base, alpha):
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(alpha))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _own_penalty(base, x, y):
    """Mean over samples of ||dS_c/dx||_1, inference mode, the test's tape."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.reduce_sum(
            tf.gather(base(x, training=False), y, axis=1, batch_dims=1)
        )
    return float(np.abs(tape.gradient(score, x).numpy()).sum(axis=(1, 2, 3)).mean())


def test_regularised_step_updates_the_moving_statistics_once_from_the_batch():
    """Oracle: Keras's update rule by hand, moving <- m * moving + (1 - m) *
    batch moment, with the batch mean and (biased) variance of the
    convolution's output over (batch, height, width) computed in NumPy from
    the weights before the step. The penalty's extra forward passes must not
    update the statistics again, nor with other values: the alpha = 1 step
    and the alpha = 0 control give the same statistics."""
    x, y = _data(16)
    results = {}
    for alpha in (0.0, 1.0):
        base = _cnn()
        bn = base.get_layer("bn")
        bn.moving_mean.assign([0.3, -0.2, 0.1])
        bn.moving_variance.assign([0.5, 2.0, 1.5])
        before = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
        z = keras.Model(base.inputs[0], base.get_layer("conv").output)(x).numpy()
        batch_mean, batch_variance = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        _compiled(base, alpha).train_on_batch(x, y)
        expected = (
            MOMENTUM * before[0] + (1 - MOMENTUM) * batch_mean,
            MOMENTUM * before[1] + (1 - MOMENTUM) * batch_variance,
        )
        got = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
        assert np.abs(got[0] - before[0]).max() > 1e-3
        results[alpha] = got
    for a, b in zip(results[0.0], results[1.0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_penalty_ends_below_the_alpha_zero_control():
    """Oracle: a control run. From the same weights, on the same batches in
    the same order, 5 epochs at alpha = 1 and at alpha = 0 (task loss only);
    the penalty (mean ||dS_c/dx||_1 by the test's own tape) must end well
    below the control's, and the moving statistics moved in both."""
    x, y = _data(32)
    ends = {}
    for alpha in (0.0, 1.0):
        base = _cnn()
        before = base.get_layer("bn").moving_mean.numpy().copy()
        model = _compiled(base, alpha)
        model.fit(x, y, epochs=5, batch_size=16, shuffle=False, verbose=0)
        moved = base.get_layer("bn").moving_mean.numpy() - before
        assert np.abs(moved).max() > 1e-3
        ends[alpha] = _own_penalty(base, x, y)
        logged = model.evaluate(x, y, verbose=0, return_dict=True)
        np.testing.assert_allclose(
            logged["attribution_penalty"], ends[alpha], rtol=1e-4
        )
    assert ends[1.0] < 0.5 * ends[0.0], ends
