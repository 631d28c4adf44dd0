"""FBI on graph models: first-call (trace) time and step time vs the plain step.

For each model, in one process: the first `train_on_batch` of the plain model
and of the FBI-wrapped model (trace + graph build + one step), then the median
of interleaved steady steps and their ratio. Models: the chain CNN and
the ResNet-20 of `step_time.py` (with BatchNorm), keras.applications ResNet50
and MobileNetV2 (`weights=None`, 32x32 inputs, 10 classes).

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
    }


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def measure(build, batch: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    keras.utils.set_random_seed(0)
    plain = compiled(build())
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
    args = parser.parse_args()
    results = {
        name: measure(build, args.batch, args.rounds)
        for name, build in models().items()
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
