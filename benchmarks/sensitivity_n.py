"""Throughput of Sensitivity-n and of the sampling attribution methods.

Sensitivity-n is forward passes plus masking, so its floor is the model's own
batched forward throughput on the same number of inputs; the same holds for
Sensitivity-n over the tokens of a text CNN (IMDB-sized, random reviews).
Integrated gradients and SmoothGrad are gradient evaluations, so their floor is
the raw (batched) gradient throughput. Prints a table and writes JSON.

    python benchmarks/sensitivity_n.py --samples 32 --json sensitivity_n.json

Quantus's `SensitivityN` (0.6.x) is timed when `quantus` is importable (run the
script with an interpreter that has it; it is not a dependency). Quantus
computes a different quantity (it correlates across samples, sorting features
by attribution), so only forward passes per second are compared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_attreg.attributions import (  # noqa: E402
    gradient_x_input,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from keras_attreg.evaluation import sensitivity_n  # noqa: E402
from keras_attreg.evaluation.sensitivity_n import default_n_values  # noqa: E402


def mnist_cnn() -> keras.Model:
    """An MNIST-sized CNN ending in a softmax (random weights: speed only)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def load_inputs(count: int, data_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Standardised MNIST test digits if available, else random images."""
    path = data_dir / "mnist.npz"
    if path.exists():
        with np.load(path) as data:
            x = data["x_test"][:count].astype("float32")[..., None] / 255.0
            y = data["y_test"][:count].astype("int64")
        return (x - 0.1307) / 0.3081, y
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, 28, 28, 1)).astype("float32"), rng.integers(
        0, 10, count
    )


def timed(function, repeats: int = 5) -> float:
    """Best wall time of `repeats` calls, after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def paired(first, second, rounds: int = 5) -> tuple[float, float]:
    """Median wall times of two functions run alternately (after a warm-up).

    Alternating keeps both exposed to the same background load.
    """
    first(), second()
    times = np.zeros((rounds, 2))
    for row in times:
        for column, function in enumerate((first, second)):
            start = time.perf_counter()
            function()
            row[column] = time.perf_counter() - start
    return tuple(np.median(times, axis=0))


def text_cnn(vocabulary: int = 10_000, length: int = 200) -> keras.Model:
    """An IMDB-sized text CNN on token ids (random weights: speed only)."""
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocabulary, 32)(inputs)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


