"""Experiment 4: attribution methods compared by Sensitivity-n (Ancona et al. 2018).

Three models by default, as in Ancona et al.'s image experiments: an MLP and a
CNN on MNIST, a CNN on CIFAR-10 (ReLU networks, no BatchNorm); with `--models
mnist_mlp mnist_mlp_tanh`, the MNIST MLP with Tanh units that Ancona et al.
name, beside its ReLU twin (same layers, seeds and data). On Tanh, f(z)/z
differs from f'(z), so epsilon-LRP and gradient*input are expected to differ
there. For each, six methods (saliency |dS_c/dx|, gradient*input, integrated
gradients, epsilon-LRP, DeepLIFT-Rescale, occlusion with 1x1 patches,
"Occlusion-1") are scored by Sensitivity-n (signed Pearson correlation, the
original metric), removing
pixels to 0 in the standardised space (the training mean); the baselines of
integrated gradients, DeepLIFT and occlusion are the same 0. One curve per
(model, method), averaged over seeds; figure `sensitivity_n_<model>.png`, a
map grid `maps_<model>.png`, numbers in `results.json`.

Checks derived from the paper's analysis and printed in the JSON:
- epsilon-LRP equals gradient*input on ReLU networks (their Prop. 1; we use
  eps=1e-4 and biases, so near-equality is expected);
- Occlusion-1 is exactly S_1 at n = 1, so its correlation there is 1;
- the spread between methods per n (do the methods agree at small n and
  diverge at larger n?).

CPU size (default, about 8 minutes on 2 cores): MNIST 4,000 training digits,
CIFAR-10 5,000 training images, 3 epochs, Sensitivity-n over 50 test samples
per seed, 100 subsets, 6 values of n from 1 to 80% of the pixels, seeds 0 1 2.
Paper size: `--train-size 0 --epochs 20 --sn-samples 1000 --n-points 16`.
`--quick`: the two MLPs on 300 digits, one epoch, 4 samples (about a minute).

    python experiments/compare_attributions.py --output-dir outputs/compare
"""

from __future__ import annotations

import functools
import time
import types

import keras
import numpy as np
from _common import (
    arrays,
    mean_spread,
    output_dir,
    parser,
    quick,
    train,
    write_json,
)

import keras_attreg as kar

METHODS = {
    "saliency": kar.attributions.saliency,
    "gradient*input": kar.attributions.gradient_x_input,
    "integrated gradients": kar.attributions.integrated_gradients,
    "epsilon-LRP": functools.partial(kar.attributions.epsilon_lrp, eps=1e-4),
    "DeepLIFT-Rescale": kar.attributions.deeplift_rescale,
    "occlusion-1": functools.partial(kar.attributions.occlusion, patch_size=1),
}


def mlp(activation: str) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation=activation),
            keras.layers.Dense(256, activation=activation),
            keras.layers.Dense(10),
        ]
    )


def cnn(shape, filters) -> keras.Sequential:
    layers = [keras.Input(shape)]
    for width in filters:
        layers += [
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ]
    return keras.Sequential(layers)


