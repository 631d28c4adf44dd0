"""Lazy regularisation: what `every=k` costs in quality (issue 11).

`AttributionRegularizedModel(base, L1GradientPenalty(alpha), every=k)` runs
the penalised step on every k-th batch only, with the penalty's weight times
k, and plain steps in between (StyleGAN2's lazy regularisation): an epoch
costs about (k - 1 + r) / k plain epochs when a penalised step costs r. This
script measures what that does to the penalty's effect. The small MNIST CNN
of experiment 1 (without BatchNorm) is trained per seed as a plain baseline
and with the L1 gradient penalty for each k, all from the same initial
weights and data order. Per run (`<output-dir>/runs/<model>_seed<seed>.json`):
test accuracy, the mean L1 norm of the input gradient |dS_c/dx|_1 over the
Sensitivity-n digits, the modified Sensitivity-n (absolute Pearson) of the
vanilla gradient and its mean over n (`SN`), the `fit` wall time, and the
wall and process CPU seconds of each epoch's training batches (validation
excluded; the epochs after the first, which traces the step functions, give
the cost per epoch); the summary gives their mean and seed spread per model.

alpha = 0.01, chosen before any run and not tuned (experiment 2's value).

`--dataset cifar10`: the CIFAR-10 setting of experiment 2, trained by
`l1_alpha_sweep.py`'s own functions with its defaults (narrow VGG with
BatchNorm, the first 10,000 training images, flips and translations, 14
epochs with cosine decay, batch 128, all 10,000 test images, Sensitivity-n
over 50) at alpha = 0.001 with every in 2 4 8 16, seeds 0 1 2 (`--quick`:
every=4). The plain baseline and every=1 are the sweep's own runs (same
seeds, same initial weights), read from
`<sweep-dir>/runs/alpha0_seed<s>.json` and `alpha0.001_seed<s>.json`
(default `--sweep-dir`: `l1_alpha_sweep` beside the output directory) once
the lazy runs are trained, so they can train while the sweep still runs. Its
runs carry no per-epoch clock: the cost is the `fit` wall time, taken by
different processes under different loads.

CPU size (default): 5,000 training and 1,000 test digits, 3 epochs, batch 64,
k in 1 2 4 8 16, Sensitivity-n over 100 test digits, 50 subsets, 6 values of
n, seeds 0 1 2. `--quick`: one seed, k in 1 4 16, 2,000 training digits,
2 epochs, 50 digits for Sensitivity-n. A finished run is skipped on restart
(its training time kept) and a stopped one resumes from its last epoch.

    python experiments/lazy_regularization.py --output-dir outputs/lazy_regularization
    python experiments/lazy_regularization.py --dataset cifar10 \
        --output-dir outputs/lazy_regularization_cifar10
"""

from __future__ import annotations

import functools
import json
import pathlib
import time

import keras
import numpy as np
from _common import (
    arrays,
    cached,
    gradient_report,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    training_batches,
    write_json,
)
from bn_noise import two_conv_cnn
from l1_alpha_sweep import load_data, mean_spread_rows, one_run, run_name, settings

import keras_attreg as kar


class EpochClock(keras.callbacks.Callback):
    """Wall and process CPU seconds of each epoch's training batches, from the
    first batch's start to the last one's end (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self._end = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(self._end[0] - self._start[0])
        self.cpu.append(self._end[1] - self._start[1])


def model_names(ks) -> dict:
    """Model name -> `every` (0: the plain baseline)."""
    return {"baseline": 0, **{f"l1_every{k}": k for k in ks}}


def mnist_run(args, name: str, every: int, seed: int, data, folder) -> dict:
    """Trains one MNIST model (`every` = 0: plain) and scores it."""
    train_ds, test, (x_sn, y_sn), n_values = data
    keras.utils.set_random_seed(seed)
    clock = EpochClock()
    model, logs = train(
        two_conv_cnn(batchnorm=False),
        f"{name}_seed{seed}",
        folder,
        train_ds,
        test,
        args.epochs,
        regularizer=kar.L1GradientPenalty(args.alpha) if every else None,
        callbacks=[clock],
        verbose=args.verbose,
        every=every or 1,
    )
    row, sn = gradient_report(model, logs, seed, x_sn, y_sn, n_values, args.num_subsets)
    return {
        "model": name,
        "every": every,
        **row,
        "sensitivity_n_mean": float(np.mean(sn.correlation)),
        "epoch_wall_seconds": clock.wall,
        "epoch_cpu_seconds": clock.cpu,
        # Epochs after the first: no tracing of the step functions.
        "cpu_seconds_per_epoch": float(np.mean(clock.cpu[1:] or clock.cpu)),
        "wall_seconds_per_epoch": float(np.mean(clock.wall[1:] or clock.wall)),
    }


def sweep_settings(args, folder):
    """`l1_alpha_sweep.py`'s settings (its defaults, or its `--quick` ones)."""
    sweep_dir = args.sweep_dir or folder.parent / "l1_alpha_sweep"
    return settings(
        ["--output-dir", str(sweep_dir), "--data-dir", args.data_dir]
        + ["--verbose", str(args.verbose), "--seeds", *map(str, args.seeds)]
        + ["--quick"] * args.quick
    )


