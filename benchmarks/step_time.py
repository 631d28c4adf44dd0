"""Training step time: plain step vs the regularised steps, in one process.

Prints a table of median step times and their ratio to the plain step, and
writes the figures as JSON. Ratios, not absolute times, are the result: all
steps run on the same model, batch and machine, interleaved round by round.
Rows `bare_plain` / `bare_l1` are hand-written `tf.function` steps (no
wrapper, no `fit` machinery) on the same model; their ratio is what the nested
tapes cost in TensorFlow itself.

    python benchmarks/step_time.py --output outputs/step_time.json
"""

from __future__ import annotations

import argparse
import functools
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


def bare_step(base: keras.Model, alpha: float | None):
    """A hand-written `tf.function` step, no Keras `fit` machinery and no
    wrapper: plain (`alpha=None`) or with the L1 input-gradient penalty written
    out with two nested tapes. It measures what the nested tapes cost in
    TensorFlow itself, apart from anything `AttributionRegularizedModel` adds.
    """
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(base.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as outer:
            if alpha is None:
                loss = loss_fn(y, base(x, training=True))
            else:
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(x)
                    logits = base(x, training=True)
                    scores = tf.gather(logits, y, batch_dims=1)
                gradient = inner.gradient(scores, x)
                penalty = tf.reduce_sum(tf.abs(gradient), axis=[1, 2, 3])
                loss = loss_fn(y, logits) + alpha * tf.reduce_mean(penalty)
        gradients = outer.gradient(loss, base.trainable_variables)
        optimizer.apply(gradients, base.trainable_variables)
        return loss

    return step


def time_steps(args, batchnorm: bool, x, y) -> dict:
    """Median step time of each step kind, interleaved round by round.

    Keras steps (`train_on_batch`) are compared with the plain Keras step,
    the bare `tf.function` steps with the bare plain step.
    """
    plain = compile_step(make_base(args.width, batchnorm, 0))
    steps = {"plain": lambda: plain.train_on_batch(x, y)}
    for name, regularizer in regularizers().items():
        base = make_base(args.width, batchnorm, 0)
        model = compile_step(kar.AttributionRegularizedModel(base, regularizer))
        steps[name] = functools.partial(model.train_on_batch, x, y)
    x_tensor, y_tensor = tf.constant(x), tf.constant(y)
    for name, alpha in (("bare_plain", None), ("bare_l1", 1e-3)):
        step = bare_step(make_base(args.width, batchnorm, 0), alpha)
        steps[name] = functools.partial(lambda s: s(x_tensor, y_tensor).numpy(), step)
    for step in steps.values():
        for _ in range(3):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    return {
        name: {
            "median_ms": 1e3 * median,
            "ratio_to_plain": median
            / medians["bare_plain" if name.startswith("bare") else "plain"],
        }
        for name, median in medians.items()
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
