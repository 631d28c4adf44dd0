"""FBI on graph models: first-call (trace) time and step time vs the plain step.

For each model, in one process: the first `train_on_batch` of the plain model
and of the FBI-wrapped model (trace + graph build + one step), then the median
of interleaved steady steps and their ratio. Models: the chain CNN and
the ResNet-20 of `step_time.py` (with BatchNorm), keras.applications ResNet50
and MobileNetV2 (`weights=None`, 32x32 inputs, 10 classes), and the two-block
text transformer and ViT of experiment 10 (CP-LRP through attention).

    python benchmarks/fbi_graph.py --rounds 10 --output outputs/fbi_graph.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import keras
import numpy as np

import keras_attreg as kar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_time import make_cnn, make_resnet  # noqa: E402


def models() -> dict:
    def application(name):
        return lambda: getattr(keras.applications, name)(
            weights=None,
            input_shape=(32, 32, 3),
            classes=10,
            classifier_activation=None,
        )

    return {
        "chain CNN (BN)": lambda: make_cnn(32, True, 0),
        "ResNet-20 (BN)": lambda: make_resnet(3, 0),
        "ResNet50": application("ResNet50"),
        "MobileNetV2": application("MobileNetV2"),
        "text transformer (2 blocks)": text_transformer,
        "ViT (2 blocks)": vit,
    }


def _encoder(x, width: int = 64):
    """Two post-LN blocks: x <- LN(x + MHA(x, x)), x <- LN(x + FFN(x))."""
    L = keras.layers
    for _ in range(2):
        x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(4, 16)(x, x)]))
        h = L.Dense(width)(L.Dense(2 * width, activation="relu")(x))
        x = L.LayerNormalization()(L.Add()([x, h]))
    return x


def text_transformer():
    """Token ids (128, vocabulary 10,000), masked attention and pooling: the
    text model of experiment 10."""
    ids = keras.Input((128,), dtype="int32")
    x = keras.layers.Embedding(10_000, 64, mask_zero=True)(ids)
    x = keras.layers.GlobalAveragePooling1D()(_encoder(x))
    return keras.Model(ids, keras.layers.Dense(10)(x))


def vit():
    """4 x 4 patches of a 32 x 32 image, the ViT of experiment 10."""
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(64, 4, strides=4)(image)
    x = keras.layers.Reshape((64, 64))(x)
    x = keras.layers.GlobalAveragePooling1D()(_encoder(x))
    return keras.Model(image, keras.layers.Dense(10)(x))


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def measure(build, batch: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    plain = compiled(build())
    shape = (batch, *plain.inputs[0].shape[1:])
    if "int" in str(plain.inputs[0].dtype):
        x = rng.integers(1, 10_000, shape)
        x[:, shape[1] // 2 :] = 0  # half of each review is padding
    else:
        x = rng.uniform(0, 1, shape).astype("float32")
    y = rng.integers(0, 10, batch)
    keras.utils.set_random_seed(0)
    fbi = compiled(kar.AttributionRegularizedModel(build(), kar.FBILoss(lam=1e-3)))
    first = {}
    for name, model in (("plain", plain), ("fbi", fbi)):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first[name] = time.perf_counter() - start
    times = {"plain": [], "fbi": []}
    for _ in range(rounds):
        for name, model in (("plain", plain), ("fbi", fbi)):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "first_call_s": first,
        "step_ms": {name: 1000 * t for name, t in medians.items()},
        "fbi_over_plain": medians["fbi"] / medians["plain"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", default="outputs/fbi_graph.json")
    parser.add_argument(
        "--models", nargs="+", default=None, help="names to run (default: all)"
    )
    args = parser.parse_args()
    results = {
        name: measure(build, args.batch, args.rounds)
        for name, build in models().items()
        if args.models is None or name in args.models
    }
    print(
        f"batch {args.batch}, {args.rounds} interleaved rounds, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| model | first call plain (s) | first call FBI (s) | plain step (ms) "
        "| FBI step (ms) | FBI / plain |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['first_call_s']['plain']:.1f} | "
            f"{r['first_call_s']['fbi']:.1f} | {r['step_ms']['plain']:.1f} | "
            f"{r['step_ms']['fbi']:.1f} | {r['fbi_over_plain']:.2f} |"
        )
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(
            {
                "batch": args.batch,
                "rounds": args.rounds,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "results": results,
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
