"""The L1 gradient penalty on real MNIST digits (slow)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_attreg as kar


def _cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same"),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def _mean_l1_input_gradient(base, x, y):
    """Independent of the library: a plain tape on the logits of the base model."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.gather(base(x, training=False), y, batch_dims=1)
    return float(
        tf.reduce_mean(tf.reduce_sum(tf.abs(tape.gradient(scores, x)), [1, 2, 3]))
    )


@pytest.mark.slow
def test_penalty_lowers_input_gradient_on_real_mnist_at_similar_accuracy(data_dir):
    train = kar.datasets.load_mnist(
        "train",
        data_dir=data_dir,
        source="local",
        limit=3000,
        batch_size=64,
        shuffle=True,
        seed=0,
    )
    test = kar.datasets.load_mnist(
        "test", data_dir=data_dir, source="local", limit=1000
    )
    x_test = np.stack([x for x, _ in test])
    y_test = np.array([int(y) for _, y in test])
    results = {}
    for alpha in (0.0, 0.01):
        keras.utils.set_random_seed(0)
        base = _cnn()
        model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(alpha))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(train, epochs=2, verbose=0)
        accuracy = float(
            np.mean(np.argmax(base.predict(x_test, verbose=0), 1) == y_test)
        )
        results[alpha] = (accuracy, _mean_l1_input_gradient(base, x_test, y_test))
    (acc_plain, grad_plain), (acc_l1, grad_l1) = results[0.0], results[0.01]
    print(results)
    assert acc_plain > 0.85 and acc_l1 > 0.85
    assert abs(acc_plain - acc_l1) < 0.04
    assert grad_l1 < 0.75 * grad_plain, results
