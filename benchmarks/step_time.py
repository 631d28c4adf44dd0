"""Training step time: plain step vs the regularised steps, in one process.

Prints a table of median step times and their ratio to the plain step, and
writes the figures as JSON. Ratios, not absolute times, are the result: all
steps run on the same model, batch and machine, interleaved round by round.
Each step is timed twice: wall clock, and the CPU time of the process (all
its threads), which moves less than the wall clock when other processes load
the machine.
Models: a CIFAR-sized CNN with and without BatchNorm (`cnn_bn`, `cnn`) and a
CIFAR ResNet with BatchNorm (`resnet`, ResNet-20 by default). Rows `bare_plain`
/ `bare_l1` are hand-written `tf.function` steps (no wrapper, no `fit`
machinery) on the same model; their ratio is what the nested tapes cost in
TensorFlow itself; `bare_l1_2nd` is `bare_l1` with the second derivatives of
BatchNormalization and max pooling that the wrapper uses
(`keras_attreg._keras.second_order`). `l1_off` is the wrapper while
`DelayedActivation` holds the regulariser off; `*_every4` the lazy
regularisation of `every=4`, per step averaged over its period. The masked
penalties (issue 19: `masked_l1`, `rrr`, `masked_relevance`,
`expected_gradients`) train with a 4 x 4 annotation mask per image; each sits
beside its unmasked twin (`l1`, `l2`, `fbi`; none for expected gradients).
`--jit-compile` compiles every step with XLA: the plain Keras step and the
wrapper's steps (`compile(jit_compile=True)`) as well as the bare steps; the
ratios then compare XLA steps with the XLA plain step, and the `*_no_xla` rows
time the plain, L1 and FBI steps without XLA in the same rounds.

    python benchmarks/step_time.py --output outputs/step_time.json
    python benchmarks/step_time.py --jit-compile --output outputs/step_time_xla.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

import keras_attreg as kar
from keras_attreg._keras.second_order import second_order_layers


def make_cnn(width: int, batchnorm: bool, seed: int) -> keras.Model:
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


def make_resnet(blocks: int, seed: int) -> keras.Model:
    """A CIFAR ResNet (He et al. 2016, Sec. 4.2): 6 * blocks + 2 layers, widths
    16/32/64, BatchNormalization after every conv, 1x1 projection shortcuts
    where the shape changes; `blocks=3` is ResNet-20."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x, filters, kernel, strides):
        x = layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(x)

    inputs = keras.Input((32, 32, 3))
    x = layers.ReLU()(conv_bn(inputs, 16, 3, 1))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(conv_bn(x, filters, 3, strides))
            y = conv_bn(y, filters, 3, 1)
            if strides != 1 or x.shape[-1] != filters:
                x = conv_bn(x, filters, 1, strides)
            x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def make_base(name: str, args) -> keras.Model:
    """Model `name` (`cnn_bn`, `cnn` or `resnet`), seeded identically."""
    if name == "resnet":
        return make_resnet(args.resnet_blocks, 0)
    return make_cnn(args.width, name == "cnn_bn", 0)


def regularizers() -> dict:
    return {
        "l1": kar.L1GradientPenalty(1e-3),
        "l2": kar.L1GradientPenalty(1e-3, norm="l2"),
        "fbi": kar.FBILoss(lam=1e-3),
    }


def masked_regularizers() -> dict:
    """The masked penalties, each beside its unmasked twin in the table:
    `masked_l1` (twin `l1`), `rrr` (a squared input gradient, twin `l2`),
    `masked_relevance` (one relevance pass, twin `fbi`), `expected_gradients`
    (a second forward pass at the interpolated input: no twin)."""
    return {
        "masked_l1": kar.MaskedGradientPenalty(1e-3),
        "rrr": kar.RRRPenalty(1e-3),
        "masked_relevance": kar.MaskedRelevancePenalty(1e-3),
        "expected_gradients": kar.ExpectedGradientsPenalty(1e-3),
    }


