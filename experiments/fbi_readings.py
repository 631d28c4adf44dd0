"""Experiment 3b: the FBI readings the paper leaves open (issue 20, finding 5).

Yoo et al. (2019) leave open how Eq. 3's L1 is reduced, which layers K
counts, whether the maps are compared raw, the input scale and where the
relevance pass starts. Section 3's sweep uses one reading (`default`: mean
over the units, K = the layers with a kernel, raw maps, standardised
inputs, relevance from the true-class logit); under it the activation max
falls steadily with lambda. This script trains `fbi_lambda_sweep.py`'s
network in each other reading at lambda in {0.001, 0.01, 0.1}, seeds 0 1 2:

- `sum`: the L1 summed over the units (`FBILoss(reduction="sum")`);
- `pooling_in_k`: pooling layers counted in K (`layers="kernel_and_pooling"`);
- `normalised`: each map divided by its own L1 norm (`normalize=True`);
- `unit_inputs`: pixels in [0, 1];
- `all_outputs`: the relevance pass started from every logit (`start="all"`).

Per run, Table 1 of every conv layer (max, the skewness readings of
docs/fbi.md, the share of zero activations) on 500 test digits, test
accuracy, L_FBI in the run's own reading. Sensitivity-n and the box part of
section 3 are left out (the readings are about Table 1). Every reading has
its own lambda = 0 runs (plain training, the same initial weights and data
order per seed), so that L_FBI of the baseline is measured in the reading's
own loss. The runs go seed
by seed over every reading, so a stopped invocation leaves whole seeds;
each finished run is skipped on restart (`<output-dir>/<reading>/runs/`).

    python experiments/fbi_readings.py --output-dir outputs/fbi_readings
    python experiments/fbi_readings.py --output-dir outputs/fbi_quick --quick
"""

from __future__ import annotations

import argparse
import time

from _common import cached, output_dir, write_json
from fbi_lambda_sweep import mnist_run, run_name, settings, summarise, test_data

READINGS = {
    "default": {},
    "sum": {"reduction": "sum"},
    "pooling_in_k": {"layers": "kernel_and_pooling"},
    "normalised": {"normalize": True},
    "unit_inputs": {"inputs": "unit"},
    "all_outputs": {"start": "all"},
}
"""Each reading's flags of `fbi_lambda_sweep.py`, against `default`."""

LAMBDAS = (1e-3, 1e-2, 0.1)


def reading_args(args: argparse.Namespace, reading: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **READINGS[reading]})


def main() -> None:
    args = settings()
    if not args.quick:
        args.sn_samples, args.box_seeds = 0, []
    readings = list(READINGS)
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    data = {
        inputs: test_data(reading_args(args, r))
        for r, inputs in (("default", "standardised"), ("unit_inputs", "unit"))
    }
    runs = {reading: [] for reading in readings}
    lams = [lam for lam in (args.lams if args.quick else LAMBDAS) if lam > 0]
    for seed in args.seeds:
        for reading in readings:
            settings_here = reading_args(args, reading)
            here = output_dir(folder / reading)
            for lam in [0.0, *lams]:
                runs[reading].append(
                    cached(
                        here / "runs" / f"{run_name(lam, seed)}.json",
                        lambda lam=lam, seed=seed, s=settings_here, h=here: mnist_run(
                            s, lam, seed, data[s.inputs], h
                        ),
                    )
                )
    summary = {}
    for reading in readings:
        summary[reading] = summarise(runs[reading], [])
    write_json(
        folder / "results.json",
        {
            "experiment": "fbi_readings",
            "settings": vars(args),
            "readings": READINGS,
            "runs": runs,
            "summary": summary,
            "train_seconds": sum(r["train_seconds"] for v in runs.values() for r in v),
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
