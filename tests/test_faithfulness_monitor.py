"""FaithfulnessMonitor: faithfulness metrics in the epoch logs as val_<name>."""

import keras
import numpy as np
import pytest

import keras_attreg as kar
from keras_attreg.callbacks import FaithfulnessMonitor
from keras_attreg.evaluation import deletion, infidelity

L = keras.layers


def _setup(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.Conv2D(4, 3, activation="relu"),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(48, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 48)
    return model, x, y


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def test_logged_values_are_the_metrics_of_the_trained_model():
    """Oracle: `deletion` and `infidelity` called by the test on the model as
    it stands after the last epoch (each metric is pinned against naive loops
    in its own test file); the history holds one value per logged epoch."""
    model, x, y = _setup()
    wrapped = kar.AttributionRegularizedModel(model, kar.L1GradientPenalty(0.01))
    _compile(wrapped)
    monitor = FaithfulnessMonitor(
        x[:8], y[:8], metrics=("deletion_auc", "infidelity"), method="saliency"
    )
    history = wrapped.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    expected = deletion(model, (x[:8], y[:8]), kar.attributions.saliency).area()
    assert history.history["val_deletion_auc"][-1] == pytest.approx(expected, rel=1e-6)
    expected = infidelity(model, (x[:8], y[:8]), kar.attributions.saliency).value
    assert history.history["val_infidelity"][-1] == pytest.approx(expected, rel=1e-6)
    assert len(history.history["val_deletion_auc"]) == 2


def test_early_stopping_and_checkpoint_monitor_the_logged_metric(tmp_path):
    """Oracle: Keras's own EarlyStopping and ModelCheckpoint, placed after the
    monitor, see `val_insertion_auc` like `val_loss`: patience 0 in "max"
    mode stops at the first epoch that does not raise it, and the checkpoint
    is written."""
    model, x, y = _setup(1)
    _compile(model)
    monitor = FaithfulnessMonitor(x[:8], y[:8], metrics=("insertion_auc",))
    stop = keras.callbacks.EarlyStopping("val_insertion_auc", mode="max", patience=0)
    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(path), monitor="val_insertion_auc", mode="max", save_best_only=True
    )
    history = model.fit(
        x, y, epochs=30, verbose=0, callbacks=[monitor, stop, checkpoint]
    )
    values = history.history["val_insertion_auc"]
    assert path.exists()
    if len(values) < 30:  # stopped: the last value did not beat the best before
        assert values[-1] <= max(values[:-1])
    assert all(a < b for a, b in zip(values[:-2], values[1:-1], strict=True))


def test_every_k_epochs_and_config_round_trip():
    model, x, y = _setup(2)
    _compile(model)
    monitor = FaithfulnessMonitor(
        x[:4], y[:4], metrics=("road_morf_auc",), method="gradient_x_input", every=2
    )
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append("val_road_morf_auc" in logs)
    )
    model.fit(x, y, epochs=4, verbose=0, callbacks=[monitor, recorder])
    assert seen == [False, True, False, True]
    again = FaithfulnessMonitor(**monitor.get_config())
    assert again.get_config() == monitor.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metrics": ("auc",)}, "metrics.*Received: metrics='auc'"),
        ({"metrics": "deletion_auc"}, "metrics.*Received: metrics='deletion_auc'"),
        ({"method": "magic"}, "method.*magic"),
        ({"every": 0}, "every.*Received: every=0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FaithfulnessMonitor(np.zeros((2, 6, 6, 1)), [0, 1], **kwargs)


def test_old_import_paths_of_delayed_activation_warn_and_still_work():
    """Issue 24: one home (`keras_attreg.callbacks`); the two old paths are kept
    for one release with a DeprecationWarning, and give the same class."""
    from keras_attreg.callbacks import DelayedActivation

    with pytest.warns(DeprecationWarning, match="keras_attreg.callbacks"):
        from keras_attreg.training import DelayedActivation as old
    assert old is DelayedActivation is kar.DelayedActivation
    with pytest.warns(DeprecationWarning, match="keras_attreg.callbacks"):
        from keras_attreg.training.callbacks import DelayedActivation as older
    assert older is DelayedActivation