def compile_step(model: keras.Model, jit_compile: bool):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def bare_step(
    base: keras.Model, alpha: float | None, jit_compile: bool, second_order: bool
):
    """A hand-written `tf.function` step, no Keras `fit` machinery and no
    wrapper: plain (`alpha=None`) or with the L1 input-gradient penalty written
    out with two nested tapes. It measures what the nested tapes cost in
    TensorFlow itself, apart from anything `AttributionRegularizedModel` adds.
    `second_order`: within `second_order_layers(base)`, the wrapper's exact and
    cheaper second derivatives of BatchNormalization and max pooling (else
    TensorFlow's own, through Keras's layers).
    """
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(base.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        layers = second_order_layers(base) if second_order else contextlib.nullcontext()
        with tf.GradientTape() as outer, layers:
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


def wrapper_steps(args, name: str, x, y, mask) -> dict:
    """Steps of `AttributionRegularizedModel` on model `name`; each runs its
    training steps and returns how many it ran.

    `l1_off` is the L1 wrapper with its switch variable at 0, as
    `DelayedActivation` holds it before the threshold; `*_every{k}` runs the k
    consecutive steps of one period of `every=k` (one regularised, k - 1
    plain). The masked penalties train with the annotation mask `mask`.
    """
    variants = [(label, r, 1, False) for label, r in regularizers().items()]
    variants.append(("l1_off", kar.L1GradientPenalty(1e-3), 1, True))
    variants += [
        (f"{label}_every{args.every}", regularizers()[label], args.every, False)
        for label in ("l1", "fbi")
    ]
    variants += [(label, r, 1, False) for label, r in masked_regularizers().items()]
    steps = {}
    for label, regularizer, every, off in variants:
        masks = {"annotation_mask": mask} if regularizer.takes_mask else {}
        model = kar.AttributionRegularizedModel(
            make_base(name, args), regularizer, every=every
        )
        compile_step(model, args.jit_compile)
        if off:
            model.regularizer_weight.assign(0.0)

        def step(model=model, every=every, masks=masks):
            for _ in range(every):
                model.train_on_batch(x, y, **masks)
            return every

        steps[label] = step
    return steps


def time_steps(args, name: str, x, y, mask) -> dict:
    """Median time per training step of each step kind, interleaved round by
    round.

    Keras steps (`train_on_batch`) are compared with the plain Keras step,
    the bare `tf.function` steps with the bare plain step. A step kind that
    raises `ValueError` when first run (e.g. FBI on a graph the relevance
    pass does not handle) is reported as not available, with the reason.
    """
    plain = compile_step(make_base(name, args), args.jit_compile)

    def plain_step():
        plain.train_on_batch(x, y)
        return 1

    steps = {"plain": plain_step, **wrapper_steps(args, name, x, y, mask)}
    if args.jit_compile:
        # The same steps without XLA, timed in the same rounds.
        without = argparse.Namespace(**{**vars(args), "jit_compile": False})
        unjitted = compile_step(make_base(name, args), False)

        def plain_no_xla():
            unjitted.train_on_batch(x, y)
            return 1

        steps["plain_no_xla"] = plain_no_xla
        wrapped = wrapper_steps(without, name, x, y, mask)
        steps.update({f"{k}_no_xla": wrapped[k] for k in ("l1", "fbi")})
    x_tensor, y_tensor = tf.constant(x), tf.constant(y)
    bare_kinds = (
        ("bare_plain", None, False),
        ("bare_l1", 1e-3, False),
        ("bare_l1_2nd", 1e-3, True),
    )
    for label, alpha, second_order in bare_kinds:
        bare = bare_step(make_base(name, args), alpha, args.jit_compile, second_order)

        def step(bare=bare):
            bare(x_tensor, y_tensor).numpy()
            return 1

        steps[label] = step
    failed = {}
    for label, step in list(steps.items()):
        try:
            for _ in range(3):
                step()
        except ValueError as error:
            failed[label] = str(error).splitlines()[0]
            del steps[label]
    times = {label: ([], []) for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            count = step()
            times[label][0].append((time.perf_counter() - wall) / count)
            times[label][1].append((time.process_time() - cpu) / count)
    medians = {
        label: (float(np.median(wall)), float(np.median(cpu)))
        for label, (wall, cpu) in times.items()
    }
    rows = {}
    for label, (wall, cpu) in medians.items():
        reference = medians["bare_plain" if label.startswith("bare") else "plain"]
        rows[label] = {
            "median_ms": 1e3 * wall,
            "ratio_to_plain": wall / reference[0],
            "cpu_ms": 1e3 * cpu,
            "cpu_ratio_to_plain": cpu / reference[1],
        }
    rows.update({label: {"not_available": reason} for label, reason in failed.items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--models",
        default="cnn_bn,cnn,resnet",
        help="comma-separated: cnn_bn (CNN with BatchNorm), cnn (without), "
        "resnet (CIFAR ResNet with BatchNorm)",
    )
    parser.add_argument("--resnet-blocks", type=int, default=3, help="3: ResNet-20")
    parser.add_argument("--every", type=int, default=4, help="k of the every=k rows")
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile every step with XLA (plain Keras, the wrapper, bare steps)",
    )
    parser.add_argument("--output", default="outputs/step_time.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)
    # Decoy MNIST's kind of annotation: a 4 x 4 corner of each image.
    mask = np.zeros((args.batch_size, 32, 32), "float32")
    mask[:, :4, :4] = 1.0
    tables = {}
    for name in args.models.split(","):
        tables[name] = time_steps(args, name, x, y, mask)
        print(f"\n{name}, batch {args.batch_size}")
        print(f"{'step':<14}{'wall ms':>10}{'x plain':>9}{'CPU ms':>10}{'x plain':>9}")
        for label, row in tables[name].items():
            if "not_available" in row:
                print(f"{label:<14}{'n/a':>10}{'n/a':>9}  {row['not_available']}")
            else:
                print(
                    f"{label:<14}{row['median_ms']:>10.2f}{row['ratio_to_plain']:>9.2f}"
                    f"{row['cpu_ms']:>10.2f}{row['cpu_ratio_to_plain']:>9.2f}"
                )
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"{tf.config.list_physical_devices('GPU') or 'no GPU'}",
        "load_average_at_end": os.getloadavg(),
        "tensorflow": tf.__version__,
        "batch_size": args.batch_size,
        "width": args.width,
        "resnet_blocks": args.resnet_blocks,
        "rounds": args.rounds,
        "jit_compile": args.jit_compile,
        "steps": tables,
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
