"""Throughput of the faithfulness metrics against the model's batched forward.

Deletion, insertion, infidelity and ROAD score perturbed copies of each input;
their floor is the model's own batched forward on the same number of inputs
(`sensitivity_n.py`'s `batched_forward`, timed in alternation with the metric
so that both see the same background load). ROAD is timed twice: with the
fixed fill (`imputation="fixed"`: the same ranking, masks, copies and traced
scoring loop, no solve), its forward part, against the goal; and with noisy
linear imputation (a sparse solve per image and fraction, on the CPU), whose
extra time is the imputation's. Prints a table and writes JSON.

    python benchmarks/faithfulness.py --samples 64 --json faithfulness.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from sensitivity_n import (  # noqa: E402
    batched_forward,
    load_inputs,
    mnist_cnn,
    paired,
    text_cnn,
    token_ids,
)

from keras_attreg.attributions import gradient_x_input  # noqa: E402
from keras_attreg.evaluation import (  # noqa: E402
    deletion,
    infidelity,
    insertion,
    road,
)


def against_forward(model, metric, inputs: int, args) -> dict:
    """Rates (model inputs per second) of `metric()` and of the plain batched
    forward on the same number of inputs, timed in alternation."""
    run_forward, forward_inputs = batched_forward(model, inputs, args.batch_size)
    seconds, forward_seconds = paired(metric, run_forward, args.rounds)
    return {
        "inputs": inputs,
        "seconds": seconds,
        "rate": inputs / seconds,
        "forward_rate": forward_inputs / forward_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--perturbations", type=int, default=64)
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_ATTREG_DATA", ""))
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    args = parser.parse_args()
    model = mnist_cnn()
    x, y = load_inputs(args.samples, pathlib.Path(args.data_dir or "../shared/data"))
    maps = np.asarray(gradient_x_input(model, x, y))
    steps = len(np.append(np.arange(0.0, 1.0, args.step), 1.0))
    fractions = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
    rows = {}
    common = {"step": args.step, "batch_size": args.batch_size}
    rows["deletion (MNIST CNN)"] = against_forward(
        model, lambda: deletion(model, (x, y), maps, **common), len(x) * steps, args
    )
    rows["insertion (MNIST CNN)"] = against_forward(
        model, lambda: insertion(model, (x, y), maps, **common), len(x) * steps, args
    )
    rows["infidelity, Gaussian (MNIST CNN)"] = against_forward(
        model,
        lambda: infidelity(
            model,
            (x, y),
            maps,
            num_perturbations=args.perturbations,
            batch_size=args.batch_size,
        ),
        len(x) * args.perturbations,
        args,
    )
    inputs = len(x) * len(fractions)
    rows["ROAD MoRF, fixed fill (MNIST CNN)"] = against_forward(
        model,
        lambda: road(
            model,
            (x, y),
            maps,
            fractions=fractions,
            imputation="fixed",
            batch_size=args.batch_size,
        ),
        inputs,
        args,
    )
    row = against_forward(
        model,
        lambda: road(
            model, (x, y), maps, fractions=fractions, batch_size=args.batch_size
        ),
        inputs,
        args,
    )
    fixed = rows["ROAD MoRF, fixed fill (MNIST CNN)"]["seconds"]
    row["imputation_seconds"] = row["seconds"] - fixed
    rows["ROAD MoRF, noisy linear imputation (MNIST CNN)"] = row
    text = text_cnn()
    ids, labels = token_ids(args.samples, text)
    token_maps = np.asarray(gradient_x_input(text, ids, labels))
    rows["deletion over tokens (text CNN)"] = against_forward(
        text,
        lambda: deletion(text, (ids, labels), token_maps, **common),
        len(ids) * steps,
        args,
    )
    width = max(map(len, rows)) + 2
    print(
        f"{'metric':<{width}}{'inputs':>8}{'inputs/s':>11}{'forward/s':>11}{'ratio':>7}"
    )
    for name, row in rows.items():
        rate = row["rate"]
        row["ratio"] = rate / row["forward_rate"]
        print(
            f"{name:<{width}}{row['inputs']:>8}{rate:>11.0f}{row['forward_rate']:>11.0f}"
            f"{row['ratio']:>7.2f}"
        )
        if "imputation_seconds" in row:
            print(
                f"  (of which imputation: {row['imputation_seconds']:.2f} s for "
                f"{row['inputs']} images: its time minus the fixed fill's)"
            )
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average_1min": os.getloadavg()[0],
        "settings": vars(args),
        "rows": rows,
    }
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
