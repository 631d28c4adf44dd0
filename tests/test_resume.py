"""Fault tolerance and determinism: BackupAndRestore resume, seeded runs.

Every run is a fresh Python process executing `_SCRIPT`, with
`keras.utils.set_random_seed` and `tf.config.experimental.enable_op_determinism()`
(a process-wide switch, so it stays out of the test process). The model has
BatchNormalization, so the optimizer state and the moving averages must be
restored, and `DelayedActivation` switches the regulariser on after epoch 0
and ramps it over three epochs, so a resumed run must also restore the switch
and its position on the ramp.

No Dropout: Keras 3.15's `save_weights`, which `BackupAndRestore` uses, does
not store the state of a layer's `SeedGenerator`, so a resumed run draws other
dropout masks than the uninterrupted one (a valid run, not a bit-identical one).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_attreg as kar

pytestmark = pytest.mark.slow

TIMEOUT_S = 150
EPOCHS = 5

_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    import keras
    import keras_attreg as kar

    job = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, len(x))


    class Kill(keras.callbacks.Callback):
        # SIGKILL: no Python clean-up, no `on_train_end`, like a lost machine.
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == job["kill_epoch"] and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch


    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == job["kill_epoch"]:
                raise KeyboardInterrupt


    def train(spec, seed, backup_dir, extra=()):
        keras.utils.set_random_seed(seed)
        base = keras.Sequential([
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ])
        model = kar.AttributionRegularizedModel(
            base, getattr(kar, spec["class"])(**spec["config"]))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
        trace = []
        probe = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: trace.append(
                [epoch, int(model.regularizer_start_epoch.numpy()),
                 float(model.regularizer_weight.numpy())]))
        # DelayedActivation before BackupAndRestore: the switch decided at an
        # epoch's end must be in that epoch's backup.
        callbacks = [
            kar.DelayedActivation("accuracy", threshold=-1.0, ramp_epochs=3),
            keras.callbacks.BackupAndRestore(backup_dir),
            probe,
            *extra,
        ]
        try:
            model.fit(x, y, batch_size=8, epochs=job["epochs"], shuffle=False,
                      verbose=0, callbacks=callbacks)
        except KeyboardInterrupt:
            return None
        return {"weights": [w.tolist() for w in model.get_weights()],
                "trace": trace}


    results = {}
    for name, spec in job["regularizers"].items():
        backup = os.path.join(job["dir"], name)
        if job["mode"] == "full":
            for seed in job["seeds"]:
                results[f"{name}/seed{seed}"] = train(
                    spec, seed, os.path.join(backup, f"seed{seed}"))
        elif job["mode"] == "kill":
            train(spec, 0, os.path.join(backup, "killed"), [Kill()])
        else:
            results[f"{name}/killed"] = train(spec, 0, os.path.join(backup, "killed"))
            raised = os.path.join(backup, "raised")
            assert train(spec, 0, raised, [Interrupt()]) is None
            results[f"{name}/raised"] = train(spec, 0, raised)
    with open(job["out"], "w") as f:
        json.dump(results, f)
    """
)

REGULARIZERS = {"l1_gradient": {"class": "L1GradientPenalty", "config": {"alpha": 0.5}}}
if hasattr(kar, "FBILoss"):
    REGULARIZERS["fbi"] = {"class": "FBILoss", "config": {"lam": 0.5}}


def _start(job):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, json.dumps(job)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(processes, returncodes):
    """Waits for every process (bounded by TIMEOUT_S); always kills them all."""
    try:
        for process, expected in zip(processes, returncodes, strict=True):
            output, _ = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == expected, output[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs (seed 0 twice in two processes, seed 1), runs killed
    by SIGKILL mid-epoch (one process per regulariser: the kill ends it) and,
    in another process, their resumption."""
    root = tmp_path_factory.mktemp("resume")
    common = {"regularizers": REGULARIZERS, "epochs": EPOCHS, "kill_epoch": 2}
    faults = str(root / "faults")
    jobs = {
        "first": {"mode": "full", "seeds": [0], "dir": str(root / "first")},
        "second": {"mode": "full", "seeds": [0, 1], "dir": str(root / "second")},
        "resume": {"mode": "resume", "dir": faults},
    }
    for name, job in jobs.items():
        job.update(common, out=str(root / f"{name}.json"))
    kills = [
        dict(common, mode="kill", dir=faults, out=str(root / "killed.json"))
        | {"regularizers": {name: spec}}
        for name, spec in REGULARIZERS.items()
    ]
    _wait(
        [_start(job) for job in [jobs["first"], jobs["second"], *kills]],
        [0, 0] + [-signal.SIGKILL] * len(kills),
    )
    assert not os.path.exists(root / "killed.json")
    _wait([_start(jobs["resume"])], [0])
    results = {}
    for name in ("first", "second", "resume"):
        with open(jobs[name]["out"]) as f:
            results[name] = json.load(f)
    return results


def _assert_bit_identical(weights, expected):
    assert len(weights) == len(expected)
    for a, b in zip(weights, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("regularizer", sorted(REGULARIZERS))
def test_delayed_activation_ramps_in_the_uninterrupted_run(runs, regularizer):
    trace = runs["first"][f"{regularizer}/seed0"]["trace"]
    # Threshold passed at the end of epoch 0: on from epoch 1, ramp over 3.
    assert [t[:2] for t in trace] == [[0, -1]] + [[e, 1] for e in range(1, EPOCHS)]
    np.testing.assert_allclose([t[2] for t in trace], [0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("regularizer", sorted(REGULARIZERS))
@pytest.mark.parametrize("fault", ["killed", "raised"])
def test_resumed_run_ends_with_the_uninterrupted_weights(runs, regularizer, fault):
    full = runs["first"][f"{regularizer}/seed0"]
    resumed = runs["resume"][f"{regularizer}/{fault}"]
    # The fault hit epoch 2 (mid-epoch for the kill, at its end for the
    # exception): the run resumes from the last backup, after epoch 1 or 2,
    # with the switch on since epoch 1 and the ramp where it was.
    first_epoch = {"killed": 2, "raised": 3}[fault]
    assert resumed["trace"] == full["trace"][first_epoch:]
    _assert_bit_identical(resumed["weights"], full["weights"])


@pytest.mark.parametrize("regularizer", sorted(REGULARIZERS))
def test_same_seed_gives_bit_identical_weights_across_processes(runs, regularizer):
    first = runs["first"][f"{regularizer}/seed0"]["weights"]
    _assert_bit_identical(runs["second"][f"{regularizer}/seed0"]["weights"], first)
    other = runs["second"][f"{regularizer}/seed1"]["weights"]
    assert (
        max(
            np.abs(np.asarray(a) - np.asarray(b)).max()
            for a, b in zip(other, first, strict=True)
        )
        > 1e-3
    )