MODELS = {
    "mnist_mlp": ("mnist", functools.partial(mlp, "relu")),
    "mnist_mlp_tanh": ("mnist", functools.partial(mlp, "tanh")),
    "mnist_cnn": ("mnist", functools.partial(cnn, (28, 28, 1), (16, 32))),
    "cifar_cnn": ("cifar10", functools.partial(cnn, (32, 32, 3), (32, 64))),
}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument(
        "--models",
        nargs="+",
        choices=tuple(MODELS),
        default=["mnist_mlp", "mnist_cnn", "cifar_cnn"],
    )
    cli.add_argument("--train-size", type=int, default=0, help="0: per dataset")
    cli.add_argument("--epochs", type=int, default=3)
    cli.add_argument("--sn-samples", type=int, default=50)
    cli.add_argument("--num-subsets", type=int, default=100)
    cli.add_argument("--n-points", type=int, default=6)
    args = quick(
        cli.parse_args(),
        models=["mnist_mlp", "mnist_mlp_tanh"],
        seeds=[0],
        train_size=300,
        epochs=1,
        sn_samples=4,
        num_subsets=8,
        n_points=3,
    )
    folder = output_dir(args.output_dir)
    start = time.perf_counter()
    loaders = {"mnist": kar.datasets.load_mnist, "cifar10": kar.datasets.load_cifar10}
    default_sizes = {"mnist": 4000, "cifar10": 5000}
    results = {}
    for model_name in args.models:
        dataset, build = MODELS[model_name]
        load = functools.partial(loaders[dataset], data_dir=args.data_dir)
        test = load("test", batch_size=256, limit=1000)
        curves, method_seconds, accuracies, checks = {}, {}, [], []
        for seed in args.seeds:
            train_ds = load(
                "train",
                batch_size=64,
                shuffle=True,
                seed=seed,
                limit=args.train_size or default_sizes[dataset],
            )
            keras.utils.set_random_seed(seed)
            model, logs = train(
                build(),
                f"{model_name}_seed{seed}",
                folder,
                train_ds,
                test,
                args.epochs,
                verbose=args.verbose,
            )
            accuracies.append(logs["val_accuracy"])
            # Each seed scores different test samples.
            x, y = arrays(
                test.unbatch()
                .skip(seed * args.sn_samples)
                .take(args.sn_samples)
                .batch(256)
            )
            pixels = int(np.prod(x.shape[1:-1]))
            n_values = np.unique(
                np.geomspace(1, 0.8 * pixels, args.n_points).round()
            ).astype(int)
            maps = {}
            for method_name, method in METHODS.items():
                tick = time.perf_counter()
                maps[method_name] = np.asarray(method(model, x, y))
                method_seconds.setdefault(method_name, []).append(
                    time.perf_counter() - tick
                )
                sn = kar.evaluation.sensitivity_n(
                    model,
                    (x, y),
                    maps[method_name],
                    n_values=n_values,
                    num_subsets=args.num_subsets,
                    seed=seed,
                    verbose=0,
                )
                curves.setdefault(method_name, []).append(sn.correlation)
                print(
                    f"{model_name} seed {seed} {method_name}: "
                    f"{np.round(sn.correlation, 3).tolist()}"
                )
            lrp, gxi = maps["epsilon-LRP"], maps["gradient*input"]
            checks.append(
                float(np.abs(lrp - gxi).max() / max(np.abs(gxi).max(), 1e-12))
            )
            if seed == args.seeds[0]:
                kar.plotting.plot_attribution_maps(
                    {k: v[:5] for k, v in maps.items()},
                    folder / f"maps_{model_name}.png",
                    images=x[:5],
                )
        mean = {k: np.mean(v, axis=0) for k, v in curves.items()}
        kar.plotting.plot_sensitivity_n(
            {
                k: types.SimpleNamespace(
                    n_values=n_values, correlation=v, absolute=False
                )
                for k, v in mean.items()
            },
            folder / f"sensitivity_n_{model_name}.png",
        )
        table = np.stack(list(mean.values()))
        results[model_name] = {
            "n_values": n_values.tolist(),
            "test_accuracy": mean_spread(accuracies),
            "curves_mean": {k: v.tolist() for k, v in mean.items()},
            "curves_std": {
                k: np.std(v, axis=0, ddof=1).tolist() if len(v) > 1 else None
                for k, v in curves.items()
            },
            "spread_between_methods_per_n": (table.max(0) - table.min(0)).tolist(),
            "lrp_vs_gradient_x_input_max_relative_difference": max(checks),
            "attribution_seconds": {
                k: mean_spread(v) for k, v in method_seconds.items()
            },
        }
    write_json(
        folder / "results.json",
        {
            "experiment": "compare_attributions",
            "settings": vars(args),
            "models": results,
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    main()
