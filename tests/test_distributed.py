"""Distributed training: MultiWorkerMirroredStrategy and MirroredStrategy.

Each run is a fresh Python process (logical devices and `TF_CONFIG` must be set
before TensorFlow starts) executing `_SCRIPT`: the same tiny CNN, the same
initial weights (drawn with numpy) and the same global batches, trained for a
few SGD-with-momentum steps. The weights after training must equal those of a
single-process run: the per-sample task loss and penalty are averaged over the
*global* batch whatever the number of replicas.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_attreg as kar

pytestmark = pytest.mark.slow

# Float32 sums over replicas are reordered. Largest weight differences
# measured (4 steps x 2 epochs, weights of order 1): L1 penalty 1.3e-7, FBI
# 1.2e-7, the same for MirroredStrategy and for each worker; logged loss and
# penalty within 8e-8 relative. 1e-5 leaves room and is 1000 times below the
# weight change of training (L1 1.6, FBI 0.4; checked below).
ATOL = 1e-5
TIMEOUT_S = 150

_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    mode, spec, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    tf.config.threading.set_intra_op_parallelism_threads(1)
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    import keras_attreg as kar

    if mode == "multiworker":
        # Keras 3.15 `fit` fails under MultiWorkerMirroredStrategy with several
        # workers (tensorflow/tensorflow#72388): it reduces the scalar logs with
        # `axis=0`, and the first batch's nested structure in one call. Shim
        # both: mean of the logs over replicas; shapes from the local batch.
        from keras.src.backend.tensorflow import trainer as keras_trainer
        keras_reduce = keras_trainer.reduce_per_replica
        keras_build = keras_trainer.TensorFlowTrainer._maybe_symbolic_build

        def reduce_per_replica(values, strategy, reduction):
            if reduction == "auto":
                return tf.nest.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=None), values)
            return keras_reduce(values, strategy, reduction)

        def maybe_symbolic_build(self, iterator=None, data_batch=None):
            local = self.distribute_strategy.experimental_local_results
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: local(v)[0], next(batches))
                break
            return keras_build(self, None, data_batch)

        keras_trainer.reduce_per_replica = reduce_per_replica
        keras_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build

    global_batch, steps = 8, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(global_batch * steps, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, len(x))
    with strategy.scope():
        base = keras.Sequential([
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ])
        initial = [rng.normal(scale=0.5, size=w.shape).astype("float32")
                   for w in base.get_weights()]
        base.set_weights(initial)
        regularizer = getattr(kar, spec["class"])(**spec["config"])
        model = kar.AttributionRegularizedModel(base, regularizer)
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
    history = model.fit(data.with_options(options), epochs=2, verbose=0).history
    np.savez(out, *base.get_weights(), initial=np.concatenate(
        [w.ravel() for w in initial]), replicas=strategy.num_replicas_in_sync,
        loss=history["loss"], penalty=history[regularizer.name])
    """
)

REGULARIZERS = [
    pytest.param(
        {"class": "L1GradientPenalty", "config": {"alpha": 0.5}}, id="l1_gradient"
    ),
    pytest.param(
        {"class": "FBILoss", "config": {"lam": 0.5}},
        id="fbi",
        marks=pytest.mark.skipif(
            not hasattr(kar, "FBILoss"),
            reason="keras_attreg does not export FBILoss yet (FBI regulariser "
            "not landed)",
        ),
    ),
]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(mode, spec, out, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, mode, json.dumps(spec), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run(processes):
    """Waits for every process (bounded by TIMEOUT_S); always kills them all."""
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _weights(path):
    with np.load(path) as data:
        result = {key: data[key] for key in data.files}
    return result


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """Reference runs on one device, computed once per regulariser."""
    cache = {}

    def run(spec):
        key = json.dumps(spec, sort_keys=True)
        if key not in cache:
            out = tmp_path_factory.mktemp("single") / "weights.npz"
            _run([_start("single", spec, out)])
            cache[key] = _weights(out)
        return cache[key]

    return run


def _assert_same_training(result, reference, replicas):
    assert int(result["replicas"]) == replicas
    np.testing.assert_array_equal(result["initial"], reference["initial"])
    names = sorted(k for k in reference if k.startswith("arr_"))
    final = np.concatenate([reference[k].ravel() for k in names])
    # Training moved the weights far more than the tolerance.
    assert np.abs(final - reference["initial"]).max() > 1000 * ATOL
    for name in names:
        np.testing.assert_allclose(result[name], reference[name], rtol=0, atol=ATOL)
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["penalty"], reference["penalty"], rtol=1e-5)


@pytest.mark.parametrize("spec", REGULARIZERS)
def test_multi_worker_training_equals_single_process(spec, tmp_path, single_process):
    """Two workers on 127.0.0.1, one replica each, global batch 8 = 2 x 4."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    workers = [
        _start(
            "multiworker",
            spec,
            outs[index],
            {"cluster": cluster, "task": {"type": "worker", "index": index}},
        )
        for index in range(2)
    ]
    _run(workers)
    reference = single_process(spec)
    for out in outs:
        _assert_same_training(_weights(out), reference, replicas=2)


@pytest.mark.parametrize("spec", REGULARIZERS)
def test_mirrored_two_devices_equals_single_device(spec, tmp_path, single_process):
    out = tmp_path / "mirrored.npz"
    _run([_start("mirrored", spec, out)])
    _assert_same_training(_weights(out), single_process(spec), replicas=2)
