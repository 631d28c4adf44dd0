"""L1 gradient penalty on CIFAR-10 at one alpha (Kiritoshi et al. 2019, Sec. 4).

The report (`reproduce_all.py`) uses the alpha sweep of `l1_alpha_sweep.py`,
which trains this script's `vgg` with augmentation over a grid of alpha; this
script is the single-alpha comparison with the Fig. 3 attribution grid.

A VGG-style network with BatchNormalization after every convolution is
trained on CIFAR-10 twice per seed, from the same initial weights: baseline
(cross-entropy) and with the L1 gradient penalty
L' = L + alpha * |dS_c/dx|_1 (Eq. 1). Reported per seed and as mean and
spread: test accuracy (paper, Table 1), the mean L1 norm of the input
gradient, and the modified Sensitivity-n (absolute Pearson, Sec. 4.2) of the
vanilla gradient of each model (paper, Fig. 4: the penalised model higher for
every n). The first seed also gives the attribution grid of the paper's
Fig. 3: vanilla gradient, integrated gradients and SmoothGrad of the baseline,
and "ours" = the vanilla gradient of the penalised model.

The paper gives no alpha; we use alpha = 0.01 (the quick start's value),
chosen before any run and not tuned. Sensitivity-n removes features to 0 in
the standardised space (the training mean), as Eq. 3 does.

CPU size (default, about 10 minutes on 2 cores): `--arch small` (a narrow
VGG: 2x16, 2x32, 2x64 filters, three pools, a 64-unit dense layer), 5,000
training and 1,000 test images (`../shared/data/cifar10-*.tfrecord`, JPEG),
4 epochs, Sensitivity-n over 100 test images, 100 subsets, 8 values of n in
[1, 1000], seeds 0 1 2. Full size (GPU), as the paper:
`--arch vgg16` (or `vgg19`) `--train-size 0 --test-size 0 --epochs 100
--sn-samples 1000 --n-points 16`.

    python experiments/l1_penalty_cifar.py --output-dir outputs/l1_penalty_cifar
"""

from __future__ import annotations

import time
import types

import keras
import numpy as np
from _common import (
    arrays,
    gradient_report,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    training_batches,
    write_json,
)

import keras_attreg as kar

# Filters per convolution, "M" a 2x2 max pool (Simonyan & Zisserman, Table 1).
ARCHITECTURES = {
    "small": ((16, 16, "M", 32, 32, "M", 64, 64, "M"), 64),
    "vgg16": (
        (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
        + (512, 512, 512, "M", 512, 512, 512, "M"),
        512,
    ),
    "vgg19": (
        (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
        + (512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
        512,
    ),
}


def vgg(arch: str) -> keras.Sequential:
    """VGG with BatchNormalization after every convolution, ending in logits."""
    config, dense = ARCHITECTURES[arch]
    layers = [keras.Input((32, 32, 3))]
    for item in config:
        if item == "M":
            layers.append(keras.layers.MaxPooling2D())
        else:
            layers += [
                keras.layers.Conv2D(item, 3, padding="same"),
                keras.layers.BatchNormalization(momentum=0.9),
                keras.layers.ReLU(),
            ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(dense, activation="relu"),
        keras.layers.Dense(10),
    ]
    return keras.Sequential(layers)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--arch", choices=tuple(ARCHITECTURES), default="small")
    cli.add_argument("--alpha", type=float, default=0.01)
    cli.add_argument("--train-size", type=int, default=5000, help="0: all 50,000")
    cli.add_argument("--test-size", type=int, default=1000, help="0: all 10,000")
    cli.add_argument("--epochs", type=int, default=4)
    cli.add_argument("--batch-size", type=int, default=64)
    cli.add_argument("--sn-samples", type=int, default=100)
    cli.add_argument("--num-subsets", type=int, default=100)
    cli.add_argument("--n-points", type=int, default=8)
    cli.add_argument("--n-max", type=int, default=1000)
    args = quick(
        cli.parse_args(),
        seeds=[0],
        train_size=256,
        test_size=100,
        epochs=1,
        sn_samples=4,
        num_subsets=8,
        n_points=3,
        n_max=100,
    )
    folder = output_dir(args.output_dir)
    start = time.perf_counter()

    test = kar.datasets.load_cifar10(
        "test", args.data_dir, batch_size=256, limit=args.test_size or None
    )
    x_sn, y_sn = arrays(test.unbatch().take(args.sn_samples).batch(256))
    n_values = np.unique(np.geomspace(1, args.n_max, args.n_points).round()).astype(int)
    models = {"baseline": 0.0, "l1_penalty": args.alpha}
    runs = {name: [] for name in models}
    curves = {}
    for seed in args.seeds:
        train_ds = training_batches(
            kar.datasets.load_cifar10, args, seed, args.train_size or None
        )
        trained = {}
        for name, alpha in models.items():
            keras.utils.set_random_seed(seed)
            model, logs = train(
                vgg(args.arch),
                f"{args.arch}_{name}_seed{seed}",
                folder,
                train_ds,
                test,
                args.epochs,
                regularizer=kar.L1GradientPenalty(alpha) if alpha else None,
                verbose=args.verbose,
            )
            trained[name] = model
            row, sn = gradient_report(
                model, logs, seed, x_sn, y_sn, n_values, args.num_subsets
            )
            curves.setdefault(name, []).append(sn.correlation)
            runs[name].append(row)
            print(
                f"{name} seed {seed}: accuracy {logs['val_accuracy']:.4f}, "
                f"|Pearson| {np.round(sn.correlation, 3).tolist()}"
            )
        if seed == args.seeds[0]:
            shown, labels = x_sn[:6], y_sn[:6]
            base = trained["baseline"]
            maps = {
                "vanilla": kar.attributions.saliency(base, shown, labels),
                "integrated gradients": kar.attributions.integrated_gradients(
                    base, shown, labels
                ),
                "SmoothGrad": kar.attributions.smoothgrad(base, shown, labels),
                "ours (L1, vanilla)": kar.attributions.saliency(
                    trained["l1_penalty"], shown, labels
                ),
            }
            kar.plotting.plot_attribution_maps(maps, folder / "maps.png", images=shown)

    mean_curves = {
        name: types.SimpleNamespace(
            n_values=n_values, correlation=np.mean(values, axis=0), absolute=True
        )
        for name, values in curves.items()
    }
    kar.plotting.plot_sensitivity_n(mean_curves, folder / "sensitivity_n.png")
    higher = [
        bool(np.all(p > b))
        for p, b in zip(curves["l1_penalty"], curves["baseline"], strict=True)
    ]
    result = {
        "experiment": "l1_penalty_cifar",
        "settings": vars(args),
        "n_values": n_values.tolist(),
        "per_seed": runs,
        "summary": {
            name: {
                "test_accuracy": mean_spread([r["test_accuracy"] for r in rows]),
                "mean_l1_input_gradient": mean_spread(
                    [r["mean_l1_input_gradient"] for r in rows]
                ),
                "sensitivity_n_mean": np.mean(curves[name], axis=0).tolist(),
                "sensitivity_n_std": np.std(curves[name], axis=0, ddof=1).tolist()
                if len(curves[name]) > 1
                else [0.0] * len(n_values),
            }
            for name, rows in runs.items()
        },
        "penalised_higher_for_every_n_per_seed": higher,
        "seconds": time.perf_counter() - start,
    }
    write_json(folder / "results.json", result)


if __name__ == "__main__":
    main()