def token_ids(count: int, model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """Random reviews: lengths uniform in [length / 4, length], padded with 0."""
    rng = np.random.default_rng(0)
    vocabulary = model.get_layer(index=1).input_dim
    length = model.input_shape[1]
    ids = rng.integers(2, vocabulary, (count, length)).astype("int32")
    for row, size in zip(
        ids, rng.integers(length // 4, length + 1, count), strict=True
    ):
        row[size:] = 0
    return ids, rng.integers(0, 2, count)


def batched_forward(model, inputs: int, batch_size: int):
    """Plain batched inference on `inputs` inputs (no masking)."""
    forward = tf.function(lambda x: model(x, training=False))
    shape = [batch_size, *model.input_shape[1:]]
    if model.inputs[0].dtype.startswith("int"):
        batch = tf.random.uniform(shape, 1, 100, dtype=tf.int32)
    else:
        batch = tf.random.normal(shape)
    calls = max(1, round(inputs / batch_size))

    def run():
        for _ in range(calls):
            forward(batch).numpy()

    return run, calls * batch_size


def against_forward(model, x, y, maps, n_values, args) -> tuple[float, float]:
    """Rates (inputs/s) of Sensitivity-n and of the plain batched forward on
    the same number of inputs, timed in alternation."""
    inputs = len(x) * len(n_values) * args.num_subsets
    run_forward, forward_inputs = batched_forward(model, inputs, args.batch_size)
    seconds, forward_seconds = paired(
        lambda: sensitivity_n(
            model,
            (x, y),
            maps,
            n_values=n_values,
            num_subsets=args.num_subsets,
            batch_size=args.batch_size,
            verbose=0,
        ),
        run_forward,
        args.rounds,
    )
    return inputs / seconds, forward_inputs / forward_seconds


def loop_rate(model, x, y, n_values, num_subsets: int) -> float:
    """Inputs per second of a straightforward loop: one model call per subset."""
    forward = tf.function(lambda x: model(x, training=False))
    rng = np.random.default_rng(0)
    pixels = x[0, ..., 0].size

    def run():
        for n in n_values:
            for _ in range(num_subsets):
                mask = np.zeros(pixels, bool)
                mask[rng.choice(pixels, n, replace=False)] = True
                masked = x[0].copy()
                masked[mask.reshape(x.shape[1:-1])] = 0.0
                forward(masked[None]).numpy()[0, y[0]]

    return len(n_values) * num_subsets / timed(run, repeats=1)


def quantus_rate(model, x, y, maps, num_subsets: int):
    """Forward passes per second of Quantus's SensitivityN, or None."""
    try:
        import quantus
    except ImportError:
        return None
    features = x[0].size
    step = max(1, features // num_subsets)
    metric = quantus.SensitivityN(
        features_in_step=step,
        n_max_percentage=0.8,
        perturb_baseline="black",
        return_aggregate=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    # One prediction on x, then one per cumulative step of `step` features.
    forwards = len(x) * (1 + -(-features // step))

    def run():
        metric(
            model=model,
            x_batch=x,
            y_batch=y,
            a_batch=np.moveaxis(maps, -1, 1),
            channel_first=False,
        )

    return forwards / timed(run, repeats=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--num-subsets", type=int, default=100)
    parser.add_argument("--n-points", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--smoothgrad-samples", type=int, default=25)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds per comparison"
    )
    parser.add_argument(
        "--data-dir", type=pathlib.Path, default=pathlib.Path("../shared/data")
    )
    parser.add_argument(
        "--json", type=pathlib.Path, default=pathlib.Path("sensitivity_n.json")
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = mnist_cnn()
    x, y = load_inputs(args.samples, args.data_dir)
    maps = saliency(model, x, y, absolute=False).numpy() * x
    n_values = default_n_values(28 * 28, args.n_points)
    per_sample = len(n_values) * args.num_subsets
    batch = args.batch_size

    ours, forward = against_forward(model, x, y, maps, n_values, args)
    loop = loop_rate(model, x, y, n_values, args.num_subsets)
    quantus = quantus_rate(model, x, y, maps, args.num_subsets)

    def against_gradient(method, repeats: int) -> tuple[float, float, float]:
        """Rates (gradients/s) of `method` and of plain gradients on the same
        number of inputs, `repeats` per sample, timed in alternation."""
        copies = np.repeat(x, repeats, axis=0), np.repeat(y, repeats)
        method_seconds, gradient_seconds = paired(
            lambda: method(model, x, y, batch_size=batch).numpy(),
            lambda: saliency(model, *copies, absolute=False, batch_size=batch).numpy(),
            args.rounds,
        )
        work = len(x) * repeats
        return (
            work / method_seconds,
            work / gradient_seconds,
            gradient_seconds / method_seconds,
        )

    ig, gradients, _ = against_gradient(
        functools.partial(integrated_gradients, steps=args.ig_steps), args.ig_steps
    )
    sg, _, sg_ratio = against_gradient(
        functools.partial(smoothgrad, samples=args.smoothgrad_samples),
        args.smoothgrad_samples,
    )

    text_model = text_cnn()
    ids, labels = token_ids(args.samples, text_model)
    token_maps = gradient_x_input(text_model, ids, labels).numpy()
    text_n = [n for n in n_values if n <= 50]
    text_ours, text_forward = against_forward(
        text_model, ids, labels, token_maps, text_n, args
    )

    rows = [
        ("sensitivity_n (ours)", "forward/s", ours, ours / forward),
        ("batched forward, no masking", "forward/s", forward, 1.0),
        ("per-subset loop", "forward/s", loop, loop / forward),
        (
            "sensitivity_n over tokens (text CNN)",
            "forward/s",
            text_ours,
            text_ours / text_forward,
        ),
        ("text CNN batched forward", "forward/s", text_forward, 1.0),
    ]
    if quantus is not None:
        rows.append(("Quantus SensitivityN", "forward/s", quantus, quantus / forward))
    rows += [
        ("raw input gradient", "gradient/s", gradients, 1.0),
        (
            f"integrated_gradients (steps={args.ig_steps})",
            "gradient/s",
            ig,
            ig / gradients,
        ),
        (
            f"smoothgrad (samples={args.smoothgrad_samples})",
            "gradient/s",
            sg,
            sg_ratio,
        ),
    ]
    load = os.getloadavg()
    print(f"{'what':<36}{'unit':>12}{'rate':>12}{'ratio':>8}")
    for name, unit, rate, ratio in rows:
        print(f"{name:<36}{unit:>12}{rate:>12.0f}{ratio:>8.2f}")
    print(
        f"sensitivity_n: {ours / per_sample:.1f} samples/s "
        f"({len(n_values)} n values x {args.num_subsets} subsets per sample)"
    )
    if quantus is None:
        print("Quantus: not importable in this interpreter (not timed)")
    print(
        "load average (1, 5, 15 min) after timing: "
        + " ".join(f"{value:.2f}" for value in load)
    )
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average": load,
        "settings": vars(args)
        | {"data_dir": str(args.data_dir), "json": str(args.json)},
        "n_values": [int(n) for n in n_values],
        "sensitivity_n_samples_per_s": ours / per_sample,
        "rows": [
            {"what": name, "unit": unit, "rate": rate, "ratio": ratio}
            for name, unit, rate, ratio in rows
        ],
    }
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
