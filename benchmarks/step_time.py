"""Training step time: plain step vs the regularised steps, in one process.

Prints a table of median step times and their ratio to the plain step, and
writes the figures as JSON. Ratios, not absolute times, are the result: all
steps run on the same model, batch and machine, interleaved round by round.

    python benchmarks/step_time.py --output outputs/step_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

import keras_attreg as kar


def make_base(width: int, batchnorm: bool, seed: int) -> keras.Model:
    """A CIFAR-sized CNN, with or without BatchNormalization after each conv."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((32, 32, 3))]
    for filters in (width, 2 * width):
        layers.append(keras.layers.Conv2D(filters, 3, padding="same"))
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
        layers += [keras.layers.ReLU(), keras.layers.MaxPooling2D()]
    layers += [keras.layers.Flatten(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def regularizers() -> dict:
    return {
        "l1": kar.L1GradientPenalty(1e-3),
        "l2": kar.L1GradientPenalty(1e-3, norm="l2"),
        "fbi": kar.FBILoss(lam=1e-3),
    }


def compile_step(model: keras.Model):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def time_steps(args, batchnorm: bool, x, y) -> dict:
    """Median step time of each step kind, interleaved round by round."""
    models = {"plain": compile_step(make_base(args.width, batchnorm, 0))}
    for name, regularizer in regularizers().items():
        base = make_base(args.width, batchnorm, 0)
        models[name] = compile_step(kar.AttributionRegularizedModel(base, regularizer))
    for model in models.values():
        for _ in range(3):
            model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    plain = float(np.median(times["plain"]))
    return {
        name: {
            "median_ms": 1e3 * float(np.median(t)),
            "ratio_to_plain": float(np.median(t)) / plain,
        }
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--output", default="outputs/step_time.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)
    tables = {}
    for batchnorm in (True, False):
        label = "batchnorm" if batchnorm else "no_batchnorm"
        tables[label] = time_steps(args, batchnorm, x, y)
        print(f"\n{label} CNN, batch {args.batch_size}, width {args.width}")
        print(f"{'step':<10}{'median ms':>12}{'x plain':>10}")
        for name, row in tables[label].items():
            print(f"{name:<10}{row['median_ms']:>12.2f}{row['ratio_to_plain']:>10.2f}")
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"{tf.config.list_physical_devices('GPU') or 'no GPU'}",
        "tensorflow": tf.__version__,
        "batch_size": args.batch_size,
        "width": args.width,
        "rounds": args.rounds,
        "steps": tables,
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
