"""AttributionMonitor: TensorBoard images and scalars, PNG grids, arguments."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread

import keras_attreg as kar
from keras_attreg.callbacks import AttributionMonitor, DelayedActivation
from keras_attreg.evaluation import sensitivity_n

# Images are stored as 8-bit PNGs: v in [0, 1] becomes round(255 v), so the
# decoded value is within 0.5/255 of the exact one.
PNG_ATOL = 0.5 / 255 + 1e-6


def _mlp(softmax=False):
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(3, activation="softmax" if softmax else None),
        ]
    )


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6, 6, 2)).astype("float32"), rng.integers(0, 3, n)


def _input_gradient(weights, x, targets):
    """dS_c/dx of Flatten-Dense(tanh)-Dense by hand (numpy, float64)."""
    w1, b1, w2, _ = (np.asarray(w, "float64") for w in weights)
    flat = x.reshape(len(x), -1).astype("float64")
    slope = 1 - np.tanh(flat @ w1 + b1) ** 2
    return ((slope * w2[:, targets].T) @ w1.T).reshape(x.shape)


def _display(attributions):
    """mean_c |R|, scaled to its maximum, per sample."""
    maps = np.abs(attributions).mean(axis=-1)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _events(log_dir):
    """tag -> {step: value}: decoded images (n, H, W, 1) or float scalars."""
    found = {}
    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":
                    width, height = int(tensor[0]), int(tensor[1])
                    images = np.stack(
                        [tf.io.decode_png(png).numpy() for png in tensor[2:]]
                    )
                    assert images.shape[1:3] == (height, width)
                    found.setdefault(value.tag, {})[event.step] = images / 255.0
                else:
                    found.setdefault(value.tag, {})[event.step] = float(tensor)
    return found


def test_tensorboard_images_and_scalars_match_independent_maps(tmp_path):
    x, y = _data()
    x_val, y_val = x[:4], y[:4]
    base = _mlp()
    model = kar.AttributionRegularizedModel(base, kar.L1GradientPenalty(0.1))
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    weights_at_end = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights_at_end.append(base.get_weights())
    )
    monitor = AttributionMonitor(
        x_val,
        y_val,
        methods=("saliency", "gradient_x_input"),
        log_dir=str(tmp_path / "logs"),
        sensitivity_n_values=(1, 8),
        num_subsets=8,
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[snapshot, monitor])
    events = _events(tmp_path / "logs")
    sensitivity_tags = {
        f"attributions/sensitivity_n/{method}/n={n}"
        for method in ("saliency", "gradient_x_input")
        for n in (1, 8)
    }
    assert (
        set(events)
        == {
            "attributions/saliency",
            "attributions/gradient_x_input",
            "attributions/mean_l1_input_gradient",
        }
        | sensitivity_tags
    )
    assert not np.allclose(weights_at_end[0][0], weights_at_end[1][0])
    for step, weights in enumerate(weights_at_end):
        gradient = _input_gradient(weights, x_val, y_val)
        saliency = events["attributions/saliency"][step]
        assert saliency.shape == (4, 6, 6, 1)
        np.testing.assert_allclose(saliency[..., 0], _display(gradient), atol=PNG_ATOL)
        np.testing.assert_allclose(
            events["attributions/gradient_x_input"][step][..., 0],
            _display(gradient * x_val),
            atol=PNG_ATOL,
        )
        np.testing.assert_allclose(
            events["attributions/mean_l1_input_gradient"][step],
            np.abs(gradient).sum(axis=(1, 2, 3)).mean(),
            rtol=1e-5,
        )
    # Sensitivity-n of the final maps (computed by hand above), same subsets.
    final_maps = {"saliency": np.abs(gradient), "gradient_x_input": gradient * x_val}
    for method, maps in final_maps.items():
        expected = sensitivity_n(
            base, (x_val, y_val), maps, n_values=(1, 8), num_subsets=8, verbose=0
        )
        for n, score in zip((1, 8), expected.correlation, strict=True):
            tag = f"attributions/sensitivity_n/{method}/n={n}"
            assert sorted(events[tag]) == [0, 1]
            np.testing.assert_allclose(events[tag][1], score, rtol=1e-4)
            np.testing.assert_allclose(
                [value for _, value in monitor.history[tag]],
                [events[tag][0], events[tag][1]],
                rtol=1e-6,
            )
    # The two maps differ: a swapped tag or method would be caught above.
    assert np.abs(_display(gradient) - _display(gradient * x_val)).max() > 0.1


def test_png_grids_every_other_epoch_without_log_dir(tmp_path):
    x, y = _data()
    base = _mlp(softmax=True)
    base.compile(
        optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy"
    )
    monitor = AttributionMonitor(x[:3], y[:3], every=2, output_dir=tmp_path / "png")
    weights_at_end = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights_at_end.append(base.get_weights())
    )
    base.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[snapshot, monitor])
    assert sorted(os.listdir(tmp_path / "png")) == ["maps_epoch_2.png", "scalars.json"]
    image = imread(tmp_path / "png" / "maps_epoch_2.png")
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # 3 rows, 2 columns
    with open(tmp_path / "png" / "scalars.json") as f:
        scalars = json.load(f)
    # Epoch index 1 only; measured on the pre-softmax logit of a softmax model.
    [[epoch, value]] = scalars["attributions/mean_l1_input_gradient"]
    assert epoch == 1
    gradient = _input_gradient(weights_at_end[1], x[:3], y[:3])
    np.testing.assert_allclose(
        value, np.abs(gradient).sum(axis=(1, 2, 3)).mean(), rtol=1e-5
    )


def test_callable_method_and_config_round_trip():
    x, y = _data(4)
    calls = []

    def zeros(model, inputs, targets):
        calls.append(inputs.shape)
        return np.zeros(inputs.shape)

    monitor = AttributionMonitor(
        x, y, methods=("integrated_gradients", zeros), output_dir="unused", every=3
    )
    assert list(monitor.methods) == ["integrated_gradients", "zeros"]
    config = monitor.get_config()
    restored = AttributionMonitor.from_config(config, custom_objects={"zeros": zeros})
    assert restored.methods["zeros"] is zeros
    np.testing.assert_array_equal(restored.x_val, x)
    named = AttributionMonitor.from_config(
        dict(config, methods=["saliency"])
    ).get_config()
    assert named == dict(config, methods=["saliency"])
    assert kar.DelayedActivation is DelayedActivation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x_val": np.zeros((4, 6))}, r"Received: x_val with shape \(4, 6\)"),
        ({"y_val": np.zeros(3, "int64")}, r"Received: y_val with shape \(3,\)"),
        ({"methods": ("nope",)}, "Received: methods=\\('nope',\\)"),
        ({"methods": ()}, r"Received: methods=\(\)"),
        ({"methods": ("saliency", "saliency")}, "'saliency' twice"),
        ({"every": 0}, "Received: every=0"),
        ({"sensitivity_n_values": (0,)}, "Received: sensitivity_n_values=0"),
        ({"log_dir": None, "output_dir": None}, "Received: log_dir=None"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    x, y = _data(4)
    arguments = {"x_val": x, "y_val": y, "output_dir": "unused", **kwargs}
    with pytest.raises(ValueError, match=match):
        AttributionMonitor(**arguments)


def test_labels_out_of_range_for_the_model_raise():
    x, _ = _data(2)
    model = _mlp()
    model.compile(loss="mse")
    monitor = AttributionMonitor(x, np.array([0, 5]), output_dir="unused")
    match = r"Received: y_val with out-of-range values \[5\]"
    with pytest.raises(ValueError, match=match):
        model.fit(x, np.zeros((2, 3)), verbose=0, callbacks=[monitor])
