"""Lazy regularisation: what `every=k` costs in quality (issue 11).

`AttributionRegularizedModel(base, L1GradientPenalty(alpha), every=k)` runs
the penalised step on every k-th batch only, with the penalty's weight times
k, and plain steps in between (StyleGAN2's lazy regularisation): an epoch
costs about (k - 1 + r) / k plain epochs when a penalised step costs r. This
script measures what that does to the penalty's effect. The small MNIST CNN
of experiment 1 (without BatchNorm) is trained per seed as a plain baseline
and with the L1 gradient penalty for each k, all from the same initial
weights. Reported per model, per seed and as mean and spread: test accuracy,
the mean L1 norm of the input gradient |dS_c/dx|_1 over test digits, the
modified Sensitivity-n (absolute Pearson) of the vanilla gradient, and the
training time.

alpha = 0.01, chosen before any run and not tuned (experiment 2's value).

CPU size (default): 5,000 training and 1,000 test digits, 3 epochs, k in
1 2 4 8 16, Sensitivity-n over 100 test digits, 50 subsets, 6 values of n,
seeds 0 1 2. `--quick`: one seed, k in 1 4 16, 2,000 training digits,
2 epochs, 50 digits for Sensitivity-n. Stopped runs resume: finished models
are loaded, an interrupted one continues from its last epoch.

    python examples/lazy_regularization.py --output-dir outputs/lazy_regularization
"""

from __future__ import annotations

import time

import keras
import numpy as np
from _common import (
    arrays,
    gradient_report,
    mean_spread,
    output_dir,
    parser,
    train,
    write_json,
)
from bn_noise import two_conv_cnn

import keras_attreg as kar


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    cli.add_argument("--alpha", type=float, default=0.01)
    cli.add_argument("--train-size", type=int, default=5000)
    cli.add_argument("--test-size", type=int, default=1000)
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--batch-size", type=int, default=64)
    cli.add_argument("--sn-samples", type=int, default=100)
    cli.add_argument("--num-subsets", type=int, default=50)
    cli.add_argument("--n-points", type=int, default=6)
    cli.add_argument("--n-max", type=int, default=300)
    cli.add_argument("--quick", action="store_true", help="a small smoke run")
    args = cli.parse_args()
    if args.quick:
        args.seeds, args.ks = args.seeds[:1], [1, 4, 16]
        args.train_size, args.epochs, args.sn_samples = 2000, 2, 50
    folder = output_dir(args.output_dir)
    start = time.perf_counter()

    test = kar.datasets.load_mnist(
        "test", args.data_dir, batch_size=256, limit=args.test_size
    )
    x_sn, y_sn = arrays(test.unbatch().take(args.sn_samples).batch(256))
    n_values = np.unique(np.geomspace(1, args.n_max, args.n_points).round()).astype(int)
    models = {"baseline": None, **{f"l1_every{k}": k for k in args.ks}}
    runs = {name: [] for name in models}
    for seed in args.seeds:
        train_ds = kar.datasets.load_mnist(
            "train",
            args.data_dir,
            batch_size=args.batch_size,
            shuffle=True,
            seed=seed,
            limit=args.train_size,
        )
        for name, every in models.items():
            keras.utils.set_random_seed(seed)
            model, logs = train(
                two_conv_cnn(batchnorm=False),
                f"{name}_seed{seed}",
                folder,
                train_ds,
                test,
                args.epochs,
                regularizer=kar.L1GradientPenalty(args.alpha) if every else None,
                verbose=args.verbose,
                every=every or 1,
            )
            row, sn = gradient_report(
                model, logs, seed, x_sn, y_sn, n_values, args.num_subsets
            )
            runs[name].append(row)
            print(
                f"{name} seed {seed}: accuracy {row['test_accuracy']:.4f}, "
                f"|dS/dx|_1 {row['mean_l1_input_gradient']:.3f}, "
                f"|Pearson| {np.round(sn.correlation, 3).tolist()}"
            )
    summary = {
        name: {
            key: mean_spread([r[key] for r in rows])
            for key in ("test_accuracy", "mean_l1_input_gradient", "train_seconds")
        }
        | {
            "sensitivity_n_mean": np.mean(
                [r["sensitivity_n"]["correlation"] for r in rows], axis=0
            ).tolist()
        }
        for name, rows in runs.items()
    }
    print(f"\n{'model':<14}{'accuracy':>16}{'|dS/dx|_1':>18}  Sensitivity-n (mean)")
    for name, row in summary.items():
        accuracy, norm = row["test_accuracy"], row["mean_l1_input_gradient"]
        print(
            f"{name:<14}{accuracy['mean']:>9.4f} ± {accuracy['std']:.4f}"
            f"{norm['mean']:>10.3f} ± {norm['std']:.3f}  "
            f"{np.round(row['sensitivity_n_mean'], 3).tolist()}"
        )
    write_json(
        folder / "results.json",
        {
            "experiment": "lazy_regularization",
            "settings": vars(args),
            "n_values": n_values.tolist(),
            "per_seed": runs,
            "summary": summary,
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