def cifar_runs(args, sweep, folder) -> list[dict]:
    """every=k trained here in the sweep's setting `sweep` (see the module
    docstring), then per seed the sweep's plain and every=1 runs and these.

    The sweep's runs are read after the training, so this can train while the
    sweep still runs.
    """
    sweep_dir = pathlib.Path(sweep.output_dir)
    output_dir(folder / "maps")
    data = None
    trained = {}
    for seed in sweep.seeds:
        for every in args.ks:
            path = folder / "runs" / f"l1_every{every}_seed{seed}.json"
            if data is None and not path.exists():
                data = load_data(sweep)
            trained[(every, seed)] = {
                "model": f"l1_every{every}",
                "every": every,
            } | cached(
                path,
                functools.partial(
                    one_run, sweep, args.alpha, seed, data, folder, every=every
                ),
            )
    runs = []
    for seed in sweep.seeds:
        for name, alpha in (("baseline", 0.0), ("l1_every1", args.alpha)):
            path = sweep_dir / "runs" / f"{run_name(alpha, seed)}.json"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: run experiments/l1_alpha_sweep.py "
                    f"--output-dir {sweep_dir} first (its alphas must include 0 "
                    f"and {args.alpha:g})"
                )
            runs.append(
                {"model": name, "every": int(alpha > 0), **json.loads(path.read_text())}
            )
        runs += [trained[(every, seed)] for every in args.ks]
    return runs


def summarise(runs: list[dict]) -> dict:
    """Mean and seed spread per model, in the order of `runs`."""
    summary = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == name]
        summary[name] = {
            "every": rows[0]["every"],
            "seeds": [r["seed"] for r in rows],
            **{
                key: mean_spread([r[key] for r in rows])
                for key in (
                    "test_accuracy",
                    "mean_l1_input_gradient",
                    "sensitivity_n_mean",
                    "train_seconds",
                    "cpu_seconds_per_epoch",
                    "wall_seconds_per_epoch",
                )
                # The sweep's runs (`--dataset cifar10`) have no clock.
                if all(key in r for r in runs)
            },
            "sensitivity_n_curve": mean_spread_rows(
                np.array([r["sensitivity_n"]["correlation"] for r in rows])
            ),
        }
    return summary


def mnist_runs(args, folder) -> list[dict]:
    """Every MNIST model of every seed, trained (or loaded) here."""
    test = kar.datasets.load_mnist(
        "test", args.data_dir, batch_size=256, limit=args.test_size
    )
    sn_data = arrays(test.unbatch().take(args.sn_samples).batch(256))
    n_values = np.unique(np.geomspace(1, args.n_max, args.n_points).round()).astype(int)
    runs = []
    for seed in args.seeds:
        train_ds = training_batches(
            kar.datasets.load_mnist, args, seed, args.train_size
        )
        data = (train_ds, test, sn_data, n_values)
        for name, every in model_names(args.ks).items():
            runs.append(
                cached(
                    folder / "runs" / f"{name}_seed{seed}.json",
                    functools.partial(mnist_run, args, name, every, seed, data, folder),
                )
            )
    return runs


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    cli.add_argument(
        "--ks", type=int, nargs="+", help="default: 1 2 4 8 16 (cifar10: 2 4 8 16)"
    )
    cli.add_argument("--alpha", type=float, help="default: 0.01 (cifar10: 0.001)")
    cli.add_argument("--sweep-dir", help="cifar10: the L1 sweep's output directory")
    cli.add_argument("--train-size", type=int, default=5000)
    cli.add_argument("--test-size", type=int, default=1000)
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--batch-size", type=int, default=64)
    cli.add_argument("--sn-samples", type=int, default=100)
    cli.add_argument("--num-subsets", type=int, default=50)
    cli.add_argument("--n-points", type=int, default=6)
    cli.add_argument("--n-max", type=int, default=300)
    args = cli.parse_args()
    mnist = args.dataset == "mnist"
    if args.ks is None:
        args.ks = [1, 2, 4, 8, 16] if mnist else [2, 4, 8, 16]
    if args.alpha is None:
        args.alpha = 0.01 if mnist else 0.001
    args = quick(
        args,
        seeds=args.seeds[:1],
        ks=[1, 4, 16] if mnist else [4],
        train_size=2000,
        epochs=2,
        sn_samples=50,
    )
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    sweep = None if mnist else sweep_settings(args, folder)
    runs = mnist_runs(args, folder) if mnist else cifar_runs(args, sweep, folder)
    for row in runs:
        print(
            f"{row['model']} seed {row['seed']}: accuracy {row['test_accuracy']:.4f}, "
            f"|dS/dx|_1 {row['mean_l1_input_gradient']:.3f}, "
            f"SN {row['sensitivity_n_mean']:.3f}"
        )
    summary = summarise(runs)
    print(f"\n{'model':<14}{'accuracy':>18}{'|dS/dx|_1':>18}{'SN':>16}{'time':>9}")
    for name, row in summary.items():
        print(
            f"{name:<14}"
            + "".join(
                f"{row[key]['mean']:>9.4f} ± {row[key]['std']:.4f}"
                for key in ("test_accuracy", "mean_l1_input_gradient")
            )
            + f"{row['sensitivity_n_mean']['mean']:>8.3f} ± "
            f"{row['sensitivity_n_mean']['std']:.3f}"
            f"{row['train_seconds']['mean']:>8.1f}s"
        )
    write_json(
        folder / "results.json",
        {
            "experiment": "lazy_regularization" + ("" if mnist else "_cifar10"),
            "dataset": args.dataset,
            "settings": vars(args) | ({} if mnist else {"sweep": vars(sweep)}),
            "n_values": runs[0]["sensitivity_n"]["n_values"],
            "runs": runs,
            "summary": summary,
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
